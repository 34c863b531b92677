import json
import subprocess
import sys
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parents[2]


def cli(*args):
    return subprocess.run([sys.executable, "-m", "patchcore_edge", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


def test_infer_writes_json_lines_and_decodable_heatmaps(small_model, bottle, tmp_path):
    good, bad = bottle / "test/good/000.png", bottle / "test/broken_large/000.png"
    r = cli("infer", "--model", small_model, good, bad, "--output-dir", tmp_path)
    assert r.returncode == 0, r.stderr
    recs = [json.loads(line) for line in r.stdout.splitlines()]
    assert [x["verdict"] for x in recs] == ["pass", "fail"]
    assert set(recs[0]["timings_ms"]) == {"decode", "preprocess", "backbone", "knn", "map"}
    for rec in recs:
        img = cv2.imread(rec["heatmap"])
        assert img is not None and img.shape == (900, 900, 3)


def test_calibrate_errors_are_one_line(tmp_path):
    r = cli("calibrate", "--images", tmp_path / "missing", "--output", tmp_path / "m")
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "does not exist" in r.stderr
    r = cli("calibrate", "--images", tmp_path, "--output", tmp_path / "m", "--coreset-ratio", "0")
    assert r.returncode == 2 and "coreset" in r.stderr
    r = cli("infer", "--model", tmp_path / "nomodel", tmp_path)
    assert r.returncode == 2 and "does not exist" in r.stderr


def test_a_full_disk_is_a_one_line_error_and_leaves_no_partial_model(bottle, tmp_path, small_fs):
    images = tmp_path / "good"
    images.mkdir()
    for f in sorted((bottle / "train/good").glob("*.png"))[:4]:
        (images / f.name).write_bytes(f.read_bytes())
    disk = small_fs("disk", 64)  # far less than a model needs
    r = cli("calibrate", "--images", images, "--output", disk / "m")
    assert r.returncode == 2, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert "Traceback" not in r.stderr and "No space left on device" in last and "free space" in last, r.stderr
    versions = disk / "m" / "versions"
    assert not versions.exists() or not any(versions.iterdir()), "a half-written version was left"
    assert not (disk / "m" / "CURRENT").exists()
