"""configs/mosquitto-limits.conf on a real Mosquitto: an oversize command never reaches a
subscriber (the publisher is disconnected), while the largest heatmap the README promises
(420 KB: 900 px at quality 100) still does."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(shutil.which("mosquitto") is None, reason="needs mosquitto")
def test_the_shipped_limit_stops_oversize_commands_and_passes_heatmaps(tmp_path):
    port = _free_port()
    conf = tmp_path / "m.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n"
                    + (ROOT / "configs/mosquitto-limits.conf").read_text())
    broker = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        got, subscribed = [], threading.Event()
        sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"t-{uuid.uuid4().hex[:8]}")
        sub.on_connect = lambda c, u, f, rc, p: c.subscribe("st/#", qos=1)
        sub.on_subscribe = lambda *a: subscribed.set()
        sub.on_message = lambda c, u, m: got.append((m.topic, len(m.payload)))
        end = time.monotonic() + 10
        while True:
            try:
                sub.connect("127.0.0.1", port)
                break
            except OSError:
                assert time.monotonic() < end and broker.poll() is None, broker.stderr.read()
                time.sleep(0.1)
        sub.loop_start()
        assert subscribed.wait(10)
        for topic, size in (("st/cam/recalibrate", 2_000_000), ("st/cam/heatmap", 420_000)):
            pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"p-{uuid.uuid4().hex[:8]}")
            pub.connect("127.0.0.1", port)
            pub.loop_start()
            pub.publish(topic, b"a" * size, qos=0)
            time.sleep(1.0)
            pub.loop_stop()
            pub.disconnect()
        time.sleep(1.0)
        sub.loop_stop()
        sub.disconnect()
        assert got == [("st/cam/heatmap", 420_000)], got  # the 2 MB command never arrived
    finally:
        broker.terminate()
        broker.wait(10)
