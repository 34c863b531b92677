"""Station commands against a running daemon and the real Mosquitto: refusals with reasons,
replays, a secret missing at start, signing in another language, cancel, the threshold."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

from edge.commands import encode, sign
from edge.modeldir import current_version, list_versions, load_model

from .mqtt_helpers import ROOT, Collector, DaemonProcess, new_prefix, start_daemon, write_config
from .test_recalibrate import SECRET, _send, _states, _why


@pytest.fixture()
def station(small_model, bottle, tmp_path):
    """Two cameras on their own model copies; the secret file left 0644 (the daemon warns)."""
    prefix = new_prefix()
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET)
    secret.chmod(0o644)
    cams = []
    for name in ("cam", "twin"):
        shutil.copytree(small_model, tmp_path / name)
        cams.append({"name": name, "source": str(bottle / "train/good"), "model": str(tmp_path / name),
                     "fps": 15, "loop": True, "heatmap": {"mode": "off"}})
    cfg = write_config(tmp_path / "d.yaml", prefix, cams,
                       recalibration={"secret_file": str(secret), "threads": 1})
    sub = Collector(prefix)
    yield prefix, tmp_path, cfg, sub
    sub.close()


def _status(sub, camera="cam") -> list[dict]:
    return sub.json_of(f"{camera}/recalibrate/status")


def _rejections(sub, camera="cam") -> list[dict]:
    return [m["rejected"] for m in _status(sub, camera) if "rejected" in m]


def _refused(sub, prefix, payload: bytes, p, camera="cam") -> dict:
    """Publish a raw payload; the rejection it gets (every refusal is answered)."""
    n = len(_rejections(sub, camera))
    sub.c.publish(f"{prefix}/{camera}/recalibrate", payload, qos=1)
    assert sub.wait_for(lambda: len(_rejections(sub, camera)) > n, 20), _why(sub, p)
    return _rejections(sub, camera)[-1]


def _last(sub, camera="cam") -> dict:
    msgs = _status(sub, camera)
    return msgs[-1] if msgs else {}


def _wait_outcome(sub, p, cmd_id, states=("active", "failed", "cancelled"), camera="cam", timeout=60) -> dict:
    def done():
        return any(m.get("id") == cmd_id and m.get("state") in states for m in _status(sub, camera))
    assert sub.wait_for(done, timeout), _why(sub, p)
    return [m for m in _status(sub, camera) if m.get("id") == cmd_id and m.get("state") in states][-1]


def _signed_body(body: str) -> bytes:
    return sign(body.encode(), SECRET).encode() + b"\n" + body.encode()


def test_replays_other_cameras_and_malformed_commands_are_refused_with_a_reason(station):
    prefix, tmp, cfg, sub = station
    p = start_daemon(cfg)
    try:
        assert sub.wait_for(lambda: len(sub.of("cam/result")) >= 2 and len(sub.of("twin/result")) >= 2, 30)
        once = encode({"action": "threshold", "id": "once", "scale": 1.5}, SECRET, prefix, "cam")
        sub.c.publish(f"{prefix}/cam/recalibrate", once, qos=1)
        assert _wait_outcome(sub, p, "once")["state"] == "active"
        assert current_version(tmp / "cam") == "v0002"

        rej = _refused(sub, prefix, once, p)  # the same signed bytes again
        assert rej["id"] == "once" and "already used" in rej["reason"]

        for_cam = encode({"action": "rollback", "id": "x-cam"}, SECRET, prefix, "cam")
        rej = _refused(sub, prefix, for_cam, p, camera="twin")  # signed for cam, sent to twin
        assert "signed for station" in rej["reason"] and "camera 'cam'" in rej["reason"]
        assert current_version(tmp / "twin") == "v0001"

        nan = f'{{"v":2,"station":"{prefix}","camera":"cam","action":"rollback","id":"nan","ts":NaN}}'
        assert "finite" in _refused(sub, prefix, _signed_body(nan), p)["reason"]
        assert current_version(tmp / "cam") == "v0002"  # the NaN-dated rollback did not run

        t = time.monotonic()
        rej = _refused(sub, prefix, b"0" * 64 + b"\n" + b"[" * 2_000_000, p)
        assert "the limit is 16384" in rej["reason"]
        print(f"2 MB payload refused after {time.monotonic() - t:.3f} s (round trip through the broker)")

        body = f'{{"v":2,"station":"{prefix}","camera":"cam","action":"rollback","id":"deep","ts":{time.time()},"x":'
        deep = body + "[" * 4000 + "]" * 4000 + "}"
        assert "nested too deeply" in _refused(sub, prefix, _signed_body(deep), p)["reason"]
        assert "hex digits" in _refused(sub, prefix, "é".encode() * 32 + b"\n{}", p)["reason"]

        long = encode({"action": "recalibrate", "id": "long", "frames": 3, "interval_s": 3600}, SECRET, prefix, "cam")
        assert "max_collect_s" in _refused(sub, prefix, long, p)["reason"]
        idle = encode({"action": "cancel", "id": "idle"}, SECRET, prefix, "cam")
        assert "nothing to cancel" in _refused(sub, prefix, idle, p)["reason"]

        n = len(sub.of("cam/result"))
        assert sub.wait_for(lambda: len(sub.of("cam/result")) >= n + 2, 30)  # inspection went on throughout
    finally:
        _, err = p.stop()
    assert "group/others can read it" in err and "chmod 600" in err

    n = len(_status(sub))
    p = start_daemon(cfg)  # the used ids survive a restart (still inside max_age_s)
    try:
        assert sub.wait_for(lambda: len(_status(sub)) > n, 30)  # its start status: it has subscribed
        rej = _refused(sub, prefix, once, p)
        assert rej["id"] == "once" and "already used" in rej["reason"]
        assert current_version(tmp / "cam") == "v0002"
    finally:
        p.stop()


def test_missing_secret_is_reported_at_start_and_inspection_runs(small_model, bottle, tmp_path):
    prefix = new_prefix()
    shutil.copytree(small_model, tmp_path / "model")
    cam = {"name": "cam", "source": str(bottle / "train/good"), "model": str(tmp_path / "model"), "fps": 15,
           "loop": True, "heatmap": {"mode": "off"}}
    cfg = write_config(tmp_path / "d.yaml", prefix, [cam],
                       recalibration={"secret_file": str(tmp_path / "no-such-secret")})
    sub = Collector(prefix)
    p = start_daemon(cfg)
    try:
        assert sub.wait_for(lambda: len(sub.of("cam/result")) >= 2 and sub.of("stats") and _status(sub), 30)
        status = _status(sub)[-1]
        assert status["state"] == "disabled" and "no-such-secret" in status["message"]
        stats = sub.json_of("stats")[-1]["recalibration"]
        assert stats["enabled"] is False and "no-such-secret" in stats["reason"]
        _, err = p.output()
        lines = [ln for ln in err.splitlines() if "recalibration is disabled" in ln]
        assert len(lines) == 1 and "no-such-secret" in lines[0]  # at start, before any command
        cmd = encode({"action": "rollback", "id": "r"}, SECRET, prefix, "cam")
        rej = _refused(sub, prefix, cmd, p)
        assert "no-such-secret" in rej["reason"]
    finally:
        p.stop()
        sub.close()


def _readme_block(marker: str) -> str:
    text = (ROOT / "README.md").read_text()
    m = re.search(rf"<!-- {marker} -->\s*```sh\n(.*?)```", text, re.S)
    assert m, f"README.md has no ```sh block after <!-- {marker} -->"
    return m.group(1)


def test_commands_signed_by_openssl_and_node_as_in_the_readme_are_accepted(station):
    prefix, tmp, cfg, sub = station
    if not (shutil.which("openssl") and shutil.which("node") and shutil.which("mosquitto_pub")):
        pytest.skip("openssl, node and mosquitto_pub are needed")
    env = {**os.environ, "PREFIX": prefix, "CAMERA": "cam", "BROKER": "127.0.0.1", "SECRET_FILE": str(tmp / "secret")}
    p = start_daemon(cfg)
    try:
        assert sub.wait_for(lambda: len(sub.of("cam/result")) >= 1, 30)
        t0 = load_model(tmp / "cam").threshold
        for marker, version in (("sign-with-openssl", "v0002"), ("sign-with-node", "v0003")):
            r = subprocess.run(["bash", "-euo", "pipefail", "-c", _readme_block(marker)], env=env,
                               capture_output=True, text=True, timeout=30)
            assert r.returncode == 0, r.stderr
            assert sub.wait_for(lambda: _last(sub).get("version") == version and _last(sub).get("state") == "active",
                                30), _why(sub, p)
        assert not _rejections(sub)
        assert load_model(tmp / "cam").threshold == pytest.approx(t0 * 0.9 * 0.9)
    finally:
        p.stop()


def test_planted_cli_in_the_working_directory_does_not_run(station, bottle):
    prefix, tmp, cfg, sub = station
    plant = tmp / "plant"
    marker = tmp / "planted-code-ran"
    (plant / "patchcore_edge").mkdir(parents=True)
    (plant / "patchcore_edge" / "__init__.py").write_text("")
    (plant / "patchcore_edge" / "__main__.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    images = tmp / "images"
    images.mkdir()
    for f in sorted((bottle / "train/good").iterdir())[:10]:
        shutil.copy(f, images / f.name)
    # the daemon from the console script's entry point, in the planted folder (not `-m patchcore_edge`,
    # which would itself import the planted package)
    start = f"import sys; sys.path.insert(0, {str(ROOT)!r}); from patchcore_edge.main import main; sys.exit(main())"

    class Planted(DaemonProcess):
        def __init__(self):
            self._out, self._err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
            subprocess.Popen.__init__(self, [sys.executable, "-c", start, "run", "--config", str(cfg)], cwd=plant,
                                      stdout=self._out, stderr=self._err, text=True)

    p = Planted()
    try:
        assert sub.wait_for(lambda: len(sub.of("cam/result")) >= 1, 30), p.diagnose()
        _send(sub, prefix, action="recalibrate", images=str(images), id="plant")
        out = _wait_outcome(sub, p, "plant", timeout=180)
        assert out["state"] == "active", out
    finally:
        p.stop()
    assert not marker.exists(), "the calibration child ran ./patchcore_edge/__main__.py from the daemon's working directory"


def test_cancel_while_collecting_and_while_building(station):
    prefix, tmp, cfg, sub = station
    model = tmp / "cam"
    p = start_daemon(cfg)
    try:
        assert sub.wait_for(lambda: len(sub.of("cam/result")) >= 1, 30)
        _send(sub, prefix, action="recalibrate", frames=200, interval_s=0.5, id="slow")
        assert sub.wait_for(lambda: "collecting" in _states(sub), 30), _why(sub, p)
        _send(sub, prefix, action="rollback", id="busy")  # refused while it runs ...
        assert sub.wait_for(lambda: any(r.get("id") == "busy" for r in _rejections(sub)), 20)
        _send(sub, prefix, action="cancel", id="stop1")  # ... but a cancel is not
        out = _wait_outcome(sub, p, "slow", timeout=20)
        assert out["state"] == "cancelled" and out["cancel_id"] == "stop1" and out["version"] == "v0001"
        assert not (model / "incoming").exists()

        _send(sub, prefix, action="recalibrate", frames=12, id="build")
        assert sub.wait_for(lambda: _last(sub).get("state") == "building" and _last(sub).get("stage") != "starting",
                            60), _why(sub, p)
        _send(sub, prefix, action="cancel", id="stop2")
        out = _wait_outcome(sub, p, "build", timeout=20)
        assert out["state"] == "cancelled" and out["cancel_id"] == "stop2"
        assert sub.wait_for(lambda: not subprocess.run(["pgrep", "-P", str(p.pid)], capture_output=True).stdout, 10)
        assert list_versions(model) == ["v0001"] and current_version(model) == "v0001"
        assert not list((model / "versions").glob(".tmp-*")), "the killed build's temporary version was left"

        _send(sub, prefix, action="threshold", scale=1.1, id="after")  # the camera is free again
        assert _wait_outcome(sub, p, "after")["state"] == "active"
    finally:
        p.stop()


def _after(sub, topic_suffix: str, index: int) -> list[dict]:
    """Results received after the index-th message of the whole stream."""
    with sub.lock:
        msgs = list(sub.msgs)
    return [json.loads(pl) for t, pl, _ in msgs[index + 1:] if t == f"{sub.prefix}/{topic_suffix}"]


def _index_of_status(sub, cmd_id: str, state: str) -> int:
    with sub.lock:
        for i, (t, pl, _) in enumerate(sub.msgs):
            if t.endswith("/cam/recalibrate/status") and json.loads(pl).get("id") == cmd_id \
                    and json.loads(pl).get("state") == state:
                return i
    raise AssertionError(f"no {state} status for {cmd_id}")


def test_threshold_command_judges_the_next_frame_is_refused_unsigned_and_rolls_back(station):
    prefix, tmp, cfg, sub = station
    model = tmp / "cam"
    t0 = load_model(model).threshold
    p = start_daemon(cfg)
    try:
        assert sub.wait_for(lambda: len(sub.of("cam/result")) >= 3, 30)
        before = sub.json_of("cam/result")
        assert {r["threshold"] for r in before} == {round(t0, 5)} and "pass" in {r["verdict"] for r in before}

        forged = encode({"action": "threshold", "id": "forged", "scale": 0.01}, b"not-the-station-secret!", prefix,
                        "cam")
        assert "invalid hmac" in _refused(sub, prefix, forged, p)["reason"]
        assert current_version(model) == "v0001"

        r = subprocess.run([sys.executable, "-m", "patchcore_edge", "recalibrate", "--config", str(cfg),
                            "--camera", "cam", "--threshold-scale", "0.25", "--timeout", "60"], cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr + r.stdout + _why(sub, p)
        final = json.loads(r.stdout.splitlines()[-1])
        assert final["state"] == "active" and final["action"] == "threshold" and final["version"] == "v0002"
        assert final["threshold"] == round(t0 * 0.25, 5) and final["previous_threshold"] == round(t0, 5)
        at = _index_of_status(sub, final["id"], "active")
        assert sub.wait_for(lambda: len(_after(sub, "cam/result", at)) >= 4, 30)
        after = _after(sub, "cam/result", at)[1:]  # the first may have been in flight during the switch
        assert all(x["model_version"] == "v0002" and x["threshold"] == round(t0 * 0.25, 5) and x["verdict"] == "fail"
                   for x in after), after
        manifest = load_model(model).manifest
        assert manifest["threshold_change"]["from_version"] == "v0001"
        assert manifest["threshold_change"]["origin"] == f"command {final['id']}"
        assert manifest["files"] == load_model(model, version="v0001").manifest["files"]  # the same bank and graph

        _send(sub, prefix, action="rollback", id="back")
        assert _wait_outcome(sub, p, "back")["version"] == "v0001"
        at = _index_of_status(sub, "back", "active")
        assert sub.wait_for(lambda: len(_after(sub, "cam/result", at)) >= 4, 30)
        after = _after(sub, "cam/result", at)[1:]
        assert all(x["model_version"] == "v0001" and x["threshold"] == round(t0, 5) for x in after)
        assert "pass" in {x["verdict"] for x in after}
        _send(sub, prefix, action="rollback", id="gone", version="v0099")  # it said "no version to roll back to"
        out = _wait_outcome(sub, p, "gone")
        assert out["state"] == "failed" and "version v0099 does not exist" in out["message"], out
    finally:
        p.stop()


def test_threshold_cli_on_a_model_directory(small_model, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(small_model, model)
    t0 = load_model(model).threshold
    r = subprocess.run([sys.executable, "-m", "patchcore_edge", "threshold", "--model", str(model), "--scale", "0.5"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["version"] == "v0002" and out["previous_version"] == "v0001" and current_version(model) == "v0002"
    assert load_model(model).threshold == pytest.approx(t0 * 0.5)
    assert load_model(model, version="v0001").threshold == t0  # the old version is untouched, for rollback
    for bad in (["--value", "-3"], ["--value", "nan"], ["--scale", "inf"]):
        r = subprocess.run([sys.executable, "-m", "patchcore_edge", "threshold", "--model", str(model), *bad],
                           cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and "Traceback" not in r.stderr and "positive finite" in r.stderr, r.stderr
    assert list_versions(model) == ["v0001", "v0002"]


class Forger:
    """A bystander on the command topic: for every signed command it sees, it publishes an
    unsigned payload quoting the command's id (the daemon refuses it, naming that id) and a
    copy of the signed bytes (as a QoS 1 redelivery would)."""

    def __init__(self, prefix: str):
        import paho.mqtt.client as mqtt

        self.seen: set[str] = set()
        self.on = True
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"forger-{prefix[-8:]}")
        self.c.on_connect = lambda c, u, f, rc, p: c.subscribe(f"{prefix}/cam/recalibrate", qos=1)
        self.c.on_message = self._on
        self.c.connect("127.0.0.1", 1883)
        self.c.loop_start()

    def _on(self, c, u, m):
        if not self.on or m.payload[64:65] != b"\n":
            return
        cmd_id = json.loads(m.payload[65:]).get("id")
        if cmd_id in self.seen:
            return
        self.seen.add(cmd_id)
        c.publish(m.topic, b"x" + json.dumps({"id": cmd_id}).encode(), qos=1)
        c.publish(m.topic, m.payload, qos=1)

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()


def test_cli_takes_the_signed_outcome_not_a_forged_or_duplicate_refusal(station, bottle):
    # red team: a refusal of an unsigned payload quoting the CLI's id, or of a redelivered copy
    # ("already used"), ended the CLI with "failed" while its command went on and succeeded
    prefix, tmp, cfg, sub = station
    imgs = tmp / "five"
    imgs.mkdir()
    for f in sorted((bottle / "train/good").glob("*.png"))[:5]:
        (imgs / f.name).symlink_to(f)
    p = start_daemon(cfg)
    forger = Forger(prefix)
    try:
        assert sub.wait_for(lambda: len(sub.of("cam/result")) >= 2, 30)
        r = subprocess.run([sys.executable, "-m", "patchcore_edge", "recalibrate", "--config", str(cfg),
                            "--camera", "cam", "--images", str(imgs), "--timeout", "300"], cwd=ROOT,
                           capture_output=True, text=True, timeout=400)
        assert r.returncode == 0, r.stderr + r.stdout + _why(sub, p)
        final = json.loads(r.stdout.splitlines()[-1])
        assert final["state"] == "active" and final["version"] == "v0002", final
        assert list_versions(tmp / "cam") == ["v0001", "v0002"]  # applied once, not twice
        mine = [x for x in _rejections(sub) if x.get("id") == final["id"]]
        assert {"authenticated": False} in [{"authenticated": x["authenticated"]} for x in mine], mine
        assert any(x.get("replay") and x["authenticated"] for x in mine), mine
        # 5 images are fewer than 1 / validation_fraction: one is still held out and judged
        training = load_model(tmp / "cam").manifest["training"]["images"]
        assert training == 4, training
        # a threshold change publishes `accepted` at once, so the forged refusal is moot there too
        r = subprocess.run([sys.executable, "-m", "patchcore_edge", "recalibrate", "--config", str(cfg),
                            "--camera", "cam", "--threshold-scale", "1.1", "--timeout", "60"], cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and json.loads(r.stdout.splitlines()[-1])["state"] == "active", r.stdout + r.stderr
        assert '"accepted"' in r.stdout and list_versions(tmp / "cam")[-1] == "v0003"
        # our own command signed with a wrong secret: its "invalid hmac" is said, even within a
        # timeout shorter than the 10 s grace (it said "the daemon may be down")
        forger.on = False
        wrong = tmp / "wrong-secret"
        wrong.write_bytes(b"not-the-station-secret-0123456789")
        wrong.chmod(0o600)
        cfg2 = tmp / "wrong.yaml"
        cfg2.write_text(cfg.read_text().replace(str(tmp / "secret"), str(wrong)))
        r = subprocess.run([sys.executable, "-m", "patchcore_edge", "recalibrate", "--config", str(cfg2),
                            "--camera", "cam", "--threshold-scale", "1.1", "--timeout", "4"], cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 1 and "invalid hmac" in r.stdout and "may be down" not in r.stderr, r.stdout + r.stderr
        assert list_versions(tmp / "cam")[-1] == "v0003"
    finally:
        forger.close()
        p.stop()


def test_commands_for_a_camera_refused_at_start_are_answered(small_model, bottle, tmp_path):
    # red team: a camera whose model was refused had no command handler: no answer at all
    prefix = new_prefix()
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET)
    secret.chmod(0o600)
    broken = tmp_path / "broken"
    shutil.copytree(small_model, broken)
    (broken / "versions" / "v0001" / "manifest.json").write_text("{not json")
    cams = [{"name": "cam", "source": str(bottle / "train/good"), "model": str(small_model), "fps": 5, "loop": True,
             "heatmap": {"mode": "off"}},
            {"name": "broken", "source": str(bottle / "train/good"), "model": str(broken), "fps": 5}]
    cfg = write_config(tmp_path / "d.yaml", prefix, cams, recalibration={"secret_file": str(secret)})
    sub = Collector(prefix)
    p = start_daemon(cfg)
    try:
        assert sub.wait_for(lambda: len(sub.of("cam/result")) >= 1, 30), _why(sub, p)
        rej = _refused(sub, prefix, encode({"action": "rollback", "id": "rb-1"}, SECRET, prefix, "broken"), p,
                       camera="broken")
        assert rej["id"] == "rb-1" and rej["authenticated"] is True and "not running" in rej["reason"], rej
        assert "restart the daemon" in rej["reason"]
        rej = _refused(sub, prefix, b"garbage", p, camera="broken")
        assert rej["authenticated"] is False and "hmac" in rej["reason"], rej
    finally:
        p.stop()
        sub.close()
