import json
import shutil

import numpy as np
import pytest

from calibrate.settings import CalibrationSettings
from calibrate.evaluate import evaluate
from calibrate.operating_point import counts, operating_table, oracle_at_false_reject, oracle_f1
from edge.modeldir import load_model
from edge.preprocess import list_images


def test_counts_and_oracle_by_hand():
    labels = np.array([0, 0, 0, 1, 1, 1])
    scores = np.array([1.0, 2.0, 5.0, 3.0, 6.0, 7.0])
    c = counts(labels, scores, 4.0)  # the good 5.0 is rejected, the defective 3.0 passes
    assert (c["false_rejects"], c["n_good"], c["escapes"], c["n_defective"]) == (1, 3, 1, 3)
    assert c["false_reject_rate"] == pytest.approx(1 / 3) and c["escape_rate"] == pytest.approx(1 / 3)
    assert counts(labels, scores, 5.0)["false_rejects"] == 0  # equal to the threshold passes
    o = oracle_f1(labels, scores)  # best: reject above 2.0 -> tp 3, fp 1 -> F1 6/7
    assert o["f1"] == pytest.approx(6 / 7) and o["threshold"] == 2.0 and o["escapes"] == 0


def test_oracle_within_a_false_reject_budget_by_hand():
    labels = np.array([0, 0, 0, 1, 1, 1])
    scores = np.array([1.0, 2.0, 5.0, 3.0, 6.0, 7.0])
    tight = oracle_at_false_reject(labels, scores, 0.03)  # no good part may go: above 5.0 only
    assert (tight["threshold"], tight["false_rejects"], tight["escapes"]) == (5.0, 0, 1)
    one = oracle_at_false_reject(labels, scores, 0.34)  # one of three may go: the 5.0
    assert (one["threshold"], one["false_rejects"], one["escapes"]) == (2.0, 1, 0)
    every = oracle_at_false_reject(labels, scores, 1.0)
    assert every["false_rejects"] == 3 and every["escapes"] == 0


@pytest.fixture(scope="module")
def mini(bottle, tmp_path_factory):
    """Real bottle images: 12 train, 5 good + 5 broken_large + 3 contamination test images, no masks."""
    root = tmp_path_factory.mktemp("op") / "bottle"
    for sub, n in (("train/good", 12), ("test/good", 5), ("test/broken_large", 5), ("test/contamination", 3)):
        (root / sub).mkdir(parents=True)
        for p in list_images(bottle / sub)[:n]:
            shutil.copy(p, root / sub / p.name)
    return root


def test_evaluate_reports_the_operating_point_on_a_real_subset(mini, tmp_path):
    base = CalibrationSettings(images=mini, output=mini, coreset_ratio=0.05)
    res = evaluate(mini.parent, base, tmp_path / "out", tmp_path / "r.json")["bottle"]
    op = res["operating_point"]
    assert list(op) == ["model", "target_0.01", "target_0.05", "oracle_f1", "oracle_budget"]
    assert all(r["n_good"] == 5 and r["n_defective"] == 8 for r in op.values())
    m = op["model"]
    assert m["threshold"] == res["threshold"] and m["false_rejects"] == res["at_threshold"]["false_rejects"]
    assert m["escapes"] == res["at_threshold"]["escapes"]
    # the rule's thresholds come from this calibration's own cross-scores, as listed in the manifest
    fit = load_model(tmp_path / "out/models/bottle").manifest["threshold_fit"]
    assert len(fit["cross_scores"]) == 12 and fit["rule"] == "target" and fit["target_false_reject"] == 0.01
    for q in ("0.01", "0.05"):
        assert op[f"target_{q}"]["threshold"] == pytest.approx(fit["thresholds_for_targets"][q])
    assert m["threshold"] == pytest.approx(fit["thresholds_for_targets"]["0.01"])  # the default rule
    lo, hi = op["target_0.05"], op["target_0.01"]  # a looser target is a lower threshold
    assert lo["threshold"] < hi["threshold"] and lo["escapes"] <= hi["escapes"]
    assert lo["false_rejects"] >= hi["false_rejects"]
    assert op["oracle_f1"]["f1"] >= res["at_threshold"]["f1"] and op["oracle_f1"]["f1"] > 0.8
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["categories"]["bottle"]["operating_point"] == json.loads(json.dumps(op))
    assert data["operating_point_average"]["model"]["escape_rate"] == pytest.approx(m["escape_rate"])
    table = operating_table({"bottle": res}).splitlines()
    assert table[2] == ("| category | model's threshold | rule at 1% | rule at 5% | oracle best F1 "
                        "| oracle at <= 3% rejected |")
    ob = op["oracle_budget"]  # 5 good bottles: a 3% budget allows none of them rejected
    assert ob["false_rejects"] == 0 and ob["budget"] == 0.03
    assert table[4].startswith(f"| bottle | {m['false_rejects']}/5 · {m['escapes']}/8 |")
    assert table[5].startswith("| mean rate | ")
