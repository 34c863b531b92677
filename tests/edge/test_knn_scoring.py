import numpy as np

from edge.knn import FaissSearch, MatmulSearch, make_search
from edge.scoring import anomaly_map, score_features, score_many


def test_matmul_and_faiss_agree_with_brute_force():
    rng = np.random.default_rng(0)
    bank, q = rng.normal(size=(300, 24)).astype(np.float32), rng.normal(size=(50, 24)).astype(np.float32)
    brute = np.sqrt(((q[:, None] - bank[None]) ** 2).sum(-1))
    for s in (MatmulSearch(bank), FaissSearch(bank, use_gpu=False)):
        d, i = s.search(q, k=3)
        np.testing.assert_allclose(d[:, 0], brute.min(1), rtol=1e-4)
        np.testing.assert_array_equal(i[:, 0], brute.argmin(1))
        assert (np.diff(d, axis=1) >= -1e-5).all()
    assert make_search(bank, 10).name == "matmul"
    assert make_search(bank, 10**6).name == "faiss-cpu"


def test_image_score_is_max_patch_distance_and_map_is_blurred():
    bank = np.zeros((1, 4), np.float32)
    feats = np.zeros((4, 2, 2), np.float32)
    feats[:, 1, 0] = [3, 4, 0, 0]  # one patch at distance 5
    s = score_features(feats, MatmulSearch(bank))
    assert s.score == 5.0 and s.patch_scores[1, 0] == 5.0 and s.patch_scores[0, 0] == 0.0
    scores, maps = score_many(feats[None], MatmulSearch(bank))
    assert scores[0] == 5.0 and maps.shape == (1, 2, 2)
    m = anomaly_map(s.patch_scores, 64)
    assert m.shape == (64, 64) and m.max() < 5.0 and m[48, 16] > m[16, 48]


def test_reweighting_reduces_score_in_sparse_region():
    rng = np.random.default_rng(1)
    bank = rng.normal(size=(200, 8)).astype(np.float32)
    feats = (bank[:4].T.reshape(8, 2, 2) + 3.0).astype(np.float32)
    plain = score_features(feats, MatmulSearch(bank))
    rew = score_features(feats, MatmulSearch(bank), bank, reweight=True)
    assert 0.0 < rew.score <= plain.score
