"""Rolling per-camera statistics for the stats topic: fps, latency percentiles per stage, errors."""

from __future__ import annotations

import threading
import time
from collections import deque

import numpy as np

WINDOW = 512  # results kept for percentiles


class CameraStats:
    def __init__(self):
        self.lock = threading.Lock()
        self.stages: dict[str, deque[float]] = {}
        self.times: deque[float] = deque(maxlen=WINDOW)
        self.results = 0
        self.fails = 0
        self.errors = 0  # frames whose inspection raised
        self.triggers = 0  # MQTT triggers received (trigger: mqtt)
        self.triggers_merged = 0  # of those, arrived while one was pending: served by the same frame
        self.last_error: str | None = None
        self.last_error_at: float | None = None  # monotonic

    def add(self, timings_ms: dict[str, float], verdict: str) -> None:
        with self.lock:
            self.results += 1
            self.fails += verdict == "fail"
            self.times.append(time.monotonic())
            for k, v in timings_ms.items():
                self.stages.setdefault(k, deque(maxlen=WINDOW)).append(v)

    def trigger(self, merged: bool) -> None:
        with self.lock:
            self.triggers += 1
            self.triggers_merged += merged

    def error(self, message: str) -> None:
        with self.lock:
            self.errors += 1
            self.last_error, self.last_error_at = message, time.monotonic()

    def snapshot(self) -> dict:
        """fps over the window, p50/p99 per stage (ms), inspection errors and the last one's age."""
        with self.lock:
            fps = 0.0
            if len(self.times) > 1 and self.times[-1] > self.times[0]:
                fps = (len(self.times) - 1) / (self.times[-1] - self.times[0])
            lat = {k: {"p50": round(float(np.percentile(v, 50)), 2), "p99": round(float(np.percentile(v, 99)), 2)}
                   for k, v in self.stages.items() if v}
            age = None if self.last_error_at is None else round(time.monotonic() - self.last_error_at, 1)
            return {"fps": round(fps, 2), "results": self.results, "fails": self.fails, "latency_ms": lat,
                    "errors": self.errors, "last_error": self.last_error, "last_error_s": age,
                    "triggers": self.triggers, "triggers_merged": self.triggers_merged}
