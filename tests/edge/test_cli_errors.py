"""The edge commands' user errors: one line on stderr, exit code 2, said before any work starts
(the real CLI in a subprocess, real bottle images, the real Mosquitto for recalibrate)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time

import cv2
import pytest

from ..cli_helpers import one_line_error, run_cli
from .mqtt_helpers import ROOT, Collector, recalibration_station


cli = run_cli


def test_infer_refuses_a_file_as_output_dir_and_a_tiny_heatmap_before_loading(small_model, bottle, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    good = bottle / "test/good/000.png"
    one_line_error(cli("infer", "--model", small_model, good, "--output-dir", afile), "--output-dir", "is a file")
    one_line_error(cli("infer", "--model", small_model, good, "--output-dir", afile / "sub"), "is a file")
    for size in (0, -5, 31):
        one_line_error(cli("infer", "--model", small_model, good, "--output-dir", tmp_path / "o", "--heatmap-size",
                           size), "--heatmap-size must be at least 32")
    assert not (tmp_path / "o").exists()


def test_infer_on_a_folder_without_images_is_an_error(small_model, tmp_path):
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)  # only a subfolder: not searched
    r = cli("infer", "--model", small_model, empty)
    one_line_error(r, "no image files", str(empty))
    assert r.stdout == ""


def test_infer_heatmap_names_are_what_help_says(small_model, bottle, tmp_path):
    r = cli("infer", "--help")
    assert "<parent folder>_<stem>_heatmap.jpg" in " ".join(r.stdout.split()), r.stdout
    r = cli("infer", "--model", small_model, bottle / "test/broken_large/000.png", "--output-dir", tmp_path,
            "--heatmap-size", 64)
    assert r.returncode == 0, r.stderr
    img = cv2.imread(str(tmp_path / "broken_large_000_heatmap.jpg"))
    assert img is not None and max(img.shape[:2]) == 64


def test_verbose_after_the_command_and_without_pil_chatter(small_model, bottle):
    r = cli("infer", "--model", small_model, bottle / "test/good/000.png", "-v")
    assert r.returncode == 0, r.stderr
    assert " DEBUG " in r.stderr, r.stderr[-2000:]
    assert " PIL." not in r.stderr, [line for line in r.stderr.splitlines() if " PIL." in line][:3]


def test_status_recalibrate_and_threshold_refuse_bad_numbers(small_model, tmp_path):
    nowhere = tmp_path / "nope.yaml"  # the numbers are checked before the config is read
    one_line_error(cli("status", "--config", nowhere, "--wait", -1), "--wait must be")
    one_line_error(cli("status", "--config", nowhere, "--window", "nan"), "--window must be")
    base = ("recalibrate", "--config", nowhere, "--camera", "cam")
    for t in (0, -1):
        one_line_error(cli(*base, "--frames", 10, "--timeout", t), "--timeout must be")
    for n in (0, 2):
        one_line_error(cli(*base, "--frames", n), "--frames must be at least 3")
    one_line_error(cli(*base, "--frames", 10, "--interval", -1), "--interval must be")
    model = tmp_path / "m"
    shutil.copytree(small_model, model)
    before = sorted(p.name for p in (model / "versions").iterdir())
    for k in (0, 1, 101):
        one_line_error(cli("threshold", "--model", model, "--scale", 0.9, "--keep-versions", k),
                       "--keep-versions must be 2 to 100")
    assert sorted(p.name for p in (model / "versions").iterdir()) == before


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_recalibrate_clears_its_retained_online(small_model, bottle, tmp_path, sig):
    """No daemon: the CLI waits; interrupted, it must not leave <prefix>/cli/<id>/available
    `online` retained on the broker (it stayed there forever)."""
    prefix, _, cfg = recalibration_station(tmp_path, small_model, bottle, b"0123456789abcdef-cli-secret")
    watch = Collector(prefix)
    try:
        p = subprocess.Popen([sys.executable, "-m", "patchcore_edge", "recalibrate", "--config", str(cfg),
                              "--camera", "cam", "--frames", "10", "--timeout", "60"], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        online = lambda: any(t.endswith("/available") and "/cli/" in t and pl == b"online"  # noqa: E731
                             for t, pl, _ in watch.msgs)
        assert watch.wait_for(online, 30), p.stderr.read() if p.poll() is not None else "no online"
        time.sleep(1.0)  # the command is out; the CLI waits for an outcome that never comes
        p.send_signal(sig)
        _, err = p.communicate(timeout=30)
    finally:
        watch.close()
    assert p.returncode == 2 and "Traceback" not in err, err
    last = err.strip().splitlines()[-1]  # after the INFO lines of the MQTT link
    assert last.startswith("patchcore-edge recalibrate: error: interrupted") and "may still run" in last, err
    fresh = Collector(prefix)  # what a newcomer gets: the retained messages only
    try:
        time.sleep(1.0)
        left = [(t, pl) for t, pl, retained in fresh.msgs if retained and t.endswith("/available") and pl]
    finally:
        fresh.close()
    assert not left, left
