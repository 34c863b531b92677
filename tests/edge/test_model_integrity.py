"""Red-team round on the model directory: a non-finite bank or score never passes a frame,
manifest `files` stay inside the version folder, `version` matches its folder, `score_top_k`
fits the patch grid, and only real directories count as versions. Real small models (the
session's calibrated bottle model), edited on scratch copies with their hashes recomputed
so that only the new checks can refuse them."""

from __future__ import annotations

import json
import logging
import math
import shutil

import cv2
import numpy as np
import pytest

from edge.errors import ModelError
from edge.files import sha256_file
from edge.gpu import heatmap_jpeg
from edge.inspector import NONFINITE_NORMALISED, Inspector
from edge.modeldir import (CORESET, CURRENT, MANIFEST, MANIFEST_HASH, VERSIONS, current_version, list_versions,
                           load_model, manifest_hash_line, resolve_version_dir, set_current, write_version)
from edge.preprocess import read_image

from .mqtt_helpers import ROOT


def _copy(small_model, tmp_path):
    root = tmp_path / "model"
    shutil.copytree(small_model, root)
    return root, load_model(root).path


def _rewrite(vdir, edit=None, bank=None):
    """Change the manifest (edit(dict)) and/or the bank, then recompute every hash so that the
    integrity checks pass and only the new checks stand between the change and a load."""
    from safetensors.numpy import save

    man = json.loads((vdir / MANIFEST).read_text())
    if bank is not None:
        (vdir / CORESET).write_bytes(save({"coreset": np.ascontiguousarray(bank, dtype=np.float32)}))
        man["files"][CORESET] = sha256_file(vdir / CORESET)
    if edit is not None:
        edit(man)
    data = json.dumps(man, indent=2).encode()
    (vdir / MANIFEST).write_bytes(data)
    (vdir / MANIFEST_HASH).write_bytes(manifest_hash_line(data))


def _one_line(e) -> str:
    msg = str(e.value)
    assert "\n" not in msg and "patchcore-edge rollback" not in msg, msg
    return msg


# -- 1a: a bank with NaN or infinity is refused at load ----------------------------------------------
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_bank_with_a_non_finite_row_is_refused_at_load(small_model, tmp_path, bad):
    root, vdir = _copy(small_model, tmp_path)
    bank = load_model(root).bank.copy()
    bank[3, 7] = bad
    _rewrite(vdir, bank=bank)
    with pytest.raises(ModelError, match="NaN or infinity") as e:
        load_model(root)
    msg = _one_line(e)
    assert str(vdir / CORESET) in msg and "row 3" in msg and "--rollback" in msg and "CURRENT" in msg


def test_roll_back_hints_name_what_exists(small_model, tmp_path):
    root, _ = _copy(small_model, tmp_path)
    with pytest.raises(ModelError) as e:
        resolve_version_dir(root, "v0007")
    assert "--rollback" in _one_line(e)
    (root / CURRENT).write_text("latest\n")
    with pytest.raises(ModelError, match="not a version name") as e:
        load_model(root)
    _one_line(e)


# -- 1b: a frame whose score is not finite fails, and its JSON stays valid ---------------------------
@pytest.mark.parametrize("how", ["nan-row", "overflow"])
@pytest.mark.parametrize("path", ["onnxruntime", "resident-cpu"])
def test_a_non_finite_score_fails_and_publishes_valid_json(small_model, bottle, how, path):
    import jsonschema

    model = load_model(small_model)
    if how == "nan-row":  # what load_model now refuses: a bank loaded before, or changed in memory
        model.bank[0] = np.nan
    else:  # a finite bank whose squared distances pass float32's range: an overflow, as on a device in fp16
        model.bank *= np.float32(1e19)
        assert np.isfinite(model.bank).all()
    if path == "onnxruntime":
        insp = Inspector(model, backend="onnxruntime")
    else:
        from edge.gpu.resident import ResidentInspector

        insp = ResidentInspector(model, device="cpu")
    r = insp.inspect(read_image(bottle / "test/good/000.png"))
    assert not math.isfinite(r.score), r.score  # the red team's case: the score really is not finite
    assert r.verdict == "fail" and r.reason and "not a finite number" in r.reason
    rec = r.record()
    assert rec["verdict"] == "fail" and rec["normalised_score"] == NONFINITE_NORMALISED > 1.0
    assert rec["reason"] == r.reason
    text = json.dumps(rec, allow_nan=False)  # raises on NaN / inf
    assert all(math.isfinite(rec[k]) for k in ("score", "normalised_score", "threshold"))
    # the daemon's result: these keys plus camera, ids, timestamp and latency (edge/daemon.py)
    full = {"camera": "c", "run_id": 1, "frame_id": 1, "timestamp": "2026-11-28T00:00:00.000+00:00",
            **json.loads(text), "latency_ms": 1.0}
    jsonschema.validate(full, json.loads((ROOT / "docs/mqtt/result.schema.json").read_text()))
    # and its heatmap is drawn hot (NaN cast to uint8 was 0: the coolest blue, a "clean" part)
    img = read_image(bottle / "test/good/000.png")
    jpeg = cv2.imdecode(np.frombuffer(heatmap_jpeg(insp, img, r, 128, 90), np.uint8), cv2.IMREAD_COLOR)
    plain = cv2.resize(img, jpeg.shape[1::-1], interpolation=cv2.INTER_AREA).astype(int)
    red_minus_blue = (jpeg.astype(int) - plain)[..., 2] - (jpeg.astype(int) - plain)[..., 0]
    assert np.median(red_minus_blue) > 0, np.median(red_minus_blue)


def test_a_finite_score_is_published_as_before(small_model, bottle):
    r = Inspector(load_model(small_model), backend="onnxruntime").inspect(read_image(bottle / "test/good/000.png"))
    assert math.isfinite(r.score) and r.reason is None and "reason" not in r.record()
    assert r.record()["verdict"] == ("fail" if r.normalised > 1.0 else "pass")


# -- 2: manifest files stay inside the version folder -------------------------------------------------
@pytest.mark.parametrize("name", ["../../outside.bin", "../v0002/coreset.safetensors", "/etc/hostname", "sub/x",
                                  "..", ".", "", MANIFEST])
def test_manifest_files_naming_anything_but_a_plain_file_in_the_version_are_refused(small_model, tmp_path, name):
    root, vdir = _copy(small_model, tmp_path)
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"x" * 10)
    digest = sha256_file(outside)
    _rewrite(vdir, edit=lambda m: m["files"].__setitem__(name, digest))
    with pytest.raises(ModelError, match="not a plain file name inside") as e:
        load_model(root)
    _one_line(e)


def test_a_symlinked_or_unlisted_model_file_is_refused(small_model, tmp_path):
    root, vdir = _copy(small_model, tmp_path)
    real = tmp_path / "elsewhere.safetensors"
    shutil.move(vdir / CORESET, real)
    (vdir / CORESET).symlink_to(real)  # same bytes, same hash: only the symlink check refuses it
    with pytest.raises(ModelError, match="is a symlink") as e:
        load_model(root)
    _one_line(e)
    (vdir / CORESET).unlink()
    shutil.move(real, vdir / CORESET)
    assert load_model(root).version == "v0001"
    _rewrite(vdir, edit=lambda m: m["files"].pop(CORESET))  # an unhashed bank would load unchecked
    with pytest.raises(ModelError, match="does not list") as e:
        load_model(root)
    _one_line(e)


# -- 3: version matches its folder --------------------------------------------------------------------
@pytest.mark.parametrize("version", ["v1", "../v0001", "v9999 <script>"])
def test_a_manifest_version_that_is_not_a_version_name_is_refused(small_model, tmp_path, version):
    root, vdir = _copy(small_model, tmp_path)
    _rewrite(vdir, edit=lambda m: m.__setitem__("version", version))
    with pytest.raises(ModelError, match="is not a version name") as e:
        load_model(root)
    _one_line(e)


def test_a_version_copied_under_another_name_carries_its_folders_name(small_model, tmp_path, caplog):
    # refusing it broke versions copied by hand (a working practice): results carry the folder's
    # name, which CURRENT and rollback use, and the mismatch is logged
    root, vdir = _copy(small_model, tmp_path)
    _rewrite(vdir, edit=lambda m: m.__setitem__("version", "v0002"))
    caplog.set_level(logging.WARNING, logger="edge.modeldir")
    assert load_model(root).version == "v0001"
    assert "says version v0002 but lies in folder v0001" in caplog.text


# -- 4: score_top_k fits the patch grid ---------------------------------------------------------------
def test_score_top_k_beyond_the_patch_grid_is_used_as_all_patches(small_model, tmp_path, caplog):
    # scoring always capped it; refusing it at load would stop cameras on versions written before
    root, vdir = _copy(small_model, tmp_path)
    model = load_model(root)
    h, w = model.spec.grid
    patches = h * w * model.geometry.tiles
    _rewrite(vdir, edit=lambda m: m.__setitem__("score_top_k", patches + 1))
    caplog.set_level(logging.WARNING, logger="edge.modeldir")
    assert load_model(root).spec.score_top_k == patches
    assert f"score_top_k {patches + 1} exceeds the {patches} patches" in caplog.text


# -- 5: only real directories are versions ------------------------------------------------------------
def test_symlinked_and_file_version_entries_are_ignored_and_never_cost_a_real_version(small_model, tmp_path,
                                                                                      caplog):
    root, vdir = _copy(small_model, tmp_path)
    (root / VERSIONS / "v0099").symlink_to(vdir)  # would be the newest, and count toward keep_versions
    (root / VERSIONS / "v0098").write_text("not a version")
    caplog.set_level(logging.WARNING, logger="edge.modeldir")
    assert list_versions(root) == ["v0001"]
    assert list_versions(root) == ["v0001"]
    ignored = [r.getMessage() for r in caplog.records if "ignored" in r.getMessage()]
    assert len(ignored) == 2 and any("v0099 is a symlink" in m for m in ignored), ignored  # once each
    # a new version with keep=2: before, [v0001, v0099, v0100] pruned the real v0001
    model = load_model(root)
    new = write_version(root, model.manifest, model.bank, (vdir / "backbone.onnx").read_bytes(), keep=2)
    assert list_versions(root) == ["v0001", new.name] and current_version(root) == new.name
    assert load_model(root, version="v0001").version == "v0001"
    for name in ("v0099", "v0098"):
        with pytest.raises(ModelError):
            set_current(root, name)
    (root / CURRENT).write_text("v0099\n")
    with pytest.raises(ModelError, match="is a symlink") as e:
        load_model(root)
    _one_line(e)
