"""Recalibration faults on a running daemon: a disk that fills up, a camera lost mid-collection.

The disk is a real tmpfs of a few hundred KB (mounting needs root, as CI has); the camera is a
real HTTP MJPEG stream read by OpenCV's FFmpeg, shut down mid-collection.
"""

from __future__ import annotations

import shutil
from contextlib import contextmanager

from edge.modeldir import current_version, list_versions

from .mjpeg_camera import MjpegCamera
from .mqtt_helpers import Collector, new_prefix, start_daemon, write_config
from .test_recalibrate import SECRET, _send, _states, _why


def _daemon_config(tmp_path, prefix, model, source, recal: dict | None = None, **cam):
    (tmp_path / "secret").write_bytes(SECRET)
    recal = {"secret_file": str(tmp_path / "secret"), "threads": 1, **(recal or {})}
    camera = {"name": "cam", "source": str(source), "model": str(model), "fps": 15, "loop": True,
              "heatmap": {"mode": "off"}, **cam}
    return write_config(tmp_path / "d.yaml", prefix, [camera], recalibration=recal)


@contextmanager
def _running(cfg, prefix):
    """A subscriber and the daemon, once it publishes results; both stopped afterwards."""
    sub = Collector(prefix)
    p = start_daemon(cfg)
    try:
        assert sub.wait_for(lambda: len(sub.of("cam/result")) >= 1, 30), p.diagnose()
        yield sub, p
    finally:
        p.stop()
        sub.close()


def _recalibrate_until_failed(sub, prefix, p, cmd_id, timeout=60) -> dict:
    def last() -> dict:
        msgs = sub.json_of("cam/recalibrate/status")
        return msgs[-1] if msgs else {}

    _send(sub, prefix, action="recalibrate", frames=12, id=cmd_id)
    assert sub.wait_for(lambda: last().get("id") == cmd_id and last().get("state") == "failed", timeout), \
        _why(sub, p)
    return last()


def _assert_old_model_keeps_judging(sub, model, p):
    assert current_version(model) == "v0001" and list_versions(model) == ["v0001"]
    assert not list((model / "versions").glob(".tmp-*")), "a half-written version was left behind"
    n = len(sub.of("cam/result"))
    assert sub.wait_for(lambda: len(sub.of("cam/result")) >= n + 2, 30)
    assert sub.json_of("cam/result")[-1]["model_version"] == "v0001"
    assert p.poll() is None, "the daemon must survive a failed recalibration"


def test_disk_full_while_collecting(small_model, bottle, tmp_path, small_fs):
    model = tmp_path / "model"
    shutil.copytree(small_model, model)
    work = small_fs("work", 1024)  # one 900x900 frame is 2.4 MB as BMP: the first write fails
    prefix = new_prefix()
    cfg = _daemon_config(tmp_path, prefix, model, bottle / "train/good", recal={"work_dir": str(work)})
    with _running(cfg, prefix) as (sub, p):
        msg = _recalibrate_until_failed(sub, prefix, p, "full1")
        assert "disk full" in msg["message"] and msg["version"] == "v0001", msg
        _assert_old_model_keeps_judging(sub, model, p)
        assert not list(work.rglob("*.bmp")), "collected frames must be cleaned up"


def test_disk_full_while_writing_the_new_version(small_model, bottle, tmp_path, small_fs):
    used_kb = sum(f.stat().st_size for f in small_model.rglob("*") if f.is_file()) // 1024
    model = small_fs("model", used_kb + 160)  # room for the old version, not for a new one
    shutil.copytree(small_model, model, dirs_exist_ok=True)
    prefix = new_prefix()
    cfg = _daemon_config(tmp_path, prefix, model, bottle / "train/good", recal={"work_dir": str(tmp_path / "work")})
    with _running(cfg, prefix) as (sub, p):
        msg = _recalibrate_until_failed(sub, prefix, p, "full2", timeout=120)
        assert "building" in _states(sub)
        assert "no space left" in msg["message"].lower(), msg
        _assert_old_model_keeps_judging(sub, model, p)


def test_camera_lost_while_collecting(small_model, bottle, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(small_model, model)
    cam = MjpegCamera(sorted((bottle / "train/good").glob("*.png"))[:5], fps=20).start()
    prefix = new_prefix()
    cfg = _daemon_config(tmp_path, prefix, model, cam.url, stall_timeout_s=1.5)
    with cam, _running(cfg, prefix) as (sub, p):
        _send(sub, prefix, action="recalibrate", frames=400, id="lost1")
        assert sub.wait_for(lambda: any(m.get("state") == "collecting" and m.get("done", 0) > 10
                                        for m in sub.json_of("cam/recalibrate/status")), 30)
        cam.stop()  # the camera drops off the network mid-collection
        assert sub.wait_for(lambda: _states(sub)[-1:] == ["failed"], 30), _why(sub, p)
        msg = sub.json_of("cam/recalibrate/status")[-1]
        assert "camera lost while collecting" in msg["message"], msg
        assert current_version(model) == "v0001" and list_versions(model) == ["v0001"]
        assert not (model / "incoming").exists()
        assert sub.wait_for(lambda: any(c.get("camera") == "offline" for s in sub.json_of("stats")[-3:]
                                        for c in s.get("cameras", {}).values()), 20), sub.json_of("stats")[-1:]
        cam.start()  # back on the same port: the capture reconnects and inspection resumes
        _assert_old_model_keeps_judging(sub, model, p)


def test_a_hung_build_is_stopped_after_build_timeout(small_model, bottle, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(small_model, model)
    prefix = new_prefix()
    cfg = _daemon_config(tmp_path, prefix, model, bottle / "train/good",
                         recal={"build_timeout_s": 0.5})  # no build is that fast
    with _running(cfg, prefix) as (sub, p):
        msg = _recalibrate_until_failed(sub, prefix, p, "slow1")
        assert "build_timeout_s" in msg["message"], msg
        _assert_old_model_keeps_judging(sub, model, p)
        msg = _recalibrate_until_failed(sub, prefix, p, "slow2")  # not stuck "busy"
        assert msg["id"] == "slow2" and "build_timeout_s" in msg["message"], msg
