"""Test helpers: a real MQTT subscriber that records everything (benchmarks/mqtt_collector.py), configs,
and a daemon in a subprocess."""

from __future__ import annotations

import getpass
import os
import socket
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import yaml

from benchmarks.mqtt_collector import Collector  # noqa: F401  (the tests' subscriber too)

ROOT = Path(__file__).resolve().parents[2]


def write_config(path: Path, prefix: str, cameras: list[dict], port: int = 1883, **extra) -> Path:
    cfg = {"mqtt": {"host": "127.0.0.1", "port": port, "prefix": prefix, "client_id": prefix},
           "stats_interval_s": 0.5, "cameras": cameras, **extra}
    path.write_text(yaml.safe_dump(cfg))
    return path


class DaemonProcess(subprocess.Popen):
    """The daemon in a subprocess, its stdout/stderr in temp files rather than pipes (a pipe
    nobody reads until the end can fill and block the daemon's logging)."""

    def __init__(self, config: Path, env: dict | None = None):
        self._out, self._err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
        super().__init__([sys.executable, "-m", "patchcore_edge", "run", "--config", str(config)], cwd=ROOT,
                         stdout=self._out, stderr=self._err, text=True, env={**os.environ, **(env or {})})

    def communicate(self, input=None, timeout=None):  # noqa: A002 (Popen's signature)
        self.wait(timeout)
        return self.output()

    def stop(self, timeout: float = 30) -> tuple[str, str]:
        """SIGTERM (as systemd stops it), wait, and return what it printed (stdout, stderr)."""
        if self.poll() is None:
            self.send_signal(signal.SIGTERM)
        return self.communicate(timeout=timeout)

    def output(self) -> tuple[str, str]:
        """What the daemon printed so far (stdout, stderr)."""
        texts = []
        for f in (self._out, self._err):
            f.flush()
            f.seek(0)
            texts.append(f.read())
        return texts[0], texts[1]

    def diagnose(self) -> str:
        """Thread stacks of the daemon and its children (SIGUSR1, faulthandler) and its log tail."""
        subprocess.run(["pkill", "-USR1", "-P", str(self.pid)])
        if self.poll() is None:
            self.send_signal(signal.SIGUSR1)
        time.sleep(1.0)
        return self.output()[1][-6000:]


def start_daemon(config: Path, env: dict | None = None) -> DaemonProcess:
    return DaemonProcess(config, env)


def new_prefix() -> str:
    return f"pct-{uuid.uuid4().hex[:8]}"


def recalibration_station(tmp_path: Path, small_model: Path, bottle: Path, secret: bytes, fps: float = 10,
                          **recalibration) -> tuple[str, Path, Path]:
    """The station the recalibration tests drive: a copy of the model, the command secret (0600),
    one camera looping the bottle training images, recalibration on with one build thread (plus
    any `recalibration` settings). Returns (prefix, model dir, config path)."""
    import shutil

    model = tmp_path / "model"
    shutil.copytree(small_model, model)
    (tmp_path / "secret").write_bytes(secret)
    (tmp_path / "secret").chmod(0o600)
    prefix = new_prefix()
    cam = {"name": "cam", "source": str(bottle / "train/good"), "model": str(model), "fps": fps, "loop": True,
           "heatmap": {"mode": "off"}}
    cfg = write_config(tmp_path / "d.yaml", prefix, [cam],
                       recalibration={"secret_file": str(tmp_path / "secret"), "threads": 1, **recalibration})
    return prefix, model, cfg


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_private_broker(port: int, tmp_path: Path, extra_conf: str = "") -> subprocess.Popen:
    """A Mosquitto of the test's own on 127.0.0.1:port (for kill/restart tests), once it listens.

    `user`: run as root, mosquitto would switch to the `mosquitto` user and could not write
    into the test's folder."""
    conf = tmp_path / "mosq.conf"
    conf.write_text(f"user {getpass.getuser()}\nlistener {port} 127.0.0.1\nallow_anonymous true\n{extra_conf}")
    b = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    end = time.monotonic() + 10
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return b
        except OSError:
            time.sleep(0.05)
    b.kill()
    raise RuntimeError("private mosquitto did not start")
