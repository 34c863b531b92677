"""What a line gets: good parts rejected and defective parts passed, at a few thresholds.

For each category `evaluate` reports these at the model's own threshold, at the thresholds
the target rule (calibrate/threshold.py) gives from the same calibration's cross-scores for
OP_TARGETS, and at two thresholds chosen on the test set itself: the best image F1, and the
fewest defects passed with at most ORACLE_BUDGET of the good parts rejected (oracles: they
need the test labels, so they are only a scale for what the scores allow).
"Rejected" is score > threshold, as inspection decides.
"""

from __future__ import annotations

import numpy as np

from .threshold import TailFit

OP_TARGETS = (0.01, 0.05)
# The oracle's false-reject budget: a line's usual tolerance for good parts thrown away (the
# issue's goal reads "defects passed at <= 3% of good parts rejected").
ORACLE_BUDGET = 0.03


def counts(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict:
    """False rejects (good scored above) and escapes (defective at or below) at `threshold`."""
    y = np.asarray(labels).astype(bool)
    fail = np.asarray(scores) > threshold
    n_good, n_bad = int((~y).sum()), int(y.sum())
    fr, esc = int((fail & ~y).sum()), int((~fail & y).sum())
    return {"threshold": float(threshold), "false_rejects": fr, "n_good": n_good,
            "false_reject_rate": fr / n_good if n_good else None,
            "escapes": esc, "n_defective": n_bad, "escape_rate": esc / n_bad if n_bad else None}


def oracle_f1(labels: np.ndarray, scores: np.ndarray) -> dict:
    """The threshold with the best image F1 on these labels, and what it rejects and passes."""
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    cand = np.r_[s.min() - 1.0, np.unique(s)]  # "reject all" and every score as a boundary
    fail = s[None, :] > cand[:, None]
    tp = (fail & y).sum(1)
    fp = (fail & ~y).sum(1)
    fn = (~fail & y).sum(1)
    f1 = np.divide(2 * tp, 2 * tp + fp + fn, out=np.zeros(len(cand)), where=(2 * tp + fp + fn) > 0)
    i = int(f1.argmax())
    return {**counts(y, s, cand[i]), "f1": float(f1[i])}


def oracle_at_false_reject(labels: np.ndarray, scores: np.ndarray, budget: float) -> dict:
    """The lowest threshold that rejects at most `budget` of these good parts (an oracle, like
    oracle_f1): the fewest escapes any threshold allows within that false-reject budget."""
    y = np.asarray(labels).astype(bool)
    good = np.sort(np.asarray(scores, dtype=np.float64)[~y])[::-1]
    allowed = int(np.floor(budget * len(good) + 1e-9))  # good parts that may score above
    t = good[allowed] if allowed < len(good) else float(np.min(scores)) - 1.0
    return counts(y, scores, t)


def operating_point(labels: np.ndarray, scores: np.ndarray, model_threshold: float, fit: TailFit | None,
                    targets: tuple[float, ...] = OP_TARGETS) -> dict:
    """Rows keyed "model", "target_<q>" (when a tail fit is given), "oracle_f1" and "oracle_budget"
    (the fewest escapes with at most ORACLE_BUDGET of the good parts rejected)."""
    out = {"model": counts(labels, scores, model_threshold)}
    if fit is not None:
        for q in targets:
            t, method = fit.quantile(q)
            out[f"target_{q:g}"] = {**counts(labels, scores, t), "target_false_reject": q, "method": method}
    out["oracle_f1"] = oracle_f1(labels, scores)
    out["oracle_budget"] = {**oracle_at_false_reject(labels, scores, ORACLE_BUDGET), "budget": ORACLE_BUDGET}
    return out


def _cell(row: dict) -> str:
    return f"{row['false_rejects']}/{row['n_good']} · {row['escapes']}/{row['n_defective']}"


def _pct(rate: float | None) -> str:
    return "–" if rate is None else f"{100 * rate:.1f}%"


def operating_table(results: dict[str, dict]) -> str:
    """Markdown: one row per category (good rejected · defective passed), then the mean rates."""
    cats = [c for c in results if "operating_point" in results[c]]
    if not cats:
        return ""
    cols = list(results[cats[0]]["operating_point"])
    names = {"model": "model's threshold", "oracle_f1": "oracle best F1",
             "oracle_budget": f"oracle at <= {100 * ORACLE_BUDGET:g}% rejected"}
    head = [names[c] if c in names else f"rule at {100 * float(c.split('_')[1]):g}%" for c in cols]
    lines = ["Operating point: good parts rejected · defective parts passed",
             "", "| category | " + " | ".join(head) + " |", "|---|" + "---|" * len(cols)]
    for c in cats:
        op = results[c]["operating_point"]
        cells = [_cell(op[k]) + (f" (F1 {op[k]['f1']:.3f})" if k == "oracle_f1" else "") for k in cols]
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    mean = []
    for k in cols:
        fr = [results[c]["operating_point"][k]["false_reject_rate"] for c in cats]
        esc = [results[c]["operating_point"][k]["escape_rate"] for c in cats]
        mean.append(f"{_pct(_avg(fr))} · {_pct(_avg(esc))}")
    lines.append("| mean rate | " + " | ".join(mean) + " |")
    return "\n".join(lines)


def average(results: dict[str, dict]) -> dict:
    """Mean false-reject and escape rates over the categories, per column (for the JSON)."""
    cats = [c for c in results if "operating_point" in results[c]]
    if not cats:
        return {}
    cols = list(results[cats[0]]["operating_point"])
    return {k: {m: _avg([results[c]["operating_point"][k][m] for c in cats])
                for m in ("false_reject_rate", "escape_rate")} for k in cols}


def _avg(vals: list) -> float | None:
    have = [v for v in vals if v is not None]
    return float(np.mean(have)) if have else None
