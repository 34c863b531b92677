"""calibrate's `--config` YAML: an empty `threshold:`, bools given for numbers, and relative paths
(relative to the file's folder, as in the daemon's config; flags stay relative to the cwd)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from calibrate.settings import CalibrationSettings, load_settings
from edge.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def _yaml(tmp_path: Path, text: str) -> Path:
    f = tmp_path / "c.yaml"
    f.write_text("images: /x\noutput: /y\n" + text)
    return f


def _cli(cwd: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "patchcore_edge", "calibrate", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


# 1. `threshold:` left empty (YAML null) is the defaults, with or without flags over it

@pytest.mark.parametrize("text", ["threshold:\n", "threshold:\n  # target_false_reject: 0.02\n", "threshold: {}\n"])
def test_an_empty_threshold_section_means_the_defaults_or_the_flags(tmp_path, text):
    f = _yaml(tmp_path, text)
    t = load_settings(f).threshold
    assert (t.rule, t.target_false_reject, t.reject_all_bad, t.max_false_reject) == ("target", 0.01, False, 0.05)
    t = load_settings(f, target_false_reject=0.02, threshold_rule="max3sigma").threshold
    assert (t.rule, t.target_false_reject) == ("max3sigma", 0.02)
    assert CalibrationSettings(images="/x", output="/y", threshold=None).threshold.target_false_reject == 0.01


@pytest.mark.parametrize("value", ["[0.01]", "'0.01'", "0.01", "false", "''", "[]"])
@pytest.mark.parametrize("flags", [{}, {"target_false_reject": 0.02}])
def test_a_threshold_that_is_not_a_mapping_is_one_line_naming_the_key_and_the_form(tmp_path, value, flags):
    f = _yaml(tmp_path, f"threshold: {value}\n")
    with pytest.raises(ConfigError) as e:
        load_settings(f, **flags)  # a flag does not paper over the file's bad value
    msg = str(e.value)
    assert msg.startswith(f"{f}: threshold: ") and "\n" not in msg
    assert "give a mapping such as {target_false_reject: 0.01}" in msg and "leave it empty for the defaults" in msg


# 2. a bool is not a number (pydantic's lax mode read true, and YAML 1.1's yes/on, as 1)

@pytest.mark.parametrize(("text", "key"), [
    ("coreset_ratio: yes\n", "coreset_ratio"),            # was 1.0: the whole bank
    ("coreset_ratio: true\n", "coreset_ratio"),
    ("min_bank: on\n", "min_bank"),
    ("feature_dim: true\n", "feature_dim"),
    ("score_top_k: true\n", "score_top_k"),
    ("map_fine_weight: yes\n", "map_fine_weight"),
    ("seed: true\n", "seed"),
    ("holdout: true\n", "holdout"),
    ("tile_overlap: false\n", "tile_overlap"),             # was 0.0
    ("projection_dim: yes\n", "projection_dim"),
    ("keep_versions: true\n", "keep_versions"),
    ("input_size: true\n", "input_size"),                 # was "input size ... got 1"
    ("threshold: {target_false_reject: true}\n", "threshold.target_false_reject"),
    ("threshold: {max_false_reject: yes}\n", "threshold.max_false_reject"),
])
def test_a_bool_for_a_number_is_refused_in_one_line(tmp_path, text, key):
    f = _yaml(tmp_path, text)
    with pytest.raises(ConfigError, match=re.escape(f"{f}: {key}: ") + ".*must be a number.*not true/false") as e:
        load_settings(f)
    assert "\n" not in str(e.value)


def test_a_bool_passed_in_code_is_refused_and_numbers_still_read_as_before(tmp_path):
    with pytest.raises(ConfigError, match="^--coreset-ratio: .*must be a number"):
        load_settings(images="/x", output="/y", coreset_ratio=True)
    f = _yaml(tmp_path, "coreset_ratio: 1\nholdout: '0.3'\nseed: 7\ninput_size: 256\nfeature_dim: 64\n"
                        "threshold: {target_false_reject: 0.02, reject_all_bad: yes}\nbad_images: /b\n")
    s = load_settings(f, min_bank=10, tile_overlap=0.2)
    assert (s.coreset_ratio, s.holdout, s.seed, s.input_size, s.feature_dim, s.min_bank, s.tile_overlap) == (
        1.0, 0.3, 7, 256, 64, 10, 0.2)
    assert (s.threshold.target_false_reject, s.threshold.reject_all_bad) == (0.02, True)  # a bool for a bool


def test_the_command_refuses_a_bool_for_a_number_in_one_line(tmp_path):
    f = _yaml(tmp_path, "coreset_ratio: yes\n")
    r = _cli(ROOT, "--config", f)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr[-500:]
    assert "coreset_ratio" in r.stderr and "not true/false" in r.stderr


# 3. relative paths in the file are relative to its folder; flags stay relative to the cwd

def test_relative_paths_in_the_file_are_relative_to_its_folder(tmp_path, monkeypatch):
    cfg_dir, elsewhere = tmp_path / "station/configs", tmp_path / "elsewhere"
    cfg_dir.mkdir(parents=True)
    elsewhere.mkdir()
    f = cfg_dir / "c.yaml"
    f.write_text("images: good\noutput: ../models/m\nbad_images: ./bad\nweights: w/r18.safetensors\n")
    monkeypatch.chdir(elsewhere)
    for config in (f, Path("../station/configs/c.yaml")):  # an absolute or a relative --config
        s = load_settings(config)
        assert s.images == cfg_dir / "good" and s.output == tmp_path / "station/models/m"
        assert s.bad_images == cfg_dir / "bad" and s.weights == cfg_dir / "w/r18.safetensors"
    s = load_settings(f, images=Path("flag_good"), output=Path("/abs/m"))  # flags: as the shell gave them
    assert s.images == Path("flag_good") and s.output == Path("/abs/m") and s.bad_images == cfg_dir / "bad"
    f.write_text(f"images: {tmp_path / 'abs'}\noutput: m\n")
    assert load_settings(f).images == tmp_path / "abs"


def test_the_command_reads_the_files_paths_from_another_cwd(tmp_path):
    cfg_dir, elsewhere = tmp_path / "cfg", tmp_path / "elsewhere"
    (cfg_dir / "good").mkdir(parents=True)
    elsewhere.mkdir()
    (elsewhere / "good").mkdir()  # a same-named folder in the cwd must not be the one read
    (cfg_dir / "c.yaml").write_text("images: good\noutput: out/m\nthreshold:\n")
    r = _cli(elsewhere, "--config", "../cfg/c.yaml", "--target-false-reject", "0.02")
    assert r.returncode == 2, r.stderr[-500:]  # an empty folder: refused after the settings were read
    assert f"no image files (png, jpg, bmp, tiff) in {cfg_dir / 'good'};" in r.stderr, r.stderr[-500:]
    r = _cli(elsewhere, "--config", "../cfg/c.yaml", "--images", "good")  # a flag: relative to the cwd
    assert r.returncode == 2 and "in good;" in r.stderr, r.stderr[-500:]
    assert not (cfg_dir / "out").exists() and not (elsewhere / "out").exists()


def test_the_example_config_still_points_at_the_shared_bottle_images():
    s = load_settings(ROOT / "configs/calibrate.yaml")
    assert s.images == (ROOT.parent / "shared/data/mvtec/bottle/train/good").resolve()
    assert s.output == (ROOT / "out/model").resolve()


def test_yaml_errors_name_no_python_types(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must be a mapping of settings") as e:
        load_settings(f)
    assert "CalibrationFile" not in str(e.value)
    f.write_text(f"images:\noutput: {tmp_path / 'o'}\n")
    with pytest.raises(ConfigError, match="images: a path is needed here") as e:
        load_settings(f)
    assert "pathlib" not in str(e.value)
