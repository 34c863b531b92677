import numpy as np
import pytest

from calibrate.threshold import score_stats, split_holdout, threshold_from_good


def test_threshold_rule_hand_computed():
    s = np.array([1.0, 2.0, 3.0, 4.0, 5.0])  # mean 3, sample std sqrt(2.5)=1.5811
    assert threshold_from_good(s) == pytest.approx(3 + 3 * 1.5811388, rel=1e-6)
    tight = np.array([10.0, 10.0, 10.0, 12.0])  # mean 10.5, std 1 -> 13.5 > max 12
    assert threshold_from_good(tight) == pytest.approx(13.5)
    outlier = np.array([1.0] * 20 + [9.0])  # the max dominates: 9 > mean + 3 std (= 6.04)
    assert threshold_from_good(outlier) == 9.0
    assert score_stats(s)["p50"] == 3.0


def test_split_is_seeded_and_non_empty():
    tr, ho = split_holdout(10, 0.2, seed=1)
    assert len(ho) == 2 and len(tr) == 8 and not set(tr) & set(ho)
    np.testing.assert_array_equal(ho, split_holdout(10, 0.2, seed=1)[1])
    assert len(split_holdout(2, 0.01, 0)[1]) == 1
    with pytest.raises(ValueError, match="at least 2"):
        split_holdout(1, 0.2, 0)
