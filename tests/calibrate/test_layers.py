"""Feature stages as an option (--layers / YAML `layers`) and the bank-size floor, on real bottle images."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from calibrate.settings import load_settings
from edge.errors import ConfigError
from edge.inspector import Inspector
from edge.modeldir import load_model
from edge.preprocess import list_images, read_image

ROOT = Path(__file__).resolve().parents[2]


def cli(*args):
    return subprocess.run([sys.executable, "-m", "patchcore_edge", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


def test_three_stages_and_a_bank_floor_from_the_cli(bottle, tmp_path):
    imgs = tmp_path / "good"
    imgs.mkdir()
    for p in list_images(bottle / "train/good")[:3]:
        (imgs / p.name).write_bytes(p.read_bytes())
    r = cli("calibrate", "--images", imgs, "--output", tmp_path / "m", "--layers", "4,8,16", "--input-size", "192",
            "--coreset-ratio", "0.01", "--min-bank", "500")
    assert r.returncode == 0, r.stderr
    model = load_model(tmp_path / "m")
    bb = model.manifest["backbone"]
    assert bb["strides"] == [4, 8, 16] and bb["layers"] == ["blocks.1", "blocks.2", "blocks.4"]
    assert bb["channels"] == [24, 40, 112] and model.manifest["grid"] == [48, 48]
    assert model.bank.shape[1] == 96  # the Lite0 preset averages the 176 channels to 96
    # 3 x 48 x 48 = 6,912 patches: 1% would keep 69 vectors, the floor keeps ~500
    assert 490 <= model.bank.shape[0] <= 510 and model.manifest["coreset"]["min_bank"] == 500
    res = Inspector(model, backend="onnxruntime").inspect(read_image(bottle / "test/broken_large/000.png"))
    assert res.anomaly_map.shape == (192, 192) and res.score > 0


def test_bad_layers_are_one_line_errors(tmp_path):
    r = cli("calibrate", "--images", tmp_path, "--output", tmp_path / "m", "--layers", "8,x")
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "layers" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_layers_in_yaml(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text(f"images: {tmp_path}\noutput: {tmp_path / 'm'}\nlayers: [8, 16]\n")
    assert load_settings(f).layers == (8, 16)
    f.write_text(f"images: {tmp_path}\noutput: {tmp_path / 'm'}\nlayers: '4,8,16'\n")
    assert load_settings(f).layers == (4, 8, 16)
    for bad in ("'16,8'", "'3,5'", "[]"):
        f.write_text(f"layers: {bad}\n")
        with pytest.raises(ConfigError, match=re.escape(f"{f}: layers: ") + ".*strides"):
            load_settings(f)
