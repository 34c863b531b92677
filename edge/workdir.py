"""The folder a recalibration collects its frames in, and who may delete it.

Frames go to <work_dir>/.patchcore-recalibration/<camera>-<owner tag>/ (work_dir defaults to
<model>/incoming). work_dir may be shared with anything - the folder holding the model
directories, or another daemon on the same host - so only a folder that holds a marker naming
this owner is ever emptied. The owner is the daemon's state directory (one live daemon per
state dir: statedir.py holds a lock on it); its hash in the folder name keeps two daemons
with a camera of the same name apart, and the marker's owner line is checked before any
delete. A second daemon sharing work_dir once deleted the first one's frames mid-collection
at its start-up cleanup.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path

from .names import inside

log = logging.getLogger(__name__)

WORK_SUBDIR = ".patchcore-recalibration"
WORK_MARKER = ".created-by-patchcore-edge"


class WorkInUse(Exception):
    """The folder exists and is not ours: refuse to collect into it."""


class WorkDir:
    def __init__(self, base: Path, camera: str, owner: str, remove_base: bool):
        self.base, self.camera, self.owner = Path(base), camera, owner
        self.remove_base = remove_base  # the default <model>/incoming goes when empty; a configured work_dir stays
        inside(self.base, WORK_SUBDIR, camera)  # refuses a name that leaves base (`..`), whatever follows it
        tag = hashlib.sha256(owner.encode()).hexdigest()[:12]
        self.path = inside(self.base, WORK_SUBDIR, f"{camera}-{tag}")

    def _marker_text(self) -> str:
        return (f"recalibration frames of camera {self.camera}; deleted by patchcore-edge when the attempt ends\n"
                f"owner: {self.owner}\n")

    def owned(self) -> bool:
        marker = self.path / WORK_MARKER
        try:
            return marker.is_file() and f"\nowner: {self.owner}\n" in marker.read_text(errors="replace")
        except OSError:
            return False

    def clear(self) -> None:
        """Delete the collected frames: only our own folder, proven by its marker, and then
        the (empty) folders above it that we made. Never raises (runs in `finally` and at start)."""
        work = self.path
        if work.is_dir() and not work.is_symlink() and self.owned():
            # the marker goes last: a kill mid-delete leaves it, so the next start finishes the job
            try:
                for entry in work.iterdir():
                    if entry.name != WORK_MARKER:
                        shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
                (work / WORK_MARKER).unlink()
            except OSError as e:
                log.warning("camera %s: cannot remove the collected frames in %s: %s", self.camera, work, e)
                return
        if work.is_symlink() or work.exists():
            try:
                work.rmdir()  # only ever removes an empty folder
            except OSError:
                log.warning("camera %s: leaving %s alone: it was not created by this patchcore-edge daemon "
                            "(no %s naming owner %s)", self.camera, work, WORK_MARKER, self.owner)
                return
        for d in [work.parent] + ([self.base] if self.remove_base else []):
            try:
                d.rmdir()
            except OSError:
                pass  # not empty: another camera's (or daemon's) frames are in it

    def make(self) -> tuple[Path, Path]:
        """A fresh folder with our ownership marker; train/ and held/ in it."""
        self.clear()
        if self.path.exists() or self.path.is_symlink():
            raise WorkInUse(f"{self.path} exists and was not created by this patchcore-edge daemon; remove it or "
                            "set another recalibration.work_dir")
        self.path.mkdir(parents=True)
        (self.path / WORK_MARKER).write_text(self._marker_text())
        train, held = self.path / "train", self.path / "held"
        train.mkdir()
        held.mkdir()
        return train, held
