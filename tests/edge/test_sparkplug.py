"""Sparkplug B output and Prometheus metrics of the daemon, against the real Mosquitto.

Every Sparkplug message is decoded by tests/edge/sparkplug_host.py (an independent decoder);
/metrics is fetched over HTTP and parsed with prometheus_client.parser.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from edge.preprocess import list_images

from .mjpeg_camera import MjpegCamera
from .mqtt_helpers import Collector, free_port, new_prefix, start_daemon, start_private_broker, write_config
from .sparkplug_host import DataType, Host, command, metrics

pytest.importorskip("pysparkplug")


@pytest.fixture(scope="module")
def replay(bottle, tmp_path_factory):
    """3 good then 3 broken bottle test images, in that order."""
    d = tmp_path_factory.mktemp("spb-replay")
    paths = list_images(bottle / "test/good")[:3] + list_images(bottle / "test/broken_large")[:3]
    for i, p in enumerate(paths):
        shutil.copy(p, d / f"{i:02d}.png")
    return d


def _scrape(port: int) -> dict:
    """(name, frozenset(labels)) -> value of every sample on /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def _fails(host: Host, device: str) -> list:
    return [metrics(p)["Inspection/Fail"][1] for p in host.of("DDATA", device) if "Inspection/Fail" in metrics(p)]


def _verdicts(host: Host, device: str) -> list:
    """Fail values in arrival order, from DDATA and from DBIRTHs (a birth carries the last result)."""
    with host.lock:
        msgs = [p for k, d, p in host.msgs if d == device and k in ("DBIRTH", "DDATA")]
    return [m["Inspection/Fail"][1] for m in map(metrics, msgs) if m.get("Inspection/Fail", (0, None))[1] is not None]


def test_births_data_types_seq_commands_metrics_and_clean_stop(small_model, replay, tmp_path):
    prefix, port = new_prefix(), free_port()
    host, sub = Host(prefix, "station1"), Collector(prefix)
    cams = [{"name": "cam1", "source": str(replay), "model": str(small_model), "fps": 10},
            {"name": "trig", "source": str(replay), "model": str(small_model), "trigger": "mqtt", "loop": True}]
    cfg = write_config(tmp_path / "d.yaml", prefix, cams, sparkplug={"group_id": prefix, "edge_node_id": "station1"},
                       prometheus={"port": port})
    p = start_daemon(cfg)
    try:
        assert host.wait_for(lambda: len(host.of("DBIRTH")) >= 2, 60), p.diagnose()
        # the replay: six DDATA with the verdicts, then DDEATH when the folder has ended
        assert host.wait_for(lambda: len(_fails(host, "cam1")) >= 5 and host.of("DDEATH", "cam1"), 120), p.diagnose()
        assert sub.wait_for(lambda: len(sub.of("cam1/result")) == 6, 10)  # the JSON contract still runs
        assert _verdicts(host, "cam1")[-6:] == [False] * 3 + [True] * 3

        # malformed commands are logged and ignored; only a well-formed trigger inspects a frame
        host.dcmd("trig", b"\xff\x00 not protobuf")
        host.dcmd("trig", command("Device Control/Nope", DataType.Boolean, True))
        host.dcmd("trig", command("Device Control/Trigger", DataType.String, "yes"))
        host.dcmd("cam1", command("Device Control/Trigger", DataType.Boolean, True))  # not a trigger camera
        host.dcmd("ghost", command("Device Control/Trigger", DataType.Boolean, True))
        host.ncmd(b"garbage")
        host.ncmd(command("Node Control/Rebirth", DataType.Int64, 1))
        time.sleep(2.0)
        assert _fails(host, "trig") == [] and len(host.of("NBIRTH")) == 1 and p.poll() is None
        host.dcmd("trig", command("Device Control/Trigger", DataType.Boolean, True))
        assert host.wait_for(lambda: len(_fails(host, "trig")) == 1, 60), p.diagnose()

        host.ncmd(command("Node Control/Rebirth", DataType.Boolean, True))
        assert host.wait_for(lambda: len(host.of("NBIRTH")) == 2 and len(host.of("DBIRTH", "trig")) == 2, 30)
        assert len(host.of("DBIRTH", "cam1")) == 1  # an ended replay is not re-born

        m = _scrape(port)
        assert m[("patchcore_results_total", frozenset({"camera": "cam1", "verdict": "fail"}.items()))] == 3
        assert m[("patchcore_results_total", frozenset({"camera": "cam1", "verdict": "pass"}.items()))] == 3
        assert m[("patchcore_latency_seconds_count", frozenset({"camera": "cam1"}.items()))] == 6
        assert m[("patchcore_latency_seconds_count", frozenset({"camera": "trig"}.items()))] == 1
        assert m[("patchcore_broker_connected", frozenset())] == 1
        assert m[("patchcore_camera_up", frozenset({"camera": "trig"}.items()))] == 1
        assert m[("patchcore_camera_up", frozenset({"camera": "cam1"}.items()))] == 0  # ended
        assert m[("patchcore_frames_dropped_total", frozenset({"camera": "cam1"}.items()))] == 0
        assert any(k[0] == "patchcore_model_info" and {("camera", "cam1"), ("version", "v0001")} <= k[1] for k in m)
        recal = [v for k, v in m.items() if k[0] == "patchcore_recalibration_state" and ("camera", "cam1") in k[1]]
        assert recal == [1]  # one current state (idle, or disabled without a command secret)
        assert m[("patchcore_sparkplug_online", frozenset())] == 1
    finally:
        _, err = p.stop()
    assert p.returncode == 0, err
    assert host.wait_for(lambda: host.of("NDEATH"), 10)  # published on a clean stop (not a will)
    for line in ("not a Sparkplug B payload", "'Device Control/Nope': not writable",
                 "'Device Control/Trigger': expected a BOOLEAN", "no camera named 'ghost'",
                 "'Node Control/Rebirth': expected a BOOLEAN"):
        assert line in err, line
    host.check_session()
    birth = metrics(host.of("DBIRTH", "cam1")[0])
    assert birth["Inspection/Fail"][0] == "Boolean" and birth["Counters/Inspected"][0] == "UInt64"
    assert birth["Model/Version"][:2] == ("String", "v0001") and "Device Control/Trigger" not in birth
    assert metrics(host.of("DBIRTH", "trig")[0])["Device Control/Trigger"][:2] == ("Boolean", False)
    last = [m for m in map(metrics, host.of("DDATA", "cam1")) if "Counters/Inspected" in m][-1]
    assert last["Counters/Inspected"][1] == 6 and last["Counters/Failed"][1] == 3
    host.close()
    sub.close()


def test_primary_host_state_buffered_history_and_will_on_kill(small_model, replay, tmp_path):
    prefix = new_prefix()
    host_id = f"scada-{prefix}"
    host = Host(prefix, "n1")
    cams = [{"name": "cam", "source": str(replay), "model": str(small_model), "fps": 100, "loop": True,
             "heatmap": {"mode": "off"}}]
    cfg = write_config(tmp_path / "d.yaml", prefix, cams, sparkplug={"group_id": prefix, "edge_node_id": "n1",
                                                                    "primary_host_id": host_id})
    sub = Collector(prefix)
    p = start_daemon(cfg)
    try:
        # no birth while the primary host has not said it is online; results go on in JSON and
        # are kept for Sparkplug: more than 256, so the flush after the birth wraps seq
        assert sub.wait_for(lambda: len(sub.of("cam/result")) >= 260, 300), p.diagnose()
        assert host.msgs == []
        t0 = int(time.time() * 1000)
        host.state(host_id, True, t0)
        assert host.wait_for(lambda: host.of("NBIRTH") and len(host.of("DDATA")) >= 260, 30), p.diagnose()
        history = [metrics(d) for d in host.of("DDATA")[:260]]
        assert all(m["Inspection/Fail"][2] is True for m in history)  # kept results: history, in order
        ids = [m["Inspection/Frame Id"][1] for m in history]
        assert ids == list(range(ids[0], ids[0] + 260))
        assert [d.seq for d in host.of("DDATA")].count(0) >= 1  # 255 wrapped to 0
        # host goes offline: NDEATH; an older "online" is ignored; a newer one births again
        host.state(host_id, False, t0 + 10)
        assert host.wait_for(lambda: host.of("NDEATH"), 10)
        host.state(host_id, True, t0 + 5)
        # a timestamp far ahead of the clock is ignored (it made every real STATE after it "older")
        host.state(host_id, False, 99999999999999999999999)
        time.sleep(1.5)
        assert len(host.of("NBIRTH")) == 1
        host.state(host_id, True, t0 + 20)
        assert host.wait_for(lambda: len(host.of("NBIRTH")) == 2, 10)
        assert host.wait_for(lambda: host.msgs[-1][0] == "DDATA", 10)
        assert p.poll() is None
        p.send_signal(signal.SIGKILL)  # the broker delivers the NDEATH will
        p.wait(10)
        assert host.wait_for(lambda: len(host.of("NDEATH")) == 2, 10)
        p = start_daemon(cfg)  # same state dir: bdSeq goes on from the killed run's
        assert host.wait_for(lambda: len(host.of("NBIRTH")) == 3, 120), p.diagnose()
    finally:
        p.stop()
        host.c.publish(f"spBv1.0/STATE/{host_id}", b"", qos=1, retain=True).wait_for_publish(5)
    births = [metrics(b)["bdSeq"][1] for b in host.of("NBIRTH")]
    assert births[0] == births[1]  # a rebirth on the same connection
    assert metrics(host.of("NDEATH")[1])["bdSeq"][1] == births[1]  # the will of the killed daemon
    assert births[2] == (births[1] + 1) % 256
    host.check_session()
    host.close()
    sub.close()


def test_camera_lost_gives_ddeath_then_dbirth(small_model, bottle, tmp_path):
    prefix = new_prefix()
    host = Host(prefix, "n1")
    cam = MjpegCamera(list_images(bottle / "train/good")[:3], fps=10).start()
    cams = [{"name": "live", "source": cam.url, "model": str(small_model), "fps": 2, "stall_timeout_s": 1.0}]
    cfg = write_config(tmp_path / "d.yaml", prefix, cams, sparkplug={"group_id": prefix, "edge_node_id": "n1"})
    p = start_daemon(cfg)
    with cam:
        try:
            assert host.wait_for(lambda: len(_fails(host, "live")) >= 2, 120), p.diagnose()
            cam.stop()
            assert host.wait_for(lambda: host.of("DDEATH", "live"), 30), p.diagnose()
            cam.start()
            assert host.wait_for(lambda: len(host.of("DBIRTH", "live")) >= 2, 60), p.diagnose()
            n = len(_fails(host, "live"))
            assert host.wait_for(lambda: len(_fails(host, "live")) > n, 60)
        finally:
            p.stop()
    statuses = [metrics(b)["Camera/Status"][1] for b in host.of("DBIRTH", "live")]
    assert statuses[-1] == "online"
    host.check_session()
    host.close()


def _broker(port: int, tmp_path) -> subprocess.Popen:
    """A private Mosquitto without persistence: after a restart it holds no retained STATE."""
    return start_private_broker(port, tmp_path)


def test_broker_restart_rebirths_with_next_bdseq_then_history(small_model, replay, tmp_path):
    port = free_port()
    broker = _broker(port, tmp_path)
    prefix = new_prefix()
    host_id = f"scada-{prefix}"
    host = Host(prefix, "n1", port=port, host_id=host_id)  # a primary host: STATE online on every connect
    cams = [{"name": "cam", "source": str(replay), "model": str(small_model), "fps": 5, "loop": True}]
    cfg = write_config(tmp_path / "d.yaml", prefix, cams, port=port,
                       sparkplug={"group_id": prefix, "edge_node_id": "n1", "primary_host_id": host_id})
    p = start_daemon(cfg)
    try:
        assert host.wait_for(lambda: len(_fails(host, "cam")) >= 3, 120), p.diagnose()
        broker.send_signal(signal.SIGTERM)
        broker.wait(10)
        time.sleep(2.5)  # the camera keeps inspecting: results are kept for after the rebirth
        broker = _broker(port, tmp_path)
        assert host.wait_for(lambda: len(host.of("NBIRTH")) == 2 and host.of("DDATA")
                             and host.msgs[-1][0] == "DDATA", 60), p.diagnose()
        assert host.wait_for(lambda: any(metrics(d)["Inspection/Fail"][2] for d in host.of("DDATA")), 10)
    finally:
        p.stop()
        host.close()
        broker.terminate()
        broker.wait(10)
    first, second = (metrics(b)["bdSeq"][1] for b in host.of("NBIRTH"))
    assert second == (first + 1) % 256  # a new connection: the next bdSeq
    after = [k for k, _, _ in host.msgs[[k for k, _, _ in host.msgs].index("NBIRTH", 1):]]
    assert after[:2] == ["NBIRTH", "DBIRTH"]  # births first, then the kept results
    kept = [metrics(d) for d in host.of("DDATA") if metrics(d).get("Inspection/Fail", (0, 0, False))[2]]
    ids = [m["Inspection/Frame Id"][1] for m in kept]
    assert ids == sorted(ids) and len(ids) >= 3
    host.check_session()
