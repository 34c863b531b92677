"""Deployment: unit files verify, install is idempotent, status reads a live and a dead daemon."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from edge.install import install, render_unit

from .mqtt_helpers import ROOT, Collector, new_prefix, start_daemon, write_config


def test_rendered_unit_passes_systemd_analyze_verify(tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is needed for this test (apt-get install systemd)")
    exe = shutil.which("patchcore-edge") or sys.executable
    unit = tmp_path / "patchcore-edge.service"
    unit.write_text(render_unit(exe, "/etc/patchcore-edge/config.yaml", "root", "/var/lib/patchcore-edge"))
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    text = unit.read_text()
    for line in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "ProtectSystem=strict", "NoNewPrivileges=yes",
                 "PrivateTmp=yes", "DevicePolicy=closed", "LoadCredential=mqtt-password"):
        assert line in text


def test_install_is_idempotent_into_a_temp_root(tmp_path):
    first = install(tmp_path, "patchcore", "/opt/pe/bin/patchcore-edge")
    assert set(first.values()) == {"written"}
    cfg = tmp_path / "etc/patchcore-edge/config.yaml"
    cfg.write_text(cfg.read_text() + "# edited by the integrator\n")
    secret = (tmp_path / "etc/patchcore-edge/recalibration-secret").read_text()
    second = install(tmp_path, "patchcore", "/opt/pe/bin/patchcore-edge")
    assert set(second.values()) == {"kept"}
    assert cfg.read_text().endswith("# edited by the integrator\n")
    assert (tmp_path / "etc/patchcore-edge/recalibration-secret").read_text() == secret
    assert (tmp_path / "var/lib/patchcore-edge/models").is_dir()
    removed = install(tmp_path, "patchcore", "x", uninstall=True)
    assert list(removed.values()) == ["removed"] and cfg.exists()


def _status(cfg):
    return subprocess.run([sys.executable, "-m", "patchcore_edge", "status", "--config", str(cfg), "--wait", "1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_status_on_live_and_dead_daemon(small_model, bottle, tmp_path):
    prefix = new_prefix()
    sub = Collector(prefix)
    cam = {"name": "c1", "source": str(bottle / "test/good"), "model": str(small_model), "fps": 5, "loop": True}
    cfg = write_config(tmp_path / "d.yaml", prefix, [cam])
    p = start_daemon(cfg)
    try:
        assert sub.wait_for(lambda: len(sub.json_of("stats")) >= 2, 30)
        r = _status(cfg)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "healthy" in r.stdout and "c1" in r.stdout and "online" in r.stdout
    finally:
        p.stop()
        sub.close()
    r = _status(cfg)
    assert r.returncode == 1 and "daemon offline" in r.stdout.replace("not online", "offline")
    bad = write_config(tmp_path / "b.yaml", prefix, [cam], port=1)
    assert _status(bad).returncode == 2
