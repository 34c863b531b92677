"""Red-team findings 1, 2, 3, 8 and 11 (/work/notes/red-team.md): a refused recalibration keeps
every rollback version, the CLI waits for its own outcome through forged refusals, used command
ids survive a restart with a larger max_age_s and clock steps, the threshold moves by a bounded
factor per change, and versions past v9999 are ordered by number."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time

import pytest

from edge.commands import CommandError, encode, parse
from edge.errors import ModelError
from edge.modeldir import (CURRENT, MANIFEST, MANIFEST_HASH, VERSIONS, current_version, list_versions, load_model,
                           manifest_hash_line, prune, write_version)
from edge.nonces import MAX_IDS, SeenIds
from edge.retune import new_threshold

from .mqtt_helpers import Collector, ROOT, recalibration_station, start_daemon
from .test_recalibrate import SECRET, _send, _why


def _outcome(sub, p, cmd_id, timeout=240) -> dict:
    def mine():
        return [m for m in sub.json_of("cam/recalibrate/status")
                if (m.get("id") == cmd_id and m.get("state") in ("active", "failed", "cancelled"))
                or (m.get("rejected") or {}).get("id") == cmd_id]
    assert sub.wait_for(lambda: mine(), timeout), _why(sub, p)
    return mine()[-1]


def _copy_version(vdir, src: str, dst: str) -> None:
    """versions/src copied to versions/dst with its manifest's "version" (and hash) saying dst:
    a manifest whose version is not its folder's name is refused at load."""
    shutil.copytree(vdir / src, vdir / dst)
    man = json.loads((vdir / dst / MANIFEST).read_text())
    man["version"] = dst
    data = json.dumps(man, indent=2).encode()
    (vdir / dst / MANIFEST).write_bytes(data)
    (vdir / dst / MANIFEST_HASH).write_bytes(manifest_hash_line(data))


def _more_versions(model, n: int) -> None:
    v1 = load_model(model)
    onnx = (v1.path / "backbone.onnx").read_bytes()
    for _ in range(n):
        write_version(model, {k: v for k, v in v1.manifest.items() if k != "version"}, v1.bank, onnx, keep=100)


# -- 1: pruning only after activation ------------------------------------------------------------
def test_1_a_version_written_without_activation_prunes_nothing(small_model, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(small_model, model)
    _more_versions(model, 1)  # v0001, v0002 (current)
    v1 = load_model(model)
    write_version(model, dict(v1.manifest), v1.bank, (v1.path / "backbone.onnx").read_bytes(), keep=2,
                  activate=False)
    assert list_versions(model) == ["v0001", "v0002", "v0003"] and current_version(model) == "v0002"


def test_1_a_failed_recalibration_keeps_every_rollback_version(small_model, bottle, tmp_path):
    prefix, model, cfg = recalibration_station(tmp_path, small_model, bottle, SECRET, keep_versions=2)
    _more_versions(model, 1)  # v0001, v0002 (current): the store is at keep_versions
    images = tmp_path / "images"
    images.mkdir()
    for p in sorted((bottle / "train/good").glob("*.png"))[20:26]:
        shutil.copy(p, images)
    sub = Collector(prefix)
    p = start_daemon(cfg)
    try:
        assert sub.wait_for(lambda: len(sub.of("cam/result")) >= 1, 30), _why(sub, p)
        # good images as "known-bad": validation must fail, so nothing is activated
        _send(sub, prefix, action="recalibrate", images=str(images), bad_images=str(images), id="doomed")
        out = _outcome(sub, p, "doomed")
        assert out["state"] == "failed" and "known-bad" in out["message"], out
        assert list_versions(model) == ["v0001", "v0002"] and current_version(model) == "v0002"
        # and an activation still prunes to keep_versions, in the daemon
        _send(sub, prefix, action="threshold", scale=1.1, id="thr")
        assert _outcome(sub, p, "thr")["state"] == "active"
    finally:
        p.stop()
        sub.close()
    assert list_versions(model) == ["v0002", "v0003"] and current_version(model) == "v0003"


# -- 2: the CLI takes only its own outcome -------------------------------------------------------
def test_2_cli_waits_for_its_own_outcome_through_unsigned_garbage(small_model, bottle, tmp_path):
    prefix, model, cfg = recalibration_station(tmp_path, small_model, bottle, SECRET)
    sub = Collector(prefix)
    p = start_daemon(cfg)
    stop = threading.Event()

    def forge():  # anyone allowed to publish on the command topic; no secret, no id
        while not stop.is_set():
            sub.c.publish(f"{prefix}/cam/recalibrate", b"hello", qos=1)
            time.sleep(0.02)

    try:
        assert sub.wait_for(lambda: len(sub.of("cam/result")) >= 1, 30), _why(sub, p)
        t = threading.Thread(target=forge, daemon=True)
        t.start()
        r = subprocess.run([sys.executable, "-m", "patchcore_edge", "recalibrate", "--config", str(cfg),
                            "--camera", "cam", "--threshold-scale", "1.1", "--timeout", "60"], cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
        stop.set()
        t.join()
        assert r.returncode == 0, r.stdout + r.stderr + _why(sub, p)
        final = json.loads(r.stdout.splitlines()[-1])
        assert final["state"] == "active" and final["version"] == "v0002" and "rejected" not in final, final
        assert all("rejected" not in json.loads(line) for line in r.stdout.splitlines())
        assert any("rejected" in m and "id" not in m["rejected"] for m in sub.json_of("cam/recalibrate/status"))
    finally:
        stop.set()
        p.stop()
        sub.close()
    assert current_version(model) == "v0002"  # applied once


# -- 3: used ids held by the current window --------------------------------------------------------
def test_3_restart_with_a_larger_max_age_does_not_reopen_a_used_id(tmp_path):
    now = time.time()
    SeenIds(tmp_path).claim("rt-7", now - 18, max_age_s=18.5)  # accepted under a small window
    time.sleep(0.6)  # the old window has passed; the command's ts is 18.6 s old
    with pytest.raises(CommandError, match="already used"):
        SeenIds(tmp_path).claim("rt-7", now - 18, max_age_s=600)  # restarted with a larger window


def test_3_a_clock_stepped_forward_and_back_does_not_reopen_a_used_id(tmp_path, monkeypatch):
    import edge.nonces as nonces

    seen = SeenIds(tmp_path)
    now = time.time()
    seen.claim("a", now, max_age_s=60)
    monkeypatch.setattr(nonces.time, "time", lambda: now + 3600)  # NTP steps the clock forward
    seen.claim("b", now + 3600, max_age_s=60)
    monkeypatch.setattr(nonces.time, "time", lambda: now + 1)  # ... and back
    with pytest.raises(CommandError, match="already used"):
        seen.claim("a", now, max_age_s=60)
    with pytest.raises(CommandError, match="already used"):
        SeenIds(tmp_path).claim("a", now, max_age_s=60)  # and after a restart


def test_3_the_store_is_capped_and_evicts_only_ids_outside_the_window(tmp_path, monkeypatch):
    import edge.nonces as nonces

    seen = SeenIds(tmp_path)
    now = time.time()
    seen.seen = {f"old{i}": now - 1000 - i for i in range(MAX_IDS)}  # full, all outside a 60 s window
    seen.claim("new", now, max_age_s=60)
    assert len(seen.seen) == MAX_IDS and "new" in seen.seen and f"old{MAX_IDS - 1}" not in seen.seen
    seen.seen = {f"live{i}": now for i in range(MAX_IDS)}  # full, all inside it: refused, none forgotten
    with pytest.raises(CommandError, match="commands within max_age_s"):
        seen.claim("one-more", now, max_age_s=60)
    monkeypatch.setattr(nonces.time, "time", lambda: now + 120)
    seen.claim("reused-later", now + 120, max_age_s=60)  # the window passed: the oldest may go


# -- 8: a bounded threshold change ---------------------------------------------------------------
@pytest.mark.parametrize("value,scale", [(2400.0, None), (None, 1e-300), (None, 4.5), (5.9, None), (None, 1e300)])
def test_8_a_threshold_change_beyond_4x_either_way_is_refused(value, scale):
    with pytest.raises(ModelError, match="one change may scale it by 0.25 to 4"):
        new_threshold(24.0, value, scale)


def test_8_threshold_changes_within_4x_pass():
    assert new_threshold(24.0, 96.0, None) == 96.0 and new_threshold(24.0, None, 0.25) == 6.0


def test_8_offline_cli_refuses_a_typo_and_writes_nothing(small_model, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(small_model, model)
    t0 = load_model(model).threshold
    r = subprocess.run([sys.executable, "-m", "patchcore_edge", "threshold", "--model", str(model),
                        "--value", str(t0 * 100)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "0.25 to 4" in r.stderr, r.stderr
    assert list_versions(model) == ["v0001"]


# -- 8 and 11 on a running daemon: bounded threshold command, versions past v9999 ---------------
def test_8_11_daemon_refuses_a_blinding_threshold_and_orders_versions_past_v9999(small_model, bottle, tmp_path):
    prefix, model, cfg = recalibration_station(tmp_path, small_model, bottle, SECRET, keep_versions=3)
    vdir = model / VERSIONS
    for n in (9998, 9999, 10000, 10001):
        _copy_version(vdir, "v0001", f"v{n}")
    shutil.rmtree(vdir / "v0001")
    (model / CURRENT).write_text("v10000\n")
    assert list_versions(model) == ["v9998", "v9999", "v10000", "v10001"]
    sub = Collector(prefix)
    p = start_daemon(cfg)
    try:
        assert sub.wait_for(lambda: len(sub.of("cam/result")) >= 1, 30), _why(sub, p)
        for i, fields in enumerate([{"scale": 1e-300}, {"value": 1e308}]):
            _send(sub, prefix, action="threshold", id=f"blind{i}", **fields)
            out = _outcome(sub, p, f"blind{i}")
            assert out["state"] == "failed" and "0.25 to 4" in out["message"], out
        assert current_version(model) == "v10000" and len(list_versions(model)) == 4
        _send(sub, prefix, action="rollback", id="back")  # the one before v10000 is v9999
        out = _outcome(sub, p, "back")
        assert out["state"] == "active" and out["version"] == "v9999", out
        _send(sub, prefix, action="rollback", version="v10001", id="fwd")  # v10000+ can be named
        out = _outcome(sub, p, "fwd")
        assert out["state"] == "active" and out["version"] == "v10001", out
        _send(sub, prefix, action="threshold", scale=1.1, id="thr")
        out = _outcome(sub, p, "thr")
        assert out["state"] == "active" and out["version"] == "v10002", out
    finally:
        p.stop()
        sub.close()
    assert list_versions(model) == ["v10000", "v10001", "v10002"]  # the newest three by number


def test_11_prune_and_offline_threshold_keep_the_newest_by_number(small_model, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(small_model, model)
    vdir = model / VERSIONS
    for n in (9998, 9999, 10000, 10001):
        _copy_version(vdir, "v0001", f"v{n}")
    shutil.rmtree(vdir / "v0001")
    (model / CURRENT).write_text("v10001\n")
    r = subprocess.run([sys.executable, "-m", "patchcore_edge", "threshold", "--model", str(model),
                        "--keep-versions", "2", "--scale", "1.01"], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert list_versions(model) == ["v10001", "v10002"] and current_version(model) == "v10002"
    prune(model, 1)
    assert list_versions(model) == ["v10002"]


def test_11_commands_may_name_v10000_and_later():
    body = encode({"action": "rollback", "id": "r", "version": "v10000"}, SECRET, "line1", "cam")
    assert parse(body, SECRET, "line1", "cam", 60, 100, 600).version == "v10000"
    body = encode({"action": "rollback", "id": "r", "version": "v123"}, SECRET, "line1", "cam")
    with pytest.raises(CommandError, match="version"):
        parse(body, SECRET, "line1", "cam", 60, 100, 600)


# -- red team 2 (/work/notes/redteam2.md): hostile values on the way to the calibrate child ------
def _rewrite_manifest(vdir, **changes) -> None:
    """Change manifest keys and re-sign its hash, as someone with write access to the model could."""
    import hashlib

    from edge.modeldir import MANIFEST_HASH

    m = json.loads((vdir / "manifest.json").read_text())
    m.update(changes)
    raw = json.dumps(m, indent=2).encode()
    (vdir / "manifest.json").write_bytes(raw)
    (vdir / MANIFEST_HASH).write_text(hashlib.sha256(raw).hexdigest() + "\n")


@pytest.mark.parametrize("fit", ["junk", [1, 2], 7, True])
def test_rt2_an_odd_threshold_fit_is_ignored_not_a_crash(fit):
    from types import SimpleNamespace

    from edge.commands import Command
    from edge.recalibrate import Recalibrator

    r = Recalibrator.__new__(Recalibrator)
    r.cfg = SimpleNamespace(max_false_reject=0.05)
    r.worker = SimpleNamespace(cfg=SimpleNamespace(name="cam"))
    cmd = Command(v=2, station="s", camera="c", action="recalibrate", id="x", ts=time.time(), frames=3)
    assert r._threshold_args(cmd, {"threshold_fit": fit}) == []


def test_rt2_an_unreadable_known_bad_folder_is_named_not_called_a_full_disk():
    from edge.commands import Command
    from edge.recalibrate import RecalibrationFailed, Recalibrator

    cmd = Command(v=2, station="s", camera="c", action="recalibrate", id="x", ts=time.time(), frames=3,
                  bad_images="/" + "a" * 5000)  # ENAMETOOLONG: not "no such folder" to pathlib
    with pytest.raises(RecalibrationFailed, match=r"^bad_images: cannot read /a+\.\.\.: File name too long$"):
        Recalibrator._check_folders(cmd)


def test_rt2_hostile_known_bad_folder_name_and_odd_threshold_fit_reach_a_clean_outcome(small_model, bottle,
                                                                                        tmp_path):
    """A folder named like an option, with '=' and a newline, stays one value for the build; a
    manifest whose threshold_fit is not a mapping falls back to the default rule."""
    prefix, model, cfg = recalibration_station(tmp_path, small_model, bottle, SECRET)
    _rewrite_manifest(model / "versions/v0001", threshold_fit="junk")
    bad = tmp_path / "-rf --force=x\n--reject-all-bad"
    bad.mkdir()
    for p in sorted((bottle / "test/broken_large").glob("*.png"))[:4]:
        shutil.copy(p, bad)
    sub = Collector(prefix)
    p = start_daemon(cfg)
    try:
        assert sub.wait_for(lambda: len(sub.of("cam/result")) >= 1, 30), _why(sub, p)
        _send(sub, prefix, action="recalibrate", frames=30, bad_images=str(bad), id="odd")
        out = _outcome(sub, p, "odd")
        assert "internal error" not in out["message"] and "usage" not in out["message"], out
        if out["state"] == "active":
            assert json.loads((model / "versions/v0002/manifest.json").read_text())["threshold_fit"]["bad_images"][
                "n"] == 4
        else:  # the build or validation refused it: the reason names the known-bad images
            assert out["state"] == "failed" and "bad" in out["message"] and current_version(model) == "v0001", out
    finally:
        p.stop()
        sub.close()
