"""Command ids already used: a signed command is accepted once.

The store keeps each used id with its command's `ts` (not an expiry computed from the window
of the day). A seen id is refused while its ts lies within the CURRENT max_age_s of the clock,
the same window the age check applies, so neither a restart with a larger max_age_s nor a
clock stepped forward and back (NTP) reopens it: only then would the age check accept that ts
again, and by then the id is still here. Ids are never dropped for their age alone; only when
the store is full (MAX_IDS) are those outside the current window evicted, oldest first, and if
all are still inside it new commands are refused rather than ids forgotten early. The store is
persisted in the model directory (`commands-seen.json`, {id: ts}, written atomically on every
accepted command); cameras sharing a model directory share one store. A file from before
(values = ts + the old max_age_s) reads as later timestamps: ids kept longer, never shorter.
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
        self.seen: dict[str, float] = {}  # id -> the ts of the command that used it
        try:
            data = json.loads(self.path.read_text())
            self.seen = {str(k): float(v) for k, v in data.items()}
        except FileNotFoundError:
            pass
        except (OSError, ValueError, AttributeError, TypeError) as e:
            log.warning("%s is unreadable (%s); starting with no remembered command ids", self.path, e)

    def claim(self, cmd_id: str, ts: float, max_age_s: float) -> None:
        """Remember `cmd_id`; CommandError if it was used within the window or the store is full."""
        oldest_live = time.time() - max_age_s  # a ts before this is refused by the age check anyway
        with self.lock:
            if cmd_id in self.seen and self.seen[cmd_id] >= oldest_live:
                raise CommandError(f"command id {cmd_id!r} was already used: a replay is refused; "
                                   "send a new command with a new id", authenticated=True, replay=True)
            if cmd_id not in self.seen and len(self.seen) >= MAX_IDS:
                expired = sorted((t, k) for k, t in self.seen.items() if t < oldest_live)
                for _, k in expired[: len(self.seen) - MAX_IDS + 1]:
                    del self.seen[k]
                if len(self.seen) >= MAX_IDS:
                    raise CommandError(f"{MAX_IDS} commands within max_age_s: refused until older ids expire",
                                       authenticated=True)
            self.seen[cmd_id] = float(ts)
            try:
                atomic_write_bytes(self.path, json.dumps(self.seen).encode())
            except OSError as e:  # still refused in memory; only a restart would forget it
                log.warning("cannot persist command ids to %s: %s", self.path, e)
