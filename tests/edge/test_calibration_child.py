"""The recalibration child's contract, both sides for real: the daemon's start line runs
`calibrate`, whose stdout the daemon's reader understands line by line."""

from __future__ import annotations

import shutil
import subprocess

from edge.calibration_child import DONE, JSON_PROGRESS, NO_ACTIVATE, STAGES, child_command, percent, read_line
from edge.modeldir import current_version, list_versions


def test_the_child_reports_known_stages_then_the_new_version_without_activating_it(bottle, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for f in sorted((bottle / "train/good").iterdir())[:8]:
        shutil.copy(f, images / f.name)
    model = tmp_path / "model"
    args = ["calibrate", "--images", str(images), "--output", str(model), "--input-size", "128"]
    r = subprocess.run(child_command(*args, NO_ACTIVATE, JSON_PROGRESS), capture_output=True, text=True,
                       timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    msgs = [read_line(line) for line in r.stdout.splitlines()]
    assert msgs and None not in msgs, r.stdout
    *progress, last = msgs
    assert {m["stage"] for m in progress} <= set(STAGES) and progress
    assert all(0 <= percent(m) <= 100 for m in progress)
    assert last["stage"] == DONE and percent(last) is None
    assert list_versions(model) == ["v0001"] and last["version_dir"].endswith("v0001")
    assert current_version(model) is None  # NO_ACTIVATE: the daemon validates before it switches
