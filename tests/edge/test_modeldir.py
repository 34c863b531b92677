import json
import os
import re
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from edge.errors import ModelError
from edge.modeldir import (CORESET, CURRENT, MANIFEST, current_version, list_versions, load_model, remove_stale,
                           set_current, write_version)

MANIFEST_MIN = {"backbone": {"name": "x", "strides": [4, 8]}, "input_size": 224, "normalization": {"mean": [0.5] * 3, "std": [0.5] * 3},
                "grid": [28, 28], "threshold": 1.5, "score_stats": {"n": 3}}


def _write(root, bank=None, **kw):
    bank = np.arange(12, dtype=np.float32).reshape(3, 4) if bank is None else bank
    return write_version(root, MANIFEST_MIN, bank, b"onnx-bytes", **kw)


def test_save_then_load_round_trip(tmp_path):
    bank = np.random.default_rng(0).normal(size=(7, 5)).astype(np.float32)
    v = _write(tmp_path / "m", bank)
    m = load_model(tmp_path / "m")
    np.testing.assert_array_equal(m.bank, bank)
    assert m.version == "v0001" and m.path == v and m.threshold == 1.5 and m.manifest["coreset_size"] == 7
    assert load_model(v).version == "v0001"  # a version dir loads directly too


def test_versions_rollback_and_pruning(tmp_path):
    root = tmp_path / "m"
    for _ in range(4):
        _write(root, keep=3)
    assert list_versions(root) == ["v0002", "v0003", "v0004"] and current_version(root) == "v0004"
    set_current(root, "v0003")
    assert load_model(root).version == "v0003"
    with pytest.raises(ModelError, match="no version 'v0001'"):
        set_current(root, "v0001")


def test_tampered_truncated_and_missing_files_are_clear_errors(tmp_path):
    root = tmp_path / "m"
    v = _write(root)
    data = (v / CORESET).read_bytes()
    (v / CORESET).write_bytes(data[:-9])
    with pytest.raises(ModelError, match="corrupt"):
        load_model(root)
    (v / CORESET).write_bytes(data)
    man = json.loads((v / MANIFEST).read_text())
    man["format_version"] = 99
    (v / MANIFEST).write_text(json.dumps(man))
    with pytest.raises(ModelError, match="model format 99"):
        load_model(root)
    (v / MANIFEST).write_text("{trunc")
    with pytest.raises(ModelError, match="not JSON"):
        load_model(root)
    with pytest.raises(ModelError, match="does not exist"):
        load_model(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="not a model directory"):
        load_model(tmp_path / "empty")


def test_killed_mid_write_leaves_previous_version_active(tmp_path):
    root = tmp_path / "m"
    _write(root)
    # a child writes a large second version and is killed while writing it
    code = textwrap.dedent(f"""
        import numpy as np, os, sys
        import edge.modeldir as md
        real = md.write_synced  # the name modeldir calls (from edge/files.py)
        def slow(path, data):
            real(path, data)
            if path.name == "coreset.safetensors":
                print("written", flush=True); import time; time.sleep(60)
        md.write_synced = slow
        md.write_version({str(root)!r}, {MANIFEST_MIN!r}, np.ones((5, 4), np.float32), b"x")
    """)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert p.stdout.readline().strip() == "written"
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert (root / CURRENT).read_text().strip() == "v0001"
    assert list_versions(root) == ["v0001"]
    assert load_model(root).bank.shape == (3, 4)
    _write(root)  # the next write cleans the stale temp dir and continues numbering
    assert list_versions(root) == ["v0001", "v0002"]
    assert not [p for p in (root / "versions").iterdir() if p.name.startswith(".tmp")]


def test_killed_mid_switch_keeps_the_old_current_and_leftovers_are_removed(tmp_path):
    root = tmp_path / "m"
    _write(root)
    _write(root, activate=False)  # v0002 complete, not active (as after validation)
    # a child switches CURRENT to v0002 and is killed after the new CURRENT is written but
    # before it replaces the old one
    code = textwrap.dedent(f"""
        import os, time
        import edge.modeldir as md
        def slow_replace(src, dst):
            print("written", flush=True); time.sleep(60)
        md.os.replace = slow_replace
        md.set_current({str(root)!r}, "v0002")
    """)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert p.stdout.readline().strip() == "written"
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert current_version(root) == "v0001" and load_model(root).version == "v0001"
    assert list(root.glob(".CURRENT.*")), "the test should have left a half-done switch"
    remove_stale(root)  # what the daemon does at start
    assert not list(root.glob(".CURRENT.*"))
    assert list_versions(root) == ["v0001", "v0002"]


@pytest.mark.parametrize("field, value, why", [
    ("threshold", "high", "threshold"), ("threshold", -1.0, "threshold"), ("grid", [28], "grid"),
    ("normalization", {"mean": [0.5], "std": [0.5] * 3}, "normalization.mean"),
    ("backbone", {"name": "x"}, "backbone.strides")])
def test_typed_manifest_refuses_a_bad_field_at_load_with_its_name(tmp_path, field, value, why):
    # written through write_version, so the hashes match: only the typed check can catch it
    write_version(tmp_path / "m", {**MANIFEST_MIN, field: value}, np.ones((3, 4), np.float32), b"onnx-bytes")
    with pytest.raises(ModelError, match=rf"manifest field {re.escape(why)}[.:]") as e:
        load_model(tmp_path / "m")
    assert "\n" not in str(e.value)


def test_typed_manifest_reads_the_fields_inspection_uses(tmp_path):
    _write(tmp_path / "m")
    spec = load_model(tmp_path / "m").spec
    assert (spec.backbone.strides, spec.grid, spec.feature_dim, spec.coreset_size) == ((4, 8), (28, 28), 4, 3)
    assert spec.normalization.mean == (0.5, 0.5, 0.5) and spec.threshold == 1.5
