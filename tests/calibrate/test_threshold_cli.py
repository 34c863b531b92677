"""calibrate's threshold options end to end: real bottle images, the real CLI in a subprocess."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

from edge.preprocess import list_images

ROOT = Path(__file__).resolve().parents[2]


def cli(*args):
    return subprocess.run([sys.executable, "-m", "patchcore_edge", "calibrate", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


def _copy(src: Path, dst: Path, n: int, prefix: str = "") -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for p in list_images(src)[:n]:
        shutil.copy(p, dst / f"{prefix}{p.name}")
    return dst


def test_bad_images_report_escapes_and_an_impossible_reject_all_is_refused(bottle, tmp_path):
    good = _copy(bottle / "train/good", tmp_path / "good", 10)
    bad = _copy(bottle / "test/broken_large", tmp_path / "bad", 3)
    yaml = tmp_path / "c.yaml"
    yaml.write_text("threshold: {target_false_reject: 0.02}\ncoreset_ratio: 0.05\n")
    r = cli("--config", yaml, "--images", good, "--output", tmp_path / "m", "--bad-images", bad)
    assert r.returncode == 0, r.stderr
    assert "target 2.0% false rejects" in r.stdout and "over 10 cross-scored good images" in r.stdout
    assert "bad images 0 of 3 would pass" in r.stdout  # broken bottles score far above good ones
    man = json.loads(next((tmp_path / "m/versions").glob("v*/manifest.json")).read_text())
    fit = man["threshold_fit"]
    assert fit["target_false_reject"] == 0.02 and fit["bad_images"]["n"] == 3 and fit["bad_images"]["escapes"] == 0
    assert len(fit["cross_scores"]) == 10 and man["threshold"] == fit["value"]

    # "known-bad" images that are really good parts: rejecting them all would reject most good
    # parts, so calibrate refuses in one line and writes no version
    fake = _copy(bottle / "test/good", tmp_path / "fake", 2, prefix="good_")
    _copy(bottle / "test/broken_large", fake, 1)
    r = cli("--images", good, "--output", tmp_path / "m2", "--coreset-ratio", "0.05", "--bad-images", fake,
            "--reject-all-bad", "--max-false-reject", "0.05")
    last = r.stderr.strip().splitlines()[-1]  # after the progress bars
    assert r.returncode == 2 and "Traceback" not in r.stderr and last.startswith("patchcore-edge calibrate: error: ")
    assert "rejecting all 3 known-bad images" in last and "over the 5.0% budget" in last
    assert not (tmp_path / "m2/CURRENT").exists()

    r = cli("--images", good, "--output", tmp_path / "m3", "--reject-all-bad")
    assert r.returncode == 2 and "reject-all-bad needs --bad-images" in r.stderr
    r = cli("--images", good, "--output", tmp_path / "m3", "--target-false-reject", "0.7")
    assert r.returncode == 2 and "--target-false-reject" in r.stderr
