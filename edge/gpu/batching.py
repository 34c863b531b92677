"""Frames of several cameras that share one model version, inspected as one batch on the device.

Each camera's worker thread calls `inspect(frame)` on its own handle and blocks until its
verdict is back, as with a private inspector. The first frame to arrive while the device is
idle makes its thread the leader for one batch: it waits until every camera that is active
(sent a frame, or got a result, within the last `active_s`) has a frame pending, or until `window_s` has passed
since it arrived, whichever is first, then runs all pending frames (at most `max_batch`, one
inspect_many per frame size) and hands each result to its camera. Frames that arrive while a
batch runs form the next one. A lone camera never waits: with one active camera the batch is
full as soon as its frame is there. Why: at batch 1 a GPU is mostly idle between kernel
launches; one batch of N costs far less than N single frames (the issue's H200 probe: 0.92 ms
a frame alone, 0.67 ms a frame at 32, JPEG included).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np

from .resident import ResidentInspection, ResidentInspector


@dataclass
class _Request:
    camera: str
    frame: np.ndarray
    arrived: float = field(default_factory=time.perf_counter)
    result: ResidentInspection | None = None
    error: BaseException | None = None
    done: bool = False


class SharedBatcher:
    """One ResidentInspector serving several cameras' frames in batches."""

    def __init__(self, inspector: ResidentInspector, window_s: float = 0.002, max_batch: int = 32,
                 active_s: float = 0.5):
        self.inspector = inspector
        self.window_s, self.max_batch, self.active_s = window_s, max_batch, active_s
        self._cond = threading.Condition()
        self._pending: list[_Request] = []
        self._leading = False  # a thread is collecting or running a batch
        self._seen: dict[str, float] = {}  # camera -> its last frame's arrival or result (perf_counter)
        self.batches = 0
        self.frames = 0

    def handle(self, camera: str) -> BatchedCamera:
        return BatchedCamera(self, camera)

    def _active(self, now: float) -> int:
        return sum(1 for t in self._seen.values() if now - t <= self.active_s)

    def submit(self, camera: str, frame: np.ndarray) -> ResidentInspection:
        req = _Request(camera, frame)
        with self._cond:
            self._seen[camera] = req.arrived
            self._pending.append(req)
            self._cond.notify_all()  # a collecting leader may now have its full batch
            while not req.done:
                if self._leading:
                    self._cond.wait()
                    continue
                self._leading = True
                deadline = req.arrived + self.window_s
                while len(self._pending) < min(self._active(time.perf_counter()), self.max_batch):
                    left = deadline - time.perf_counter()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                batch, self._pending = self._pending[:self.max_batch], self._pending[self.max_batch:]
                self._cond.release()
                try:
                    self._run(batch)
                finally:
                    self._cond.acquire()
                    self._leading = False
                    done_at = time.perf_counter()
                    for r in batch:
                        r.done = True
                        self._seen[r.camera] = done_at  # its next frame is coming: still active
                    self._cond.notify_all()
        if req.error is not None:
            raise req.error
        return req.result

    def _run(self, batch: list[_Request]) -> None:
        start = time.perf_counter()
        groups: dict[tuple, list[_Request]] = {}
        for r in batch:
            groups.setdefault(r.frame.shape, []).append(r)
        for reqs in groups.values():
            try:
                results = self.inspector.inspect_many([r.frame for r in reqs])
            except Exception as e:  # every camera of the group gets the error, as its own frame would
                for r in reqs:
                    r.error = e
                continue
            for r, res in zip(reqs, results):
                res.timings_ms["wait"] = (start - r.arrived) * 1e3
                res.timings_ms["batch"] = float(len(reqs))
                r.result = res
        self.batches += 1
        self.frames += len(batch)


class BatchedCamera:
    """A camera's view of a SharedBatcher: what the daemon reads of an inspector."""

    def __init__(self, batcher: SharedBatcher, camera: str):
        self.batcher, self.camera = batcher, camera
        insp = batcher.inspector
        self.model, self.backend, self.search, self.geometry = insp.model, insp.backend, insp.search, insp.geometry

    def inspect(self, bgr: np.ndarray) -> ResidentInspection:
        return self.batcher.submit(self.camera, bgr)

    def heatmap_jpeg(self, frame, r, max_side, quality) -> bytes:
        return self.batcher.inspector.heatmap_jpeg(frame, r, max_side, quality)


def share_batches(workers, window_s: float) -> list[SharedBatcher]:
    """Give cameras whose resident inspectors hold the same model version one SharedBatcher
    (their own inspectors are dropped: one copy of the network and bank on the device)."""
    if window_s <= 0:
        return []
    groups: dict[tuple[str, str], list] = {}
    for w in workers:
        insp = w.inspector
        if isinstance(insp, ResidentInspector):
            groups.setdefault((str(insp.model.path.resolve()), insp.model.version), []).append(w)
    shared = []
    for ws in groups.values():
        if len(ws) < 2:
            continue
        batcher = SharedBatcher(ws[0].inspector, window_s=window_s)
        for w in ws:
            w.inspector = batcher.handle(w.cfg.name)
        shared.append(batcher)
    return shared
