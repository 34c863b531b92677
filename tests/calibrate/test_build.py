import re
import shutil

import numpy as np
import pytest
from pydantic import ValidationError

from calibrate.build import RunOptions, calibrate
from calibrate.settings import CalibrationSettings, load_settings
from edge.errors import ConfigError, ImageError
from edge.inspector import Inspector
from edge.modeldir import list_versions, load_model
from edge.preprocess import list_images, read_image


def test_model_scores_real_defects_above_threshold_and_goods_below(small_model, bottle):
    model = load_model(small_model)
    man = model.manifest
    # the Lite0 default: stride 4 + 8 + 16 stages at 224 px (a 56x56 grid), averaged to 96 dims
    assert man["training"]["images"] == 16 and man["grid"] == [56, 56] and model.bank.shape[1] == 96
    assert man["backbone"]["layers"] == ["blocks.1", "blocks.2", "blocks.4"] and man["input_size"] == 224
    assert man["preset"] == "default" and man["coreset"]["min_bank"] == 1000 and model.bank.shape[0] >= 1000
    assert man["backbone"]["weights_sha256"] and man["score_stats"]["n"] == 16  # every image cross-scored once
    fit = man["threshold_fit"]
    assert fit["rule"] == "target" and fit["folds"] == 5 and len(fit["cross_scores"]) == 16
    assert man["threshold"] == fit["value"] == fit["thresholds_for_targets"]["0.01"]
    insp = Inspector(model, backend="onnxruntime")
    good = [insp.inspect(read_image(p)).score for p in list_images(bottle / "test/good")[:4]]
    bad = [insp.inspect(read_image(p)).score for p in list_images(bottle / "test/broken_large")[:4]]
    assert max(good) < min(bad)
    r = insp.inspect(read_image(list_images(bottle / "test/broken_large")[0]))
    assert r.verdict == "fail" and r.normalised > 1.0 and r.anomaly_map.shape == (224, 224)
    # the image score is the mean of the model's top 5 patch scores (the Lite0 preset), not the max
    assert man["score_top_k"] == 5 and model.spec.score_top_k == 5
    top = np.sort(r.patch_scores.ravel())[::-1]
    assert r.score == pytest.approx(top[:5].mean(), rel=1e-6) and r.score < top[0]
    # the map adds the fine stages' residual (34 of the 96 dims come from stride 4 + 8 only)
    dims, weight, scale = model.spec.map_fine
    assert (dims, weight) == (34, 1.0) and 0.3 < scale < 1.0 and man["map_fine"] == [dims, weight, scale]
    assert not np.allclose(r.anomaly_map, model.geometry.anomaly_map(r.patch_scores))
    # the scale keeps the map in the distance's units on good parts (the heatmap colours' meaning)
    g = insp.inspect(read_image(list_images(bottle / "test/good")[0]))
    ratio = np.median(g.anomaly_map) / np.median(model.geometry.anomaly_map(g.patch_scores))
    assert 0.8 < ratio < 1.25, ratio


def test_score_top_k_is_a_setting_recorded_in_the_manifest_and_old_manifests_mean_the_max(bottle, tmp_path):
    out = tmp_path / "m"
    calibrate(_cfg(_images(bottle, tmp_path), out, score_top_k=1, map_fine_weight=0.0), progress=lambda *a: None)
    model = load_model(out)
    assert model.manifest["score_top_k"] == 1 and model.manifest["scoring"]["image"] == "max"
    assert model.spec.map_fine == (0, 0.0, 1.0)
    r = Inspector(model, backend="onnxruntime").inspect(read_image(list_images(bottle / "test/broken_large")[0]))
    assert r.score == pytest.approx(float(r.patch_scores.max()), rel=1e-6)
    np.testing.assert_allclose(r.anomaly_map, model.geometry.anomaly_map(r.patch_scores), rtol=1e-6)  # PatchCore's
    legacy = dict(model.manifest)
    del legacy["score_top_k"], legacy["map_fine"]
    from edge.manifest import parse_manifest
    spec = parse_manifest(legacy, "x")  # written before the settings: PatchCore's max and plain map
    assert spec.score_top_k == 1 and spec.map_fine == (0, 0.0, 1.0)
    for bad in ([500, 1.0, 1.0], [34, 1.0, 0.0], [34, -1.0, 1.0]):
        with pytest.raises(Exception, match="map_fine"):
            parse_manifest({**legacy, "map_fine": bad}, "x")
    with pytest.raises(ValidationError):
        CalibrationSettings(images=out, output=out, score_top_k=0)


def _images(bottle, tmp_path, n=4):
    d = tmp_path / "imgs"
    d.mkdir()
    for p in list_images(bottle / "train/good")[:n]:
        shutil.copy(p, d / p.name)
    return d


def _cfg(images, out, **kw):
    return CalibrationSettings(images=images, output=out, coreset_ratio=0.02, **kw)


def test_skips_unreadable_files_and_refuses_existing_output(bottle, tmp_path, caplog):
    imgs = _images(bottle, tmp_path)
    (imgs / "broken.png").write_bytes(b"\x89PNG garbage")
    r = calibrate(_cfg(imgs, tmp_path / "m"), progress=lambda *a: None)
    assert r.n_images == 4 and r.skipped == [str(imgs / "broken.png")]
    assert "skipping" in caplog.text
    with pytest.raises(ConfigError, match="--force"):
        calibrate(_cfg(imgs, tmp_path / "m"), progress=lambda *a: None)
    calibrate(_cfg(imgs, tmp_path / "m"), progress=lambda *a: None, run=RunOptions(force=True))
    assert list_versions(tmp_path / "m") == ["v0001", "v0002"]


def test_same_seed_same_model(bottle, tmp_path):
    imgs = _images(bottle, tmp_path, 3)
    a = calibrate(_cfg(imgs, tmp_path / "a"), progress=lambda *a: None)
    b = calibrate(_cfg(imgs, tmp_path / "b"), progress=lambda *a: None)
    np.testing.assert_array_equal(load_model(a.version_dir).bank, load_model(b.version_dir).bank)
    assert a.threshold == b.threshold


def test_bad_inputs(bottle, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageError, match="no image files"):
        calibrate(_cfg(tmp_path / "empty", tmp_path / "m1"))
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "a.png").write_bytes(b"nope")
    (junk / "b.jpg").write_bytes(b"")
    with pytest.raises(ImageError, match="none of the 2 files"):
        calibrate(_cfg(junk, tmp_path / "m2"), progress=lambda *a: None)
    assert not (tmp_path / "m2" / "CURRENT").exists()
    for ratio in (0.0, 1.5):
        with pytest.raises(ValidationError, match=r"coreset_ratio\n  Input should be (greater|less)"):
            CalibrationSettings(images=junk, output=tmp_path / "m3", coreset_ratio=ratio)
    with pytest.raises(ConfigError, match="not an empty folder"):
        calibrate(_cfg(junk, junk))
    with pytest.raises(ConfigError, match="bad images folder .* does not exist"):
        calibrate(_cfg(junk, tmp_path / "m5", bad_images=tmp_path / "missing"))
    with pytest.raises(Exception, match="unknown backbone"):
        calibrate(_cfg(_images(bottle, tmp_path, 2), tmp_path / "m4", backbone="nonet"))
    # --force into the good images' own folder wrote CURRENT and versions/ among the pictures
    imgs = tmp_path / "imgs"  # the 2 images _images copied above
    with pytest.raises(ConfigError, match="holds images and no model"):
        calibrate(_cfg(imgs, imgs), run=RunOptions(force=True))
    assert not (imgs / "CURRENT").exists() and not (imgs / "versions").exists()
    # a top-k larger than an image's patches wrote a version load_model refuses
    with pytest.raises(ConfigError, match="score-top-k 5000 is more than the 3136 patches"):
        calibrate(_cfg(imgs, tmp_path / "m6", score_top_k=5000), progress=lambda *a: None)
    assert not (tmp_path / "m6" / "CURRENT").exists()


def test_small_images_are_upscaled_with_a_warning(bottle, tmp_path, caplog):
    import cv2

    d = tmp_path / "small"
    d.mkdir()
    for i, p in enumerate(list_images(bottle / "train/good")[:3]):
        cv2.imwrite(str(d / f"{i}.jpg"), cv2.resize(cv2.imread(str(p)), (120, 100)))
    calibrate(_cfg(d, tmp_path / "m"), progress=lambda *a: None)
    assert "smaller than the 224x224 px input" in caplog.text


def test_yaml_settings_reject_unknown_keys(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("images: /x\noutput: /y\ncoreset_ratio: 0.05\n")
    assert load_settings(f).coreset_ratio == 0.05
    f.write_text("images: /x\ncoreset_ratoi: 0.05\n")
    with pytest.raises(ConfigError, match=re.escape(f"{f}: coreset_ratoi: Extra inputs are not permitted")):
        load_settings(f, output="/y")
    f.write_text("coreset_ratio: 2\n")
    with pytest.raises(ConfigError, match="coreset_ratio"):
        load_settings(f)
    with pytest.raises(ConfigError, match="^--coreset-ratio: "):  # a flag over the file is named as the flag
        load_settings(f, coreset_ratio=3)
    assert load_settings(f, images="/x", output="/y", coreset_ratio=0.5).coreset_ratio == 0.5
    f.write_text("threshold: {target_false_reject: 0.02}\n")
    s = load_settings(f, images="/x", output="/y", threshold_rule="max3sigma", func=print)  # not a setting: ignored
    assert (s.threshold.rule, s.threshold.target_false_reject) == ("max3sigma", 0.02)
    f.write_text("threshold: {target_false_reject: 0.7}\n")
    with pytest.raises(ConfigError, match=re.escape(f"{f}: threshold.target_false_reject: ")):
        load_settings(f, images="/x", output="/y")
    with pytest.raises(ConfigError, match="^--max-false-reject: "):
        load_settings(f, images="/x", output="/y", target_false_reject=0.01, max_false_reject=0.7)
    with pytest.raises(ConfigError, match="calibrate needs --images DIR and --output MODEL_DIR"):
        load_settings(f, target_false_reject=0.01)


def test_named_preset_fills_the_settings_and_unknown_ones_are_refused(tmp_path):
    cfg = CalibrationSettings(images=tmp_path, output=tmp_path / "m", preset="accurate")
    assert (cfg.layers, cfg.input_size, cfg.coreset_ratio, cfg.feature_dim) == ((4, 8, 16), 224, 0.0025, 96)
    cfg = CalibrationSettings(images=tmp_path, output=tmp_path / "m", preset="accurate", coreset_ratio=0.01)
    assert cfg.coreset_ratio == 0.01  # an explicit option wins
    cfg = CalibrationSettings(images=tmp_path, output=tmp_path / "m", preset="fast")
    assert (cfg.layers, cfg.input_size, cfg.coreset_ratio) == ((4, 8), 192, 0.0025)  # the former default
    # a preset flag over a file without one: the file's values are not filled before the flag is seen
    f = tmp_path / "c.yaml"
    f.write_text(f"images: {tmp_path}\noutput: {tmp_path / 'm'}\n")
    assert load_settings(f, preset="accurate").coreset_ratio == 0.0025
    assert load_settings(f).coreset_ratio == 0.001 and load_settings(f).min_bank == 1000  # Lite0's default
    with pytest.raises(ConfigError, match="unknown preset 'fastest'.*accurate"):
        CalibrationSettings(images=tmp_path, output=tmp_path / "m", preset="fastest")
    with pytest.raises(ConfigError, match="is for backbone 'efficientnet_lite0'"):
        CalibrationSettings(images=tmp_path, output=tmp_path / "m", preset="accurate", backbone="resnet18")
    with pytest.raises(ConfigError, match="normalization must be 'backbone' or one of"):
        CalibrationSettings(images=tmp_path, output=tmp_path / "m", normalization="sRGB")
    with pytest.raises(ConfigError, match="reject-all-bad needs --bad-images"):
        CalibrationSettings(images=tmp_path, output=tmp_path / "m", threshold={"reject_all_bad": True})


def test_few_good_images_warn_that_the_threshold_is_rough(bottle, tmp_path, caplog):
    imgs = tmp_path / "few"
    imgs.mkdir()
    for p in list_images(bottle / "train/good")[:4]:
        shutil.copy(p, imgs / p.name)
    with caplog.at_level("WARNING", logger="calibrate.build"):
        calibrate(CalibrationSettings(images=imgs, output=tmp_path / "m", coreset_ratio=0.05), progress=lambda *a: None)
    warned = [r.getMessage() for r in caplog.records if "good images" in r.getMessage()]
    assert len(warned) == 1 and warned[0].startswith("only 4 good images: the threshold's false-reject estimate")
