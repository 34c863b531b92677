"""What a camera thread hands to the page, and nothing more.

The camera thread calls `LiveState.record` once per inspected frame: it replaces one slot
with a new tuple and appends to bounded deques - no lock, no encoding, no I/O, so a slow or
stalled viewer can never hold up inspection. Everything costly (downscaling, colouring,
JPEG encoding) happens on the web side, only when someone asks, and once per frame however
many people watch (`encoded`).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class Latest:
    """The newest inspected frame: the full camera frame (not only the ROI), its result and map."""

    seq: int
    frame: np.ndarray
    roi: tuple[int, int, int, int] | None
    result: dict
    anomaly_map: np.ndarray


@dataclass
class Failure:
    """One failed frame in the ring; its JPEGs are made when first asked for."""

    id: int
    result: dict
    frame: np.ndarray | None
    roi: tuple[int, int, int, int] | None
    anomaly_map: np.ndarray | None
    jpegs: dict[str, bytes] = field(default_factory=dict)


class LiveState:
    def __init__(self, failures: int = 12, history: int = 3000, minutes: int = 60):
        self.latest: Latest | None = None  # replaced whole, never mutated: readers need no lock
        self.seq = 0
        self.history: deque[tuple[float, float, bool]] = deque(maxlen=history)  # (unix time, normalised, failed)
        self.failures: deque[Failure] = deque(maxlen=failures)
        self.minutes: deque[list] = deque(maxlen=minutes)  # [unix minute, inspected, failed]
        # web side only (the camera thread never takes it): one encoding per frame and kind
        self._lock = threading.Lock()
        self._cache: dict[tuple, bytes] = {}
        self._cache_seq = 0
        self._shown: OrderedDict[int, Failure] = OrderedDict()  # failures listed to a page, by id
        self._shown_max = 4 * failures

    # -- camera thread ---------------------------------------------------------------
    def record(self, frame: np.ndarray, roi, result: dict, anomaly_map: np.ndarray) -> None:
        """Called by the camera thread after each verdict: O(1), lock-free."""
        self.seq += 1
        failed = result["verdict"] == "fail"
        self.latest = Latest(self.seq, frame, roi, result, anomaly_map)
        now = time.time()
        self.history.append((now, result["normalised_score"], failed))
        minute = int(now // 60)
        b = self.minutes[-1] if self.minutes else None
        if b is None or b[0] != minute:
            b = [minute, 0, 0]
            self.minutes.append(b)
        b[1] += 1
        b[2] += failed
        if failed:
            self.failures.append(Failure(self.seq, result, frame, roi, anomaly_map))

    # -- web side --------------------------------------------------------------------
    def fail_rates(self, spans=(1, 5, 15)) -> dict[str, dict]:
        """Inspected, failed and fail rate over the last N minutes (whole minutes, the current one included)."""
        now_m = int(time.time() // 60)
        buckets = list(self.minutes)
        out = {}
        for n in spans:
            inspected = sum(b[1] for b in buckets if b[0] > now_m - n)
            failed = sum(b[2] for b in buckets if b[0] > now_m - n)
            out[f"{n}m"] = {"inspected": inspected, "failed": failed,
                            "fail_rate": round(failed / inspected, 4) if inspected else None}
        return out

    def encoded(self, latest: Latest, key: tuple, make: Callable[[Latest], bytes]) -> bytes:
        """JPEG of `latest` for `key`, made at most once per frame however many viewers ask."""
        with self._lock:
            if self._cache_seq != latest.seq:
                self._cache, self._cache_seq = {}, latest.seq
            data = self._cache.get(key)
            if data is None:
                data = self._cache[key] = make(latest)
            return data

    def listed_failures(self, make: Callable[[Failure, str], bytes]) -> list[Failure]:
        """The ring, newest first, each with its thumbnail made. A failure listed once stays
        fetchable for a while after the ring moved on (`_shown`), so a page never asks for an
        image that vanished between the list and the request. The larger image is made only
        when someone opens it; a failure that left the ring lets its frame go (it then keeps
        its thumbnail, and its larger image if one was made), so at most twice `failures`
        frames per camera are held."""
        items = list(self.failures)[::-1]
        ring = {f.id for f in items}
        with self._lock:
            for f in items:
                if "thumb" not in f.jpegs and f.frame is not None:
                    f.jpegs["thumb"] = make(f, "thumb")
                self._shown[f.id] = f
            for fid, f in self._shown.items():
                if fid not in ring:
                    f.frame = f.anomaly_map = None
            while len(self._shown) > self._shown_max:
                self._shown.popitem(last=False)
        return items

    def failure_jpeg(self, fid: int, size: str, make: Callable[[Failure, str], bytes]) -> bytes | None:
        """The failure's JPEG in `size` (made now if needed and still possible); None if not kept.
        A large image asked for after its frame was let go comes back as the thumbnail."""
        with self._lock:
            f = self._shown.get(fid)
            if f is None:
                return None
            if size not in f.jpegs and f.frame is not None:
                f.jpegs[size] = make(f, size)
            return f.jpegs.get(size) or f.jpegs.get("thumb")
