import shutil

import numpy as np
import pytest

from calibrate.build import CalibrationConfig, calibrate
from calibrate.settings import load_settings
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


def _images(bottle, tmp_path, n=4):
    d = tmp_path / "imgs"
    d.mkdir()
    for p in list_images(bottle / "train/good")[:n]:
        shutil.copy(p, d / p.name)
    return d


def _cfg(images, out, **kw):
    return CalibrationConfig(images=images, output=out, coreset_ratio=0.02, **kw)


def test_skips_unreadable_files_and_refuses_existing_output(bottle, tmp_path, caplog):
    imgs = _images(bottle, tmp_path)
    (imgs / "broken.png").write_bytes(b"\x89PNG garbage")
    r = calibrate(_cfg(imgs, tmp_path / "m"), progress=lambda *a: None)
    assert r.n_images == 4 and r.skipped == [str(imgs / "broken.png")]
    assert "skipping" in caplog.text
    with pytest.raises(ConfigError, match="--force"):
        calibrate(_cfg(imgs, tmp_path / "m"), progress=lambda *a: None)
    calibrate(_cfg(imgs, tmp_path / "m", force=True), progress=lambda *a: None)
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
        with pytest.raises(ConfigError, match="coreset ratio"):
            calibrate(CalibrationConfig(images=junk, output=tmp_path / "m3", coreset_ratio=ratio))
    with pytest.raises(ConfigError, match="not an empty folder"):
        calibrate(_cfg(junk, junk))
    with pytest.raises(Exception, match="unknown backbone"):
        calibrate(_cfg(_images(bottle, tmp_path, 2), tmp_path / "m4", backbone="nonet"))


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
    f.write_text("images: /x\ncoreset_ratio: 0.05\n")
    assert load_settings(f).coreset_ratio == 0.05
    f.write_text("images: /x\ncoreset_ratoi: 0.05\n")
    with pytest.raises(ConfigError, match="coreset_ratoi"):
        load_settings(f)
    f.write_text("coreset_ratio: 2\n")
    with pytest.raises(ConfigError, match="coreset_ratio"):
        load_settings(f)


def test_named_preset_fills_the_settings_and_unknown_ones_are_refused(tmp_path):
    cfg = CalibrationConfig(images=tmp_path, output=tmp_path / "m", preset="accurate")
    cfg.validate()
    assert (cfg.strides, cfg.input_size, cfg.coreset_ratio, cfg.feature_dim) == ((4, 8, 16), 224, 0.0025, 96)
    cfg = CalibrationConfig(images=tmp_path, output=tmp_path / "m", preset="accurate", coreset_ratio=0.01)
    cfg.validate()
    assert cfg.coreset_ratio == 0.01  # an explicit option wins
    cfg = CalibrationConfig(images=tmp_path, output=tmp_path / "m", preset="fast")
    cfg.validate()
    assert (cfg.strides, cfg.input_size, cfg.coreset_ratio) == ((4, 8), 192, 0.0025)  # the former default
    with pytest.raises(ConfigError, match="unknown preset 'fastest'.*accurate"):
        CalibrationConfig(images=tmp_path, output=tmp_path / "m", preset="fastest").validate()
    with pytest.raises(ConfigError, match="is for backbone 'efficientnet_lite0'"):
        CalibrationConfig(images=tmp_path, output=tmp_path / "m", preset="accurate", backbone="resnet18").validate()
