"""The daemon's state directory: the run counter and the spool of undelivered results.

Where: `state_dir` from the config; else `$STATE_DIRECTORY` (set by systemd's
`StateDirectory=`, /var/lib/patchcore-edge for the shipped unit); else `patchcore-state/`
beside the config file. One daemon per state directory, enforced with an advisory lock
(a second daemon on it would overwrite the other's spool and reuse its run ids).

`run_id` counts daemon starts (1, 2, ...), written atomically before the first result, so
(`run_id`, `frame_id`) is unique across restarts as long as the state directory is kept.
"""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path

from .errors import ConfigError
from .files import atomic_write_bytes

log = logging.getLogger(__name__)

DEFAULT_NAME = "patchcore-state"
RUN_FILE = "run_id"
LOCK_FILE = "lock"


def default_state_dir(config_dir: Path | None) -> Path:
    """$STATE_DIRECTORY (systemd), else <config dir>/patchcore-state (cwd without a config file)."""
    env = os.environ.get("STATE_DIRECTORY", "").split(":")[0]  # systemd may list several
    if env:
        return Path(env)
    return (config_dir or Path.cwd()) / DEFAULT_NAME


class StateDir:
    """An opened, locked state directory; `close()` (or process exit) releases the lock."""

    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._lock = open(self.path / LOCK_FILE, "a+")  # noqa: SIM115 (held for the daemon's life)
        except OSError as e:
            raise ConfigError(f"state_dir {self.path} cannot be created or written ({e.strerror}); "
                              "set state_dir in the config to a folder this user can write") from e
        try:
            fcntl.flock(self._lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            self._lock.close()
            raise ConfigError(f"state_dir {self.path} is in use by another patchcore-edge daemon; "
                              "give each daemon its own state_dir") from e

    def next_run_id(self) -> int:
        """Read, increment and persist (atomically) the run counter; an unreadable one is an error."""
        f = self.path / RUN_FILE
        text = f.read_text().strip() if f.is_file() else "0"
        if not text.isdigit() or len(text) > 18:
            raise ConfigError(f"{f} holds {text[:40]!r}, not a run counter; delete it only if result ids "
                              "may repeat (run ids then start again at 1)")
        run = int(text) + 1
        try:
            atomic_write_bytes(f, f"{run}\n".encode())
        except OSError as e:
            raise ConfigError(f"cannot write {f} ({e.strerror}); set state_dir to a writable folder") from e
        return run

    def close(self) -> None:
        self._lock.close()
