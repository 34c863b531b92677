"""scripts/ensure-mosquitto against real Mosquitto processes on private ports (never 1883)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from ..conftest import ROOT

SCRIPT = ROOT / "scripts/ensure-mosquitto"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


PROBE = "import socket, sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), 2).close(); sys.exit(7)"


def test_a_broker_started_for_a_command_is_stopped_when_it_ends():
    port = _free_port()
    r = subprocess.run([str(SCRIPT), sys.executable, "-c", PROBE, str(port)], env={**os.environ, "MQTT_PORT": str(port)},
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 7, r.stderr  # the command reached the broker; its exit status passes through
    assert "stopped the broker it started" in r.stderr
    assert not _listening(port)


def test_a_broker_already_listening_is_left_running():
    port = _free_port()
    broker = subprocess.Popen(["mosquitto", "-p", str(port)], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not _listening(port):
            assert time.monotonic() < deadline and broker.poll() is None, "test broker did not start"
            time.sleep(0.05)
        r = subprocess.run([str(SCRIPT), sys.executable, "-c", PROBE, str(port)],
                           env={**os.environ, "MQTT_PORT": str(port)}, capture_output=True, text=True, timeout=60)
        assert r.returncode == 7, r.stderr
        assert "started" not in r.stderr and broker.poll() is None and _listening(port)
    finally:
        broker.terminate()
        broker.wait(10)


def test_without_mosquitto_and_without_root_it_says_what_to_run():
    # a PATH with the tools the script needs and apt-get, but neither mosquitto nor sudo; in a
    # folder the unprivileged user can reach (pytest's tmp_path is root's 0700)
    with tempfile.TemporaryDirectory() as tmp:
        bin_dir = Path(tmp) / "bin"
        bin_dir.mkdir()
        Path(tmp).chmod(0o755)
        for tool in ("bash", "env", "id", "seq", "sleep", "apt-get"):
            os.symlink(shutil.which(tool), bin_dir / tool)
        r = _run_unprivileged(bin_dir)
    assert r.returncode == 1, r.stderr
    assert "mosquitto is not installed" in r.stderr and "  sudo apt-get install -y mosquitto\n" in r.stderr
    assert "Traceback" not in r.stderr and "line " not in r.stderr


def _run_unprivileged(bin_dir: Path) -> subprocess.CompletedProcess:
    cmd = ["env", f"PATH={bin_dir}", f"MQTT_PORT={_free_port()}", str(SCRIPT), "true"]
    if os.geteuid() == 0:  # as an unprivileged user, the case this message is for
        cmd = ["runuser", "-u", "nobody", "--", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)
