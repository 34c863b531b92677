"""Recalibration work folders in a work_dir shared by two daemons (red team 5): each daemon's
start-up and end-of-attempt cleanup removes only the folders whose marker names it."""

from __future__ import annotations

import shutil
from types import SimpleNamespace

from edge.config import CameraConfig, RecalibrationConfig
from edge.recalibrate import Recalibrator


def _recalibrator(model, work_dir, owner):
    cam = CameraConfig(name="cam1", source=0, model=model, backend="onnxruntime")
    return Recalibrator(SimpleNamespace(cfg=cam), link=None, prefix="p", cfg=RecalibrationConfig(work_dir=work_dir),
                        secret=(None, "disabled"), owner=owner)


def test_a_second_daemon_sharing_work_dir_leaves_the_first_ones_frames(small_model, tmp_path):
    shared = tmp_path / "shared_work"
    shared.mkdir()
    for m in ("m2", "m3"):
        shutil.copytree(small_model, tmp_path / m)
    a = _recalibrator(tmp_path / "m2", shared, owner=str(tmp_path / "stA"))
    train, held = a._make_work()  # A is collecting
    (train / "00000.bmp").write_bytes(b"frame of A")
    (held / "00001.bmp").write_bytes(b"held frame of A")

    b = _recalibrator(tmp_path / "m3", shared, owner=str(tmp_path / "stB"))  # B starts: its start-up cleanup ran
    assert (train / "00000.bmp").read_bytes() == b"frame of A" and (held / "00001.bmp").is_file()
    b_train, _ = b._make_work()  # both collecting at once: separate folders
    assert b_train != train
    (b_train / "00000.bmp").write_bytes(b"frame of B")
    b._clear_work()  # B's attempt ends
    assert not b_train.exists() and (train / "00000.bmp").read_bytes() == b"frame of A"

    a._clear_work()  # A's attempt ends: its own folder goes, and the shared work_dir stays
    assert not train.exists() and shared.is_dir()


def test_a_folder_marked_for_another_owner_is_never_emptied(small_model, tmp_path):
    shutil.copytree(small_model, tmp_path / "m")
    a = _recalibrator(tmp_path / "m", tmp_path / "w", owner="station-A")
    train, _ = a._make_work()
    (train / "x.bmp").write_bytes(b"x")
    # a marker copied into B's folder name still names A: B refuses to empty or reuse it
    b = _recalibrator(tmp_path / "m", tmp_path / "w", owner="station-B")
    shutil.copytree(a.work, b.work)
    b._clear_work()
    assert (b.work / "train" / "x.bmp").is_file()
    a2 = _recalibrator(tmp_path / "m", tmp_path / "w", owner="station-A")  # A restarted: finishes its cleanup
    assert not a2.work.exists() and a2.work == a.work
