"""calibrate's and evaluate's user errors about paths: one line on stderr, exit code 2, said
before the images are read (they came as a traceback after the whole run); the real CLI."""

from __future__ import annotations

import time

from ..cli_helpers import one_line_error, run_cli


def cli(*args):
    t = time.monotonic()
    r = run_cli(*args)
    return r, time.monotonic() - t


def one_line_before_work(r, *words):
    r, _ = r
    one_line_error(r, *words)
    assert "features" not in r.stderr  # no progress bar: refused before the images were read


def test_calibrate_refuses_an_output_that_is_or_lies_under_a_file(bottle, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    good = bottle / "train/good"
    one_line_before_work(cli("calibrate", "--images", good, "--output", afile, "--force"),
                         f"--output {afile} is a file, not a folder")
    one_line_before_work(cli("calibrate", "--images", good, "--output", afile / "sub"),
                         f"{afile} is a file, not a folder")
    assert afile.read_text() == "x"


def test_calibrate_names_a_missing_or_wrong_weights_file(bottle, tmp_path):
    good = bottle / "train/good"
    one_line_before_work(cli("calibrate", "--backbone", "resnet18", "--weights", tmp_path / "nonexist.pth",
                             "--images", good, "--output", tmp_path / "m"),
                         f"weights file {tmp_path / 'nonexist.pth'} does not exist")
    png = bottle / "train/good/000.png"
    r, _ = cli("calibrate", "--backbone", "resnet18", "--weights", png, "--images", good, "--output", tmp_path / "m")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert f"weights file {png} is not a PyTorch state dict (.pth/.pt) or a safetensors file" in last, r.stderr
    assert "PNG" in last  # what it is instead
    assert not (tmp_path / "m").exists()


def test_evaluate_checks_its_outputs_before_evaluating(bottle, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    one_line_before_work(cli("evaluate", "--dataset", bottle, "--json", afile / "x.json"),
                         f"--json {afile / 'x.json'} cannot be written: {afile} is a file")
    one_line_before_work(cli("evaluate", "--dataset", bottle, "--json", tmp_path), "is a folder")
    one_line_before_work(cli("evaluate", "--dataset", bottle, "--output-dir", afile),
                         f"--output-dir {afile} is a file, not a folder")
