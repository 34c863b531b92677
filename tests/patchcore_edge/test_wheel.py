"""The wheel ships what the commands read at run time (the full round trip: scripts/wheel-check)."""

from __future__ import annotations

import subprocess
import sys
import zipfile

from edge.package_data import data_file

from ..conftest import ROOT

# top-level folder in the source tree -> where its files sit in the wheel
SHIPPED = {"configs": "patchcore_edge/configs", "systemd": "patchcore_edge/systemd",
           "docs/mqtt": "patchcore_edge/mqtt-schemas", "edge/web/static": "edge/web/static"}


def _tracked(folder: str) -> list[str]:
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", folder], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout.split()
    return [p[len(folder) + 1:] for p in out]


def test_the_wheel_holds_every_run_time_file_and_no_source_tree_paths(tmp_path):
    src = tmp_path / "src"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                           check=True).stdout
    # a copy, so the build's build/ and *.egg-info stay out of the checkout
    src.mkdir()
    subprocess.run(["tar", "--null", "-T", "-", "-cf", str(tmp_path / "src.tar")], cwd=ROOT, input=files, check=True)
    subprocess.run(["tar", "-xf", str(tmp_path / "src.tar"), "-C", str(src)], check=True)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path / "dist"), str(src)], check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("patchcore_edge-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        entry_points = next(z.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    for folder, inside in SHIPPED.items():
        tracked = _tracked(folder)
        assert tracked, folder
        missing = [f for f in tracked if f"{inside}/{f}" not in names]
        assert not missing, f"{folder}/{missing} not in the wheel: widen package_data in setup.py"
    assert "patchcore-edge = patchcore_edge.main:main" in entry_points
    assert {n.split("/")[0] for n in names if not n.startswith("patchcore_edge-")} == \
        {"calibrate", "edge", "export", "patchcore_edge"}


def test_package_data_in_the_source_tree_is_the_top_level_files():
    # patchcore_edge/{configs,systemd,mqtt-schemas} are links: one copy of each file in git
    for folder, inside in SHIPPED.items():
        if not inside.startswith("patchcore_edge/"):
            continue
        for name in _tracked(folder):
            f = data_file(inside.split("/", 1)[1], name)
            assert f.is_file() and f.read_bytes() == (ROOT / folder / name).read_bytes(), f
