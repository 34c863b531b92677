"""The recalibration child process: the one contract between the daemon (edge/recalibrate.py,
which starts it and reads it) and `patchcore-edge calibrate` (calibrate/cli.py, which runs in it).

- Start: `child_command("calibrate", ...)`: an isolated interpreter (`-I`: neither the working
  directory nor PYTHON* variables reach sys.path) that imports `patchcore_edge` from the same
  folder as this `edge`, by absolute path, so a `patchcore_edge/` planted in the daemon's working
  directory cannot run in its place.
- Arguments: the calibrate options, plus NO_ACTIVATE (the daemon validates the new version
  before it switches) and JSON_PROGRESS.
- Stdout with JSON_PROGRESS: one JSON object a line, `progress_line()` for each step of a stage
  in STAGES, then one `result_line()` (stage DONE) naming the new version's folder. Lines that
  are not JSON objects are ignored. Errors go to stderr (its last line is the failure reason).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the folder holding this installation's edge/ and patchcore_edge/
CHILD_CODE = f"import sys; sys.path.insert(0, {str(ROOT)!r}); from patchcore_edge.main import main; sys.exit(main())"

NO_ACTIVATE = "--no-activate"
JSON_PROGRESS = "--json-progress"
# the build's stages (calibrate/build.py reports them): patch features, the bank's coreset, the
# cross-scoring folds' coresets; stage -> (start, span) of the build's percent, as reported on
# the recalibration status topic
FEATURES, CORESET, HOLDOUT = "features", "coreset", "coreset-holdout"
STAGES = {FEATURES: (0, 40), CORESET: (40, 50), HOLDOUT: (90, 10)}
DONE = "done"


def child_command(*args: str) -> list[str]:
    return [sys.executable, "-I", "-c", CHILD_CODE, *args]


def progress_line(stage: str, done: int, total: int) -> str:
    return json.dumps({"stage": stage, "done": done, "total": total})


def result_line(version_dir: Path, **fields) -> str:
    return json.dumps({"stage": DONE, "version_dir": str(version_dir), **fields})


def read_line(line: str) -> dict | None:
    """The JSON object on one line of the child's stdout, or None."""
    try:
        msg = json.loads(line)
    except ValueError:
        return None
    return msg if isinstance(msg, dict) else None


def percent(msg: dict) -> float | None:
    """How far the build is, for a progress line of a known stage (else None)."""
    if msg.get("stage") not in STAGES:
        return None
    base, span = STAGES[msg["stage"]]
    return base + span * msg["done"] / max(msg["total"], 1)
