import numpy as np
import pytest
from scipy import stats

from calibrate.crossval import cross_scores, fold_size, leave_fold_out_banks
from calibrate.threshold import (against_bad, choose_threshold, fit_tail, folds_for_holdout, kfold, score_stats,
                                 threshold_from_good)
from edge.errors import ConfigError


def test_max3sigma_rule_hand_computed():
    s = np.array([1.0, 2.0, 3.0, 4.0, 5.0])  # mean 3, sample std sqrt(2.5)=1.5811
    assert threshold_from_good(s) == pytest.approx(3 + 3 * 1.5811388, rel=1e-6)
    tight = np.array([10.0, 10.0, 10.0, 12.0])  # mean 10.5, std 1 -> 13.5 > max 12
    assert threshold_from_good(tight) == pytest.approx(13.5)
    outlier = np.array([1.0] * 20 + [9.0])  # the max dominates: 9 > mean + 3 std (= 6.04)
    assert threshold_from_good(outlier) == 9.0
    assert choose_threshold(outlier, "max3sigma").value == 9.0
    assert score_stats(s)["p50"] == 3.0


def test_kfold_puts_every_image_in_exactly_one_fold():
    for n, k in ((10, 5), (209, 5), (7, 3), (3, 5), (2, 2)):
        folds = kfold(n, k, seed=1)
        assert len(folds) == min(k, n)
        np.testing.assert_array_equal(np.sort(np.concatenate(folds)), np.arange(n))
        assert max(map(len, folds)) - min(map(len, folds)) <= 1
    assert all(np.array_equal(a, b) for a, b in zip(kfold(50, 5, 3), kfold(50, 5, 3)))
    assert not all(np.array_equal(a, b) for a, b in zip(kfold(50, 5, 3), kfold(50, 5, 4)))
    assert folds_for_holdout(0.2) == 5 and folds_for_holdout(0.9) == 2
    with pytest.raises(ValueError, match="at least 2"):
        kfold(1, 5, 0)


def test_cross_scores_give_each_image_one_score_from_a_bank_without_it():
    # Image i is the constant vector 10*i in every patch, so its score against any bank is
    # the distance to the nearest *other* image's vector: 0 would mean it saw itself.
    n, d = 7, 4
    feats = np.repeat(np.arange(n, dtype=np.float32)[:, None, None, None] * 10, d, 1).repeat(2, 2).repeat(2, 3)
    folds = kfold(n, 3, seed=0)
    cores = [np.ascontiguousarray(feats[f].transpose(0, 2, 3, 1).reshape(-1, d)) for f in folds]
    got = cross_scores(feats, folds, leave_fold_out_banks(cores, bank_size=10_000, proj_dim=4, seed=0))
    fold_of = {int(i): k for k, f in enumerate(folds) for i in f}
    for i in range(n):
        nearest = min(abs(i - j) for j in range(n) if fold_of[j] != fold_of[i])
        assert got[i] == pytest.approx(10 * nearest * np.sqrt(d), rel=1e-5)


def test_leave_fold_out_banks_have_the_bank_size_and_none_of_their_fold():
    rng = np.random.default_rng(0)
    cores = [rng.normal(size=(fold_size(40, 5), 8)).astype(np.float32) + 100 * i for i in range(5)]
    banks = leave_fold_out_banks(cores, bank_size=40, proj_dim=8, seed=0)
    assert fold_size(40, 5) == 20 and len(banks) == 5
    for i, bank in enumerate(banks):
        assert bank.shape == (40, 8)  # 80 candidate vectors reduced to the stored bank's size
        fold_of = np.round(bank.mean(1) / 100).astype(int)  # which fold's coreset each came from
        assert i not in set(fold_of) and set(fold_of) == set(range(5)) - {i}  # greedy spreads over all others


def test_every_fold_complement_holds_twice_the_bank_before_its_reduction():
    # with 2 folds the other fold alone is the complement: its coreset must hold 2k, not k/2
    assert [fold_size(1000, f) for f in (2, 3, 5, 10)] == [2000, 1000, 500, 223]
    rng = np.random.default_rng(1)
    cores = [rng.normal(size=(fold_size(30, 2), 4)).astype(np.float32) for _ in range(2)]
    assert [len(b) for b in leave_fold_out_banks(cores, bank_size=30, proj_dim=4, seed=0)] == [30, 30]


TAILS = {  # score-like distributions (positive, right-skewed or bounded), none of them a GPD
    "gamma": stats.gamma(9, loc=10, scale=1.5),
    "lognormal": stats.lognorm(0.25, scale=20),
    "weibull": stats.weibull_min(4, loc=15, scale=6),
}


@pytest.mark.parametrize("name", sorted(TAILS))
def test_target_rule_recovers_a_known_tail_quantile(name):
    """200 scores, 1% target: the tail fit lands within a few % of the true 99th percentile
    (median over samples), and the good parts it would really reject average ~1%."""
    dist = TAILS[name]
    true = dist.ppf(0.99)
    fits = [choose_threshold(dist.rvs(200, random_state=seed), "target", 0.01) for seed in range(60)]
    assert {f.method for f in fits} == {"gpd"}  # 2 scores above a 1% quantile of 200: not enough to read it off
    rel = np.array([(f.value - true) / true for f in fits])
    assert abs(np.median(rel)) < 0.02 and np.percentile(np.abs(rel), 90) < 0.12
    real_fr = np.array([dist.sf(f.value) for f in fits])
    assert 0.005 < real_fr.mean() < 0.02
    # the old rule, on the same samples, sits far out in the tail: its real rate is a fraction of that
    assert np.mean([dist.sf(threshold_from_good(dist.rvs(200, random_state=s))) for s in range(60)]) < 0.006


def test_enough_scores_use_the_empirical_quantile_and_estimates_invert():
    s = TAILS["gamma"].rvs(1000, random_state=0)
    t = choose_threshold(s, "target", 0.05)
    assert t.method == "empirical" and t.value == pytest.approx(np.quantile(s, 0.95))
    assert t.estimated_false_reject == pytest.approx(0.05, abs=0.002)
    fit = fit_tail(s[:200])
    for q in (0.01, 0.002):
        value, method = fit.quantile(q)
        assert method == "gpd" and fit.false_reject(value) == pytest.approx(q, rel=1e-6)
    with pytest.raises(ValueError, match="unknown threshold rule"):
        choose_threshold(s, "median")


def test_known_bad_images_report_escapes_and_move_the_threshold_within_budget():
    good = TAILS["gamma"].rvs(200, random_state=1)
    rule = choose_threshold(good, "target", 0.01)
    bad = np.array([rule.value * 1.5, rule.value * 0.98, rule.value * 1.2])  # one would pass
    t, rep = against_bad(rule, bad, reject_all=False, max_false_reject=0.05)
    assert t == rule.value and rep["escapes"] == 1 and rep["escape_rate"] == pytest.approx(1 / 3)
    assert not rep["moved"]
    t, rep = against_bad(rule, bad, reject_all=True, max_false_reject=0.05)
    assert rep["moved"] and t < bad.min() and (bad > t).all()
    assert rule.estimated_false_reject < rep["estimated_false_reject"] <= 0.05
    deep = np.array([np.median(good)])  # a "bad" image that scores like a typical good part
    with pytest.raises(ConfigError, match=r"rejecting all 1 known-bad images.*over the 5\.0% budget"):
        against_bad(rule, deep, reject_all=True, max_false_reject=0.05)
