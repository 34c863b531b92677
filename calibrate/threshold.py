"""The pass/fail boundary, learned from good images only.

Every good image gets one *cross-score*: k-fold (`kfold`), each fold scored against a bank
built without it. Two rules turn those scores into a threshold (documented in the README):

- ``target`` (default): the score a good part exceeds with probability `target_false_reject`.
  The upper tail is modelled, not read off the largest few scores: the top TAIL_FRACTION of
  the scores (at least MIN_EXCEEDANCES) above their lower edge u are fitted with a
  generalised Pareto distribution (Pickands-Balkema-de Haan: the excess over a high level of
  almost any continuous distribution tends to one), so with 200 scores a 1% quantile rests
  on ~40 scores rather than on the 2 largest. Where the target leaves at least
  EMPIRICAL_MIN_ABOVE scores above the quantile, the plain empirical quantile is used.
- ``max3sigma`` (the rule before issue 16): max(max score, mean + 3 std); it assumes a
  normal tail that max-of-distance scores do not have.

The published normalised score is score / threshold, so 1.0 is the boundary.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from edge.errors import ConfigError

SIGMAS = 3.0
RULES = ("target", "max3sigma")
DEFAULT_RULE = "target"
DEFAULT_TARGET = 0.01
DEFAULT_MAX_FALSE_REJECT = 0.05
BAD_MARGIN = 0.99  # a moved threshold sits 1% below the weakest known-bad score, not on it
TAIL_FRACTION = 0.2
MIN_EXCEEDANCES = 10
EMPIRICAL_MIN_ABOVE = 10
# the targets whose thresholds the manifest lists, for an operator who wants to move later
LISTED_TARGETS = (0.001, 0.005, 0.01, 0.02, 0.05)


def score_stats(scores: np.ndarray) -> dict[str, float]:
    """Summary of held-out good image scores, stored in the manifest."""
    s = np.asarray(scores, dtype=np.float64)
    return {
        "n": int(s.size),
        "mean": float(s.mean()),
        "std": float(s.std(ddof=1)) if s.size > 1 else 0.0,
        "min": float(s.min()),
        "p50": float(np.percentile(s, 50)),
        "p95": float(np.percentile(s, 95)),
        "max": float(s.max()),
    }


def threshold_from_good(scores: np.ndarray, sigmas: float = SIGMAS) -> float:
    """The max3sigma rule: max(max score, mean + sigmas * std)."""
    st = score_stats(scores)
    return max(st["max"], st["mean"] + sigmas * st["std"])


def kfold(n: int, k: int, seed: int) -> list[np.ndarray]:
    """`k` seeded folds (sorted index arrays) that partition range(n); every index in exactly one."""
    if n < 2:
        raise ValueError(f"need at least 2 good images to set a threshold, got {n}")
    k = min(max(int(k), 2), n)
    perm = np.random.default_rng(seed).permutation(n)
    return [np.sort(f) for f in np.array_split(perm, k)]


def folds_for_holdout(holdout: float) -> int:
    """Fold count whose held-out share per fold is `holdout` (0.2 -> 5 folds)."""
    return max(2, int(round(1.0 / holdout)))


@dataclass(frozen=True)
class TailFit:
    """Generalised Pareto fit of the scores above `u` (`p_u` of all scores lie above it)."""

    scores: np.ndarray  # every cross-score, sorted ascending
    u: float
    p_u: float
    shape: float  # xi: < 0 bounded tail, 0 exponential, > 0 heavy
    scale: float

    @property
    def n(self) -> int:
        return int(self.scores.size)

    def quantile(self, target: float) -> tuple[float, str]:
        """(threshold a good part exceeds with probability `target`, method used)."""
        if not 0.0 < target < 1.0:
            raise ValueError(f"target false-reject rate must be in (0, 1), got {target}")
        if self.n * target >= EMPIRICAL_MIN_ABOVE or target >= self.p_u:
            return float(np.quantile(self.scores, 1.0 - target)), "empirical"
        from scipy.stats import genpareto

        return float(self.u + genpareto.ppf(1.0 - target / self.p_u, self.shape, scale=self.scale)), "gpd"

    def false_reject(self, threshold: float) -> float:
        """Estimated share of good parts scoring above `threshold` (the inverse of `quantile`)."""
        above = int((self.scores > threshold).sum())
        if threshold <= self.u or above >= EMPIRICAL_MIN_ABOVE:  # the same split as `quantile`
            return above / self.n
        from scipy.stats import genpareto

        return float(self.p_u * genpareto.sf(threshold - self.u, self.shape, scale=self.scale))

    def describe(self) -> dict:
        return {"model": "generalised Pareto above u", "u": self.u, "p_u": self.p_u, "shape": self.shape,
                "scale": self.scale, "exceedances": int(round(self.p_u * self.n))}


def fit_tail(scores: np.ndarray) -> TailFit:
    """Fit the upper tail of good cross-scores (maximum likelihood, location fixed at u)."""
    s = np.sort(np.asarray(scores, dtype=np.float64))
    n = s.size
    if n < 2:
        raise ValueError(f"need at least 2 good scores to fit a tail, got {n}")
    k = min(n - 1, max(MIN_EXCEEDANCES, int(round(n * TAIL_FRACTION))))
    u = float(s[n - k - 1])
    excess = s[n - k:] - u
    shape, scale = _gpd_fit(excess)
    return TailFit(scores=s, u=u, p_u=k / n, shape=shape, scale=scale)


def _gpd_fit(excess: np.ndarray) -> tuple[float, float]:
    """(shape, scale) of a GPD with location 0; exponential where the data cannot support more."""
    mean = float(excess.mean())
    if mean <= 0.0:  # all tied: a step, any positive scale keeps quantiles at u
        return 0.0, 1e-12
    if excess.size >= 5 and np.ptp(excess) > 0:
        from scipy.stats import genpareto

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            shape, _, scale = genpareto.fit(excess, floc=0.0)
        # xi < -0.5 is the irregular MLE region (an endpoint pinned to the largest score)
        if math.isfinite(shape) and math.isfinite(scale) and scale > 0 and -0.5 <= shape < 1.0:
            return float(shape), float(scale)
    return 0.0, mean


@dataclass(frozen=True)
class Threshold:
    value: float
    rule: str
    target: float
    method: str  # "gpd", "empirical" or "max3sigma"
    estimated_false_reject: float
    fit: TailFit


def choose_threshold(scores: np.ndarray, rule: str = DEFAULT_RULE, target: float = DEFAULT_TARGET) -> Threshold:
    """The threshold a rule gives for good cross-scores."""
    fit = fit_tail(scores)
    if rule == "max3sigma":
        t = threshold_from_good(scores)
        return Threshold(t, rule, target, "max3sigma", fit.false_reject(t), fit)
    if rule != "target":
        raise ValueError(f"unknown threshold rule {rule!r}; use one of {', '.join(RULES)}")
    t, method = fit.quantile(target)
    return Threshold(t, rule, target, method, fit.false_reject(t), fit)



RULE_TEXT = {
    "target": "a target false-reject rate on good parts: the upper tail of the k-fold cross-scores of every "
              "good image (generalised Pareto above u, or the empirical quantile where enough scores lie above)",
    "max3sigma": f"max(max cross-score, mean + {SIGMAS:g} std) over the k-fold cross-scores of every good image",
}


def against_bad(rule: Threshold, bad: np.ndarray, reject_all: bool, max_false_reject: float
                ) -> tuple[float, dict]:
    """(threshold, report) given known-bad image scores.

    The report gives the escape rate the bad images imply at the fitted threshold. With
    `reject_all`, a threshold that passes any of them moves to BAD_MARGIN x the weakest bad
    score, provided the tail model puts the false-reject rate there within `max_false_reject`;
    otherwise ConfigError says why (nothing is written)."""
    bad = np.asarray(bad, dtype=np.float64)
    t = rule.value
    escapes = int((bad <= t).sum())
    report = {"n": int(bad.size), "escapes": escapes, "escape_rate": escapes / bad.size,
              "weakest_score": float(bad.min()), "fitted_threshold": t, "moved": False}
    if not reject_all or escapes == 0:
        return t, report
    moved = BAD_MARGIN * float(bad.min())
    fr = rule.fit.false_reject(moved)
    if fr > max_false_reject:
        raise ConfigError(
            f"rejecting all {bad.size} known-bad images needs the threshold at {moved:.4g} (the weakest scores "
            f"{bad.min():.4g}, the fitted threshold is {t:.4g}), where an estimated {fr:.1%} of good parts would be "
            f"rejected, over the {max_false_reject:.1%} budget; raise --max-false-reject, or check that those "
            f"images really are defective and that the good images cover the product's normal variation")
    report.update(moved=True, threshold=moved, estimated_false_reject=fr, escapes_after=0)
    return moved, report


def fit_manifest(rule: Threshold, scores: np.ndarray, folds: int, bad: dict | None) -> dict:
    """The threshold's fitted numbers for the manifest (what an operator or a later move needs)."""
    return {
        "rule": rule.rule,
        "target_false_reject": rule.target if rule.rule == "target" else None,
        "method": rule.method,
        "value": rule.value,
        "estimated_false_reject": rule.estimated_false_reject,
        "folds": folds,
        "tail": rule.fit.describe(),
        "thresholds_for_targets": {f"{q:g}": rule.fit.quantile(q)[0] for q in LISTED_TARGETS},
        "cross_scores": [round(float(x), 6) for x in scores],
        "bad_images": bad,
    }
