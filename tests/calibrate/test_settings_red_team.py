"""Red team 2 (/work/notes/redteam2.md): a hostile `--config` file is refused in one line, quickly."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from calibrate.settings import load_settings
from edge.errors import ConfigError

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


def _laughs(key: str, levels: int = 8) -> str:
    """A YAML 'billion laughs': `levels` aliases deep, 10**levels items, a few hundred bytes."""
    lines = ["images: x", "output: y", "x0: &l0 [8, 8, 8, 8, 8, 8, 8, 8, 8, 8]"]
    lines += [f"x{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, levels + 1)]
    return "\n".join(lines + [f"{key}: *l{levels}"]) + "\n"


def test_an_alias_bomb_under_layers_is_refused_without_expanding_it(tmp_path):
    cfg = tmp_path / "bomb.yaml"
    cfg.write_text(_laughs("layers"))
    t = time.monotonic()
    with pytest.raises(ConfigError, match="layers"):
        load_settings(cfg)
    assert time.monotonic() - t < 5  # it took minutes and gigabytes: the error message repr'd it


@pytest.mark.parametrize("layers", [[8, 16], ["8", "16"], "8,16", (8, 16)])
def test_layers_still_take_a_list_or_text(layers):
    assert load_settings(images="x", output="y", layers=layers).layers == (8, 16)


@pytest.mark.parametrize("layers", [[8, [16]], [True, 8], [8, 16, 32, 4, 2], [{"a": 1}]])
def test_layers_of_odd_items_are_one_config_error(layers):
    with pytest.raises(ConfigError, match="layers"):
        load_settings(images="x", output="y", layers=layers)


def test_the_command_refuses_the_bomb_in_one_line_with_exit_code_2(tmp_path):
    cfg = tmp_path / "bomb.yaml"
    cfg.write_text(_laughs("layers"))
    r = subprocess.run([sys.executable, "-m", "patchcore_edge.main", "calibrate", "--config", str(cfg)],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr[-500:]
    assert r.stderr.count("\n") == 1 and "layers" in r.stderr, r.stderr[-500:]
