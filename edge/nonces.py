"""Command ids already used: a signed command is accepted once.

A command is valid while its `ts` is within max_age_s of the clock, so its id must be
remembered until ts + max_age_s; after that the age check refuses it anyway and the id is
forgotten. The store is bounded (MAX_IDS; when full, new commands are refused rather than
old ids forgotten early) and persisted in the model directory (`commands-seen.json`,
written atomically on every accepted command), so a restart of the daemon inside the
window does not reopen it. Cameras sharing a model directory share one store.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

from .commands import CommandError
from .files import atomic_write_bytes

log = logging.getLogger(__name__)

FILE = "commands-seen.json"
MAX_IDS = 4096


class SeenIds:
    def __init__(self, root: Path):
        self.path = Path(root) / FILE
        self.lock = threading.Lock()
        self.expiry: dict[str, float] = {}  # id -> wall-clock time after which it may be forgotten
        try:
            data = json.loads(self.path.read_text())
            self.expiry = {str(k): float(v) for k, v in data.items()}
        except FileNotFoundError:
            pass
        except (OSError, ValueError, AttributeError, TypeError) as e:
            log.warning("%s is unreadable (%s); starting with no remembered command ids", self.path, e)

    def claim(self, cmd_id: str, ts: float, max_age_s: float) -> None:
        """Remember `cmd_id`; CommandError if it was used already or the store is full."""
        now = time.time()
        with self.lock:
            self.expiry = {k: t for k, t in self.expiry.items() if t > now}
            if cmd_id in self.expiry:
                raise CommandError(f"command id {cmd_id!r} was already used: a replay is refused; "
                                   "send a new command with a new id")
            if len(self.expiry) >= MAX_IDS:
                raise CommandError(f"{MAX_IDS} commands within max_age_s: refused until older ids expire")
            if ts + max_age_s <= now:
                return  # the age check refuses it from now on anyway
            self.expiry[cmd_id] = ts + max_age_s
            try:
                atomic_write_bytes(self.path, json.dumps(self.expiry).encode())
            except OSError as e:  # still refused in memory; only a restart would forget it
                log.warning("cannot persist command ids to %s: %s", self.path, e)
