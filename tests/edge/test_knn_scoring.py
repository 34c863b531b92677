import numpy as np

from edge.knn import FaissSearch, MatmulSearch, make_search
from edge.scoring import (anomaly_map, fine_dims, fit_map_scale, image_scores, map_scores, score_and_map_many,
                          score_features, score_many)


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


def test_top_k_image_score_is_the_mean_of_the_highest_patch_scores():
    rng = np.random.default_rng(3)
    dist = rng.random((4, 50)).astype(np.float32)
    np.testing.assert_array_equal(image_scores(dist, 1), dist.max(axis=1))
    want = np.sort(dist, axis=1)[:, ::-1][:, :5].mean(axis=1)
    np.testing.assert_allclose(image_scores(dist, 5), want, rtol=1e-6)
    np.testing.assert_allclose(image_scores(dist, 500), dist.mean(axis=1), rtol=1e-6)  # k past the patches: all
    bank = rng.standard_normal((30, 8)).astype(np.float32)
    feats = rng.standard_normal((2, 8, 5, 6)).astype(np.float32)
    scores, maps = score_many(feats, MatmulSearch(bank), top_k=5)
    np.testing.assert_allclose(scores, image_scores(maps.reshape(2, -1), 5), rtol=1e-6)
    one = score_features(feats[1], MatmulSearch(bank), top_k=5)
    assert one.score == np.float32(scores[1]) or abs(one.score - scores[1]) < 1e-5


def test_fine_dims_are_the_reduced_dims_fed_by_the_shallower_stages_only():
    assert fine_dims([24, 40, 112], 96) == 34  # the Lite0 default: output 34 already mixes in stride 16
    assert fine_dims([24, 40, 112], 176) == fine_dims([24, 40, 112], 4096) == 64  # nothing averaged
    assert fine_dims([24, 40], 64) == 24 and fine_dims([64], 32) == 0  # one stage: no finer part


def test_map_scores_add_the_fine_residual_at_the_matched_vector():
    rng = np.random.default_rng(5)
    bank = rng.standard_normal((40, 12)).astype(np.float32)
    feats = rng.standard_normal((2, 12, 4, 5)).astype(np.float32)
    search = MatmulSearch(bank)
    dist_maps, maps = score_and_map_many(feats, search, bank, (5, 1.0, 0.5))
    q = feats.transpose(0, 2, 3, 1).reshape(-1, 12)
    d, idx = search.search(q, k=1)
    want = 0.5 * (d[:, 0] + np.linalg.norm(q[:, :5] - bank[idx[:, 0], :5], axis=1))
    np.testing.assert_allclose(maps.ravel(), want, rtol=1e-5)
    np.testing.assert_allclose(dist_maps.ravel(), d[:, 0], rtol=1e-6)
    np.testing.assert_array_equal(map_scores(q, d[:, 0], idx[:, 0], bank, (5, 0.0, 1.0)), d[:, 0])  # weight 0: off
    one = score_features(feats[0], search, bank, top_k=1, fine=(5, 1.0, 0.5))
    np.testing.assert_allclose(one.map_scores, maps[0], rtol=1e-5)
    assert one.score == dist_maps[0].max()  # the image score never uses the map term


def test_map_scale_gives_good_patches_the_distance_units():
    rng = np.random.default_rng(6)
    bank = rng.standard_normal((200, 12)).astype(np.float32)
    good = (bank[rng.integers(0, 200, 3000)] + 0.3 * rng.standard_normal((3000, 12))).astype(np.float32)
    search = MatmulSearch(bank)
    scale = fit_map_scale(good, bank, 5, 1.0, search)
    d, idx = search.search(good, k=1)
    m = map_scores(good, d[:, 0], idx[:, 0], bank, (5, 1.0, scale))
    assert 0.3 < scale < 1.0 and abs(np.median(m) / np.median(d[:, 0]) - 1.0) < 1e-3
