"""The recalibrate command's optional `layers` (feature stages by stride), parsed like any field."""

import pytest

from edge.commands import CommandError, encode, parse

SECRET = b"0123456789abcdef-test-secret"


def _parse(fields: dict):
    return parse(encode(fields, SECRET, "line1", "cam"), SECRET, "line1", "cam", max_age_s=120.0,
                 max_frames=2000, max_collect_s=1800.0)


def test_layers_belong_to_recalibrate_only_and_are_strides():
    cmd = _parse({"action": "recalibrate", "id": "l1", "frames": 50, "layers": "4,8,16"})
    assert cmd.layers == "4,8,16"
    assert _parse({"action": "recalibrate", "id": "l2", "frames": 50}).layers is None
    with pytest.raises(CommandError, match="layers"):
        _parse({"action": "rollback", "id": "l3", "layers": "8,16"})
    for bad in ("8;rm -rf", "../x", "8,16,32,64,128", 816):
        with pytest.raises(CommandError, match="layers"):
            _parse({"action": "recalibrate", "id": "l4", "frames": 50, "layers": bad})
