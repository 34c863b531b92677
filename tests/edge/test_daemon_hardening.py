"""Issue 11, items 4 and 11: undelivered results survive a restart with unique ids; a camera
that cannot produce results says so (refused model, ROI outside the frame, a text file named
.png) and `patchcore-edge status` calls it unhealthy. Real Mosquitto on 127.0.0.1:1883, real
models, real images, scratch folders."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edge.modeldir import load_model, write_version
from edge.preprocess import list_images

from .mqtt_helpers import ROOT, Collector, new_prefix, start_daemon, write_config


@pytest.fixture(scope="module")
def replay(bottle, tmp_path_factory):
    """3 good then 3 broken bottle test images, replayed in that order."""
    d = tmp_path_factory.mktemp("replay")
    for i, p in enumerate(list_images(bottle / "test/good")[:3] + list_images(bottle / "test/broken_large")[:3]):
        shutil.copy(p, d / f"{i:02d}.png")
    return d


def _camera(name, source, model, **kw):
    return {"name": name, "source": str(source), "model": str(model), "fps": 10, **kw}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _status(cfg, *extra):
    return subprocess.run([sys.executable, "-m", "patchcore_edge", "status", "--config", str(cfg), "--wait", "1",
                           *extra], cwd=ROOT, capture_output=True, text=True, timeout=60)


def _printed(p) -> list[dict]:
    return [json.loads(line) for line in p.output()[0].splitlines() if line.startswith("{")]


def _last_stats(sub, camera):
    stats = sub.json_of("stats")
    return stats[-1]["cameras"].get(camera, {}) if stats else {}


def test_sigterm_with_broker_down_spools_then_replays_in_order_with_unique_ids(small_model, replay, tmp_path):
    prefix = new_prefix()
    sub = Collector(prefix)
    cams = [_camera("line", replay, small_model)]
    # run 1: the broker is "down" (nothing listens on that port); 6 frames are inspected
    cfg = write_config(tmp_path / "d.yaml", prefix, cams, port=_free_port(), print_results=True)
    p = start_daemon(cfg)
    try:
        assert sub.wait_for(lambda: len(_printed(p)) >= 6, 120), p.diagnose()
    finally:
        _, err = p.stop()
    assert p.returncode == 0, err
    # 6 results, the last state (earlier ones are superseded) and the retained recalibration status
    assert "spooled 8 undelivered messages" in err, err
    spool = tmp_path / "patchcore-state" / "spool.jsonl"
    assert spool.is_file()
    assert sub.of("line/result") == []
    # run 2: the broker is back; what run 1 spooled arrives first, in order, then run 2's own results
    write_config(tmp_path / "d.yaml", prefix, cams, port=1883)
    p = start_daemon(cfg)
    try:
        assert sub.wait_for(lambda: len(sub.of("line/result")) >= 12, 120), p.diagnose()
        assert sub.wait_for(lambda: not spool.exists(), 10), "the spool was not removed once delivered"
        assert sub.wait_for(lambda: (sub.json_of("stats") or [{}])[-1].get("broker", {}).get("replayed") == 8, 10)
    finally:
        _, err2 = p.stop()
    assert p.returncode == 0, err2
    assert "replaying 8 messages" in err2
    results = sub.json_of("line/result")
    ids = [(r["run_id"], r["frame_id"]) for r in results]
    assert ids[:12] == [(1, i) for i in range(1, 7)] + [(2, i) for i in range(1, 7)], ids
    assert len(set(ids)) == len(ids)
    assert [r["verdict"] for r in results[:6]] == ["pass"] * 3 + ["fail"] * 3  # the real run-1 verdicts
    assert sub.json_of("line/state")[-1]["run_id"] == 2  # the retained state is the newest verdict
    schema = json.loads((ROOT / "docs/mqtt/result.schema.json").read_text())
    import jsonschema
    for r in results:
        jsonschema.validate(r, schema)
    sub.close()


def test_buffer_overflow_and_spool_cap_are_logged_and_counted(small_model, replay, tmp_path):
    prefix = new_prefix()
    sub = Collector(prefix)
    cams = [_camera("line", replay, small_model)]
    cfg = write_config(tmp_path / "d.yaml", prefix, cams, port=_free_port(), print_results=True,
                       mqtt={"host": "127.0.0.1", "port": _free_port(), "prefix": prefix, "client_id": prefix,
                             "buffer": 4})
    p = start_daemon(cfg)
    try:
        assert sub.wait_for(lambda: len(_printed(p)) >= 6, 120), p.diagnose()
    finally:
        _, err = p.stop()
    assert "MQTT buffer full (mqtt.buffer=4)" in err and err.count("MQTT buffer full") == 1, err
    # the buffer kept the newest 4 messages (results 5, 6 and their states); the spool keeps them
    assert "spooled 3 undelivered messages" in err, err
    write_config(tmp_path / "d.yaml", prefix, cams, mqtt={"host": "127.0.0.1", "port": 1883, "prefix": prefix,
                                                           "client_id": prefix, "buffer": 4})
    p = start_daemon(cfg)
    try:
        assert sub.wait_for(lambda: len(sub.of("line/result")) >= 8, 120), p.diagnose()
    finally:
        p.stop()
    ids = [(r["run_id"], r["frame_id"]) for r in sub.json_of("line/result")]
    assert ids[:2] == [(1, 5), (1, 6)] and ids[2] == (2, 1), ids
    sub.close()


def _wrong_grid_model(small_model, root):
    """A complete, hash-consistent model version whose backbone outputs half the manifest's grid."""
    m = load_model(small_model)
    graph = onnx.load(str(m.onnx_path))
    out = graph.graph.output[0]
    graph.graph.node.append(helper.make_node("MaxPool", [out.name], ["pooled"], kernel_shape=[2, 2], strides=[2, 2]))
    graph.graph.output.remove(out)
    graph.graph.output.append(helper.make_tensor_value_info("pooled", TensorProto.FLOAT, None))
    manifest = {k: v for k, v in m.manifest.items() if k not in ("version", "files")}
    write_version(root, manifest, m.bank, graph.SerializeToString())
    return root


def test_wrong_shape_model_is_refused_with_its_reason_and_status_is_unhealthy(small_model, replay, tmp_path):
    bad = _wrong_grid_model(small_model, tmp_path / "bad-model")
    prefix = new_prefix()
    sub = Collector(prefix)
    cfg = write_config(tmp_path / "d.yaml", prefix, [_camera("good", replay, small_model, loop=True),
                                                      _camera("bad", replay, bad, loop=True)])
    p = start_daemon(cfg)
    try:
        assert sub.wait_for(lambda: _last_stats(sub, "bad").get("model") == "error", 60), p.diagnose()
        r = _status(cfg)
        s = _last_stats(sub, "bad")
    finally:
        _, err = p.stop()
    grid = load_model(small_model).manifest["grid"]
    assert "backbone outputs" in s["model_error"] and f"{grid[0] // 2}x{grid[1] // 2}" in s["model_error"], s
    assert sub.of("bad/result") == [] and sub.of("good/result")
    assert "camera bad refused" in err and "Traceback" not in err, err
    assert r.returncode == 1, r.stdout
    assert "camera bad: model refused: " in r.stdout and "backbone outputs" in r.stdout
    sub.close()


def test_roi_outside_the_frame_is_a_camera_error_not_a_traceback_per_frame(small_model, replay, tmp_path):
    prefix = new_prefix()
    sub = Collector(prefix)
    cfg = write_config(tmp_path / "d.yaml", prefix, [_camera("cam", replay, small_model, loop=True,
                                                             roi=[1000, 0, 100, 100])])
    p = start_daemon(cfg)
    try:
        assert sub.wait_for(lambda: _last_stats(sub, "cam").get("camera") == "error"
                            and _last_stats(sub, "cam")["frames"] >= 10
                            and _last_stats(sub, "cam")["no_result_s"] > 1, 60), p.diagnose()
        r = _status(cfg, "--window", "1")
        s = _last_stats(sub, "cam")  # (the stats sent at stop say "stopped")
    finally:
        _, err = p.stop()
    assert "does not fit inside the 900x900 frame" in s["camera_error"], s
    assert s["results"] == 0 and s["errors"] == 0 and sub.of("cam/result") == []
    assert err.count("does not fit inside") == 1 and "Traceback" not in err, err  # one line, not one per frame
    assert r.returncode == 1 and "camera cam error: roi [1000, 0, 100, 100]" in r.stdout, r.stdout
    assert "no result for" in r.stdout  # and blind: frames, no result
    sub.close()


def test_text_file_named_png_is_a_clear_camera_error(small_model, replay, tmp_path):
    fake = tmp_path / "frame.png"
    fake.write_text("this is not an image\n")
    folder = tmp_path / "fakes"
    folder.mkdir()
    shutil.copy(fake, folder / "a.png")
    prefix = new_prefix()
    sub = Collector(prefix)
    cfg = write_config(tmp_path / "d.yaml", prefix, [_camera("file", fake, small_model),
                                                      _camera("folder", folder, small_model, loop=True),
                                                      _camera("good", replay, small_model, loop=True)])
    p = start_daemon(cfg)
    try:
        assert sub.wait_for(lambda: _last_stats(sub, "file").get("camera") == "offline"
                            and _last_stats(sub, "folder").get("camera") == "offline", 60), p.diagnose()
        r = _status(cfg)
        stats = sub.json_of("stats")[-1]["cameras"]
    finally:
        _, err = p.stop()
    assert f"cannot decode {fake}" in stats["file"]["camera_error"], stats["file"]
    assert "none of its 1 image files can be decoded" in stats["folder"]["camera_error"], stats["folder"]
    assert stats["good"]["camera"] == "online" and sub.of("good/result")
    assert "Traceback" not in err, err
    assert r.returncode == 1 and "camera file offline: camera source cannot decode" in r.stdout, r.stdout
    sub.close()


def test_status_judges_errors_and_blindness_from_stats():
    from edge.cli_status import camera_problems

    ok = {"camera": "online", "model": "ok", "errors": 3, "last_error_s": 100.0, "last_error": "x", "no_result_s": 0}
    assert camera_problems("c", ok, "online", 30) == []  # old errors only
    recent = dict(ok, last_error_s=2.0, last_error="ValueError: bad frame")
    assert camera_problems("c", recent, "online", 30) == [
        "camera c: 3 inspection errors, the last 2 s ago: ValueError: bad frame"]
    blind = dict(ok, no_result_s=45.0)
    assert camera_problems("c", blind, "online", 30) == ["camera c: frames but no result for 45 s (blind)"]
    assert np.isclose(blind["no_result_s"], 45.0)
