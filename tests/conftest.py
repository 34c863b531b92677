"""Shared fixtures: the real MVTec bottle data and one small real model built once per run."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _bottle() -> Path:
    candidates = [os.environ.get("PATCHCORE_DATA", ""), ROOT.parent / "shared/data/mvtec/bottle",
                  Path("/work/shared/data/mvtec/bottle")]
    for c in candidates:
        if c and (Path(c) / "train/good").is_dir():
            return Path(c).resolve()  # absolute: daemon configs resolve relative paths against their own folder
    raise RuntimeError("MVTec bottle not found: set PATCHCORE_DATA=/path/to/mvtec/bottle")


@pytest.fixture(scope="session")
def bottle() -> Path:
    return _bottle()


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    os.environ["PATCHCORE_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def small_model(bottle, tmp_path_factory) -> Path:
    """A real model calibrated on 16 good bottle images (2% coreset to keep the bank useful)."""
    from calibrate.build import RunOptions, calibrate
    from calibrate.settings import CalibrationSettings
    from edge.preprocess import list_images

    out = tmp_path_factory.mktemp("model") / "bottle"
    paths = list_images(bottle / "train/good")[:16]
    calibrate(CalibrationSettings(images=bottle / "train/good", output=out, coreset_ratio=0.02),
              progress=lambda *a: None, run=RunOptions(image_paths=paths))
    return out


@pytest.fixture()
def small_fs(tmp_path):
    """make(name, kb): a folder that is a tmpfs of that size, unmounted after the test."""
    mounts = []

    def make(name: str, kb: int):
        d = tmp_path / name
        d.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kb}k", "tmpfs", str(d)],
                           capture_output=True, text=True)
        if r.returncode:
            pytest.skip(f"a small tmpfs is needed to fill a disk and cannot be mounted here: {r.stderr.strip()}")
        mounts.append(d)
        return d

    yield make
    for d in mounts:
        subprocess.run(["umount", "-l", str(d)])
