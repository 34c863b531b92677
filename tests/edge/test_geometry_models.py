"""Real models with a non-square input and with tiles: calibration, maps, ONNX parity, daemon."""

from __future__ import annotations

import argparse
import json
import shutil

import cv2
import numpy as np
import onnx
import pytest

from calibrate.build import RunOptions, calibrate
from calibrate.settings import CalibrationSettings
from edge.geometry import Geometry
from edge.heatmap import overlay
from edge.inspector import Inspector
from edge.modeldir import load_model
from edge.preprocess import list_images, read_image

from .mqtt_helpers import Collector, new_prefix, start_daemon, write_config

STRIP_ROWS = slice(300, 600)  # a 900 x 300 band of each bottle image: a long narrow part (3:1)


def _strip(path):
    return np.ascontiguousarray(read_image(path)[STRIP_ROWS])


@pytest.fixture(scope="module")
def strip_model(bottle, tmp_path_factory):
    """Calibrated on 16 real bottle images cut to 900 x 300 strips, short side 64 px."""
    d = tmp_path_factory.mktemp("strips")
    for p in list_images(bottle / "train/good")[:16]:
        cv2.imwrite(str(d / f"{p.stem}.png"), _strip(p))
    out = tmp_path_factory.mktemp("strip_model") / "m"
    calibrate(CalibrationSettings(images=d, output=out, input_size="short:64", coreset_ratio=0.02),
              progress=lambda *a: None)
    return out


@pytest.fixture(scope="module")
def tiled_model(bottle, tmp_path_factory):
    """16 good bottle images, 2 x 2 tiles of a 96 x 64 input (not square either), 10% overlap."""
    out = tmp_path_factory.mktemp("tiled_model") / "m"
    calibrate(CalibrationSettings(images=bottle / "train/good", output=out, input_size="96x64", tiles="2x2",
                                  tile_overlap=0.1, coreset_ratio=0.02), progress=lambda *a: None,
              run=RunOptions(image_paths=list_images(bottle / "train/good")[:16]))
    return out


def test_short_side_strip_model_maps_heatmap_and_onnx_parity(strip_model, bottle):
    from export.onnx_export import rebuild_extractor
    from export.parity import parity_report
    from edge.backends.ort_backend import OrtBackend

    model = load_model(strip_model)
    m = model.manifest
    assert m["input_size"] == [192, 64] and m["tiling"] is None  # 3:1 kept, rounded to 16 px
    assert m["grid"] == [16, 48]  # Lite0's stride 4: H/4 x W/4
    dims = [d.dim_value for d in onnx.load(str(model.onnx_path)).graph.input[0].type.tensor_type.shape.dim]
    assert dims[1:] == [3, 64, 192]  # the graph is frozen for W x H, not a square
    frame = _strip(list_images(bottle / "test/broken_large")[0])
    r = Inspector(model, backend="onnxruntime").inspect(frame)
    assert r.patch_scores.shape == (16, 48) and r.anomaly_map.shape == (64, 192)
    assert overlay(frame, r.anomaly_map, r.threshold).shape == frame.shape
    # the exported graph gives torch's features on real strip images (raises beyond tolerance)
    d = strip_model.parent / "parity"
    d.mkdir(exist_ok=True)
    images = []
    for p in list_images(bottle / "test/good")[:3] + list_images(bottle / "test/contamination")[:3]:
        cv2.imwrite(str(d / f"{p.parent.name}_{p.stem}.png"), _strip(p))
        images.append(d / f"{p.parent.name}_{p.stem}.png")
    report = parity_report(model, rebuild_extractor(model), OrtBackend(str(model.onnx_path)), images)
    assert report["ok"] and report["feature_max_abs"] < 1e-3


def test_tiled_model_scores_tiles_in_one_batch_and_stitches_the_map(tiled_model, bottle):
    model = load_model(tiled_model)
    t = model.manifest["tiling"]
    assert model.manifest["input_size"] == [96, 64] and t["tiles"] == [2, 2] and t["overlap"] == 0.1
    g = model.geometry
    assert t["canvas"] == list(g.canvas) == [182, 122]  # 96 + round(0.9 * 96), 64 + round(0.9 * 64)
    insp = Inspector(model, backend="onnxruntime")
    good = insp.inspect(read_image(list_images(bottle / "test/good")[0]))
    bad = insp.inspect(read_image(list_images(bottle / "test/broken_large")[0]))
    for r in (good, bad):
        assert r.patch_scores.shape == (4, 16, 24)  # tiles x (64/4) x (96/4)
        assert r.anomaly_map.shape == (122, 182)  # the canvas, H x W
        # image score = mean of the model's top k patch scores over all of the frame's tiles
        k = model.spec.score_top_k
        assert r.score == pytest.approx(float(np.sort(r.patch_scores.ravel())[-k:].mean()), rel=1e-5)
    assert good.verdict == "pass" and bad.verdict == "fail"
    # export's parity check cuts the same tiles for torch and the graph and compares per-image scores
    from edge.backends.ort_backend import OrtBackend
    from export.onnx_export import rebuild_extractor
    from export.parity import FixedBatch, parity_report

    images = list_images(bottle / "test/good")[:1] + list_images(bottle / "test/broken_large")[:1]
    report = parity_report(model, rebuild_extractor(model), FixedBatch(OrtBackend(str(model.onnx_path)), 4), images)
    assert report["ok"] and report["images"] == 2


def test_tiled_non_square_model_round_trip_through_the_daemon(tiled_model, bottle, tmp_path):
    replay = tmp_path / "replay"
    replay.mkdir()
    for i, p in enumerate(list_images(bottle / "test/good")[:3] + list_images(bottle / "test/broken_large")[:3]):
        shutil.copy(p, replay / f"{i:02d}.png")
    prefix = new_prefix()
    sub = Collector(prefix)
    cfg = write_config(tmp_path / "d.yaml", prefix, [{"name": "cam1", "source": str(replay),
                                                      "model": str(tiled_model), "fps": 10}])
    p = start_daemon(cfg)
    try:
        assert sub.wait_for(lambda: len(sub.of("cam1/result")) >= 6), p.diagnose()
    finally:
        p.stop()
    results = sub.json_of("cam1/result")[:6]
    # the daemon (ROI-less camera -> its Inspector -> MQTT) gives what the model gives offline
    insp = Inspector(load_model(tiled_model), backend="onnxruntime")
    expected = [insp.inspect(read_image(f)) for f in sorted(replay.iterdir())]
    assert [r["verdict"] for r in results] == [e.verdict for e in expected]
    assert [r["score"] for r in results] == pytest.approx([e.score for e in expected], abs=1e-3)
    assert {e.verdict for e in expected[:3]} >= {"pass"} and [e.verdict for e in expected[3:]] == ["fail"] * 3
    jpeg = cv2.imdecode(np.frombuffer(sub.of("cam1/heatmap")[-1], np.uint8), cv2.IMREAD_COLOR)
    assert jpeg is not None and jpeg.shape[0] == jpeg.shape[1]  # over the square frame, not the canvas
    sub.close()


def test_recalibration_arguments_reproduce_the_geometry(tiled_model, bottle):
    """The daemon recalibrates with Geometry.cli_args(); the calibrate CLI must read them back."""
    from calibrate import cli as calibrate_cli
    from calibrate.settings import load_settings

    g = load_model(tiled_model).geometry
    parser = argparse.ArgumentParser()
    calibrate_cli.add_parser(parser.add_subparsers())
    args = parser.parse_args(["calibrate", "--images", str(bottle), "--output", str(bottle), *g.cli_args()])
    assert load_settings(args.config, **vars(args)).geometry([]) == g


def test_yaml_accepts_every_input_size_form(tmp_path):
    from calibrate.settings import load_settings
    from edge.errors import ConfigError

    for value, tiles in (("256x192", None), ("short:224", "3x2"), (224, None)):
        f = tmp_path / "c.yaml"
        f.write_text(json.dumps({"input_size": value, **({"tiles": tiles} if tiles else {})}))
        s = load_settings(f, images=tmp_path, output=tmp_path / "m")
        assert s.input_size == value and s.tiles == tiles
    f.write_text(json.dumps({"input_size": "250x192"}))
    with pytest.raises(ConfigError, match="input_size.*multiple of 16"):
        load_settings(f, images=tmp_path, output=tmp_path / "m")
    assert Geometry.from_manifest({"input_size": 224}).cli_args() == ["--input-size", "224"]
