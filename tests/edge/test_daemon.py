"""The daemon against the real Mosquitto on 127.0.0.1:1883 (and a private one for restarts)."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time

import cv2
import jsonschema
import numpy as np
import pytest

from edge.preprocess import list_images

from .mqtt_helpers import ROOT, Collector, free_port, new_prefix, start_daemon, start_private_broker, write_config


@pytest.fixture(scope="module")
def replay(bottle, tmp_path_factory):
    """3 good then 3 broken bottle test images, named so the folder replays them in that order."""
    d = tmp_path_factory.mktemp("replay")
    goods = list_images(bottle / "test/good")[:3]
    bads = list_images(bottle / "test/broken_large")[:3]
    for i, p in enumerate(goods + bads):
        shutil.copy(p, d / f"{i:02d}_{'good' if i < 3 else 'bad'}.png")
    return d


def _camera(name, source, model, **kw):
    return {"name": name, "source": str(source), "model": str(model), "fps": 10, **kw}


def test_contract_verdicts_heatmap_state_stats_and_offline(small_model, replay, tmp_path):
    prefix = new_prefix()
    sub = Collector(prefix)
    cfg = write_config(tmp_path / "d.yaml", prefix, [_camera("cam1", replay, small_model)])
    p = start_daemon(cfg)
    try:
        assert sub.wait_for(lambda: len(sub.of("cam1/result")) >= 6), p.diagnose()
        assert sub.wait_for(lambda: sub.json_of("stats") and "cam1" in sub.json_of("stats")[-1]["cameras"])
    finally:
        out, err = p.stop()
    assert p.returncode == 0, err
    assert sub.wait_for(lambda: sub.of("available")[-1:] == [b"offline"], 10)
    assert sub.of("available")[0] == b"online"
    results = sub.json_of("cam1/result")
    assert [r["verdict"] for r in results[:6]] == ["pass"] * 3 + ["fail"] * 3
    assert [r["frame_id"] for r in results[:6]] == [1, 2, 3, 4, 5, 6]
    r = results[0]
    assert set(r) >= {"frame_id", "timestamp", "score", "normalised_score", "threshold", "verdict", "latency_ms",
                      "model_version"} and r["model_version"] == "v0001"
    jpeg = cv2.imdecode(np.frombuffer(sub.of("cam1/heatmap")[-1], np.uint8), cv2.IMREAD_COLOR)
    assert jpeg is not None and max(jpeg.shape[:2]) == 320
    schemas = {n: json.loads((ROOT / f"docs/mqtt/{n}.schema.json").read_text()) for n in ("result", "stats")}
    for r in results:
        jsonschema.validate(r, schemas["result"])
    for s in sub.json_of("stats"):
        jsonschema.validate(s, schemas["stats"])
    stats = sub.json_of("stats")[-1]["cameras"]["cam1"]
    assert stats["frames"] == 6 and stats["results"] == 6 and stats["dropped"] == 0 and "p99" in stats["latency_ms"]["total"]
    sub.close()
    late = Collector(prefix)  # a PLC that connects later gets the retained state
    assert late.wait_for(lambda: late.json_of("cam1/state"), 10)
    assert late.json_of("cam1/state")[0]["frame_id"] == results[5]["frame_id"]
    assert late.of("available") == [b"offline"]
    late.close()


def test_video_file_source_and_bad_cameras_do_not_stop_good_ones(small_model, replay, tmp_path):
    video = tmp_path / "line.avi"
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (900, 900))
    for p in sorted(replay.iterdir()):
        w.write(cv2.imread(str(p)))
    w.release()
    prefix = new_prefix()
    sub = Collector(prefix)
    cams = [_camera("video", video, small_model), _camera("nocam", tmp_path / "missing.avi", small_model),
            _camera("nomodel", replay, tmp_path / "no-model")]
    p = start_daemon(write_config(tmp_path / "d.yaml", prefix, cams, exit_when_done=False))
    try:
        assert sub.wait_for(lambda: len(sub.of("video/result")) >= 6)
        assert sub.wait_for(lambda: sub.json_of("stats") and
                            sub.json_of("stats")[-1]["cameras"]["nocam"]["camera"] == "offline")
    finally:
        _, err = p.stop()
    res = sub.json_of("video/result")[:6]
    # MJPG re-encoding shifts scores a little: defects must fail and score above every good frame
    assert [r["verdict"] for r in res[3:]] == ["fail"] * 3
    assert max(r["score"] for r in res[:3]) < min(r["score"] for r in res[3:])
    cams = [m["cameras"] for m in sub.json_of("stats") if m["cameras"]["nocam"]["camera"] == "offline"][-1]
    assert "does not exist" in cams["nocam"]["camera_error"]
    assert cams["nomodel"]["model"] == "error" and "does not exist" in cams["nomodel"]["model_error"]
    assert "camera nomodel refused" in err
    sub.close()


def test_trigger_mode_and_malformed_messages(small_model, replay, tmp_path):
    prefix = new_prefix()
    sub = Collector(prefix)
    cam = _camera("trig", replay, small_model, trigger="mqtt", loop=True)
    p = start_daemon(write_config(tmp_path / "d.yaml", prefix, [cam]))
    try:
        assert sub.wait_for(lambda: sub.of("available") == [b"online"], 30)
        time.sleep(1.5)
        assert sub.of("trig/result") == []  # nothing without a trigger
        sub.c.publish(f"{prefix}/trig/trigger", b"\xff\xfe not json", qos=1)
        sub.c.publish(f"{prefix}/other/trigger", b"{}", qos=1)
        assert sub.wait_for(lambda: len(sub.of("trig/result")) == 1, 60)
        sub.c.publish(f"{prefix}/trig/trigger", b"", qos=1)
        assert sub.wait_for(lambda: len(sub.of("trig/result")) == 2, 60)
        assert p.poll() is None
    finally:
        p.stop()
    assert p.returncode == 0
    sub.close()


def _broker(port: int, tmp_path) -> subprocess.Popen:
    # persistence in the test's folder (mosquitto runs as this user, see start_private_broker):
    # otherwise it would forget the subscriber's persistent session on restart, and results
    # flushed before the subscriber reconnected were then lost at the broker (the "loss under
    # load" this test used to show)
    return start_private_broker(port, tmp_path, f"persistence true\npersistence_location {tmp_path}/\n"
                                f"log_dest file {tmp_path}/mosquitto.log\nlog_type all\n"
                                "log_timestamp_format %H:%M:%S\n")


def test_broker_restart_loses_no_result(small_model, replay, tmp_path):
    port = free_port()
    broker = _broker(port, tmp_path)
    prefix = new_prefix()
    sub = Collector(prefix, port=port, client_id=f"{prefix}-sub", clean=False)  # a persistent PLC session
    cam = _camera("line", replay, small_model, loop=True, fps=5)
    p = start_daemon(write_config(tmp_path / "d.yaml", prefix, [cam], port=port))
    try:
        assert sub.wait_for(lambda: len(sub.of("line/result")) >= 3)
        broker.send_signal(signal.SIGTERM)  # the broker goes away (saving its sessions) ...
        broker.wait(10)
        assert (tmp_path / "mosquitto.db").is_file(), "the broker did not save its sessions"
        time.sleep(2.5)  # ... while the camera keeps inspecting
        broker = _broker(port, tmp_path)
        n = len(sub.of("line/result"))
        assert sub.wait_for(lambda: len(sub.of("line/result")) >= n + 15, 60)
    finally:
        _, err = p.stop()
        sub.close()
        broker.terminate()
        broker.wait(10)
    ids = [r["frame_id"] for r in sub.json_of("line/result")]
    dedup = list(dict.fromkeys(ids))  # QoS 1 is at-least-once: a resend may repeat one
    log = (tmp_path / "mosquitto.log").read_text(errors="replace").splitlines()
    assert dedup == list(range(1, len(dedup) + 1)), "\n".join(
        [f"ids {ids}", "daemon:", *[ln for ln in err.splitlines() if "mqtt" in ln.lower()], "broker:",
         *[ln for ln in log if "PUBLISH" not in ln or "line/result" in ln][-150:]])


def test_a_replay_whose_roi_never_fits_exits_4_and_the_final_stats_keep_why(small_model, replay, tmp_path):
    # it exited 0 with 0 results, and the last stats said "ended" with camera_error null
    prefix = new_prefix()
    sub = Collector(prefix)
    cfg = write_config(tmp_path / "d.yaml", prefix, [_camera("cam1", replay, small_model, roi=[0, 0, 5000, 5000])],
                       exit_when_done=True)
    p = start_daemon(cfg)
    try:
        p.wait(120)
    finally:
        out, err = p.stop()
    assert p.returncode == 4, err
    assert "ended with an error" in err and "roi" in err
    assert sub.wait_for(lambda: sub.json_of("stats") and sub.json_of("stats")[-1]["cameras"]["cam1"]["camera"]
                        == "ended", 10)
    final = sub.json_of("stats")[-1]["cameras"]["cam1"]
    assert final["results"] == 0 and "roi" in final["camera_error"], final
    assert sub.of("cam1/result") == []
    sub.close()
