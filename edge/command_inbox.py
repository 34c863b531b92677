"""Commands off paho's network thread, and refusals that cannot flood the log or the broker.

paho calls message handlers on its one network thread, the same thread that writes every
result to the broker. A flood of forged commands (20000 in 0.3 s, no secret needed) handled
there - a WARNING line and a retained QoS-1 status publish each - stalled results for 10 s
and more and wrote 3 MB of log. Here the network thread only drops the payload into a
bounded queue (dropped and counted when full); one worker thread per camera handles the
queue, and refusals are logged once per LOG_EVERY_S with a count and answered on the status
topic at most PUBLISH_RATE times a second (the rest counted in the stats).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

from .commands import MAX_PAYLOAD

log = logging.getLogger(__name__)

QUEUE_SIZE = 32  # commands waiting for their camera's worker; a real operator sends one at a time
LOG_EVERY_S = 10.0  # at most one "refused" summary line per camera this often
PUBLISH_RATE = 5.0  # refusals answered on the status topic per second and camera (token bucket)
PUBLISH_BURST = 20  # an operator retrying by hand never meets the limit


class Oversize(bytes):
    """The first MAX_PAYLOAD + 1 bytes of a payload that is too large, standing in for it in the
    queue; len() is the real size, so the refusal still names it (commands.authenticate)."""

    def __new__(cls, payload: bytes):
        self = super().__new__(cls, payload[:MAX_PAYLOAD + 1])
        self.size = len(payload)
        return self

    def __len__(self) -> int:
        return self.size


class Refusals:
    """Counts refused commands; says which ones get a log line and a status answer."""

    def __init__(self, camera: str):
        self.camera = camera
        self.total = 0  # refused since start (stats)
        self.unanswered = 0  # refused without a status answer (rate limit or full queue)
        self._since_log = 0  # refused since the last log line
        self._last_log = float("-inf")
        self._tokens = float(PUBLISH_BURST)
        self._last_refill = time.monotonic()
        self.lock = threading.Lock()

    def refused(self, reason: str, answer: bool = True) -> bool:
        """Count one refusal; True when it should be answered on the status topic."""
        now = time.monotonic()
        with self.lock:
            self.total += 1
            self._since_log += 1
            if now - self._last_log >= LOG_EVERY_S:
                more = self._since_log - 1
                log.warning("camera %s: command refused: %s%s", self.camera, reason,
                            f" (and {more} more refused since the last such line)" if more else "")
                self._last_log, self._since_log = now, 0
            self._tokens = min(PUBLISH_BURST, self._tokens + (now - self._last_refill) * PUBLISH_RATE)
            self._last_refill = now
            if answer and self._tokens >= 1:
                self._tokens -= 1
                return True
            self.unanswered += 1
            return False

    def flush(self) -> None:
        """Log the count of refusals not yet logged, once the window has passed (a flood's tail)."""
        with self.lock:
            if self._since_log and time.monotonic() - self._last_log >= LOG_EVERY_S:
                log.warning("camera %s: %d more commands refused since the last such line", self.camera,
                            self._since_log)
                self._last_log, self._since_log = time.monotonic(), 0

    def snapshot(self) -> dict:
        return {"refused": self.total, "refused_unanswered": self.unanswered}


class CommandInbox:
    """A bounded queue from paho's network thread to one worker thread that runs `handler`."""

    def __init__(self, camera: str, handler: Callable[[str, bytes], None], refusals: Refusals):
        self.handler, self.refusals = handler, refusals
        self.queue: queue.Queue = queue.Queue(QUEUE_SIZE)
        self.thread = threading.Thread(target=self._run, name=f"commands-{camera}", daemon=True)
        self.thread.start()

    def put(self, topic: str, payload: bytes) -> None:
        """Called on paho's network thread: never blocks, never logs per message."""
        if len(payload) > MAX_PAYLOAD:  # do not keep a huge payload queued (commands.py refuses it anyway)
            payload = Oversize(payload)
        try:
            self.queue.put_nowait((topic, payload))
        except queue.Full:
            self.refusals.refused(f"more than {QUEUE_SIZE} commands waiting; this one was dropped unread",
                                  answer=False)

    def _run(self) -> None:
        while True:
            try:
                item = self.queue.get(timeout=LOG_EVERY_S)
            except queue.Empty:
                self.refusals.flush()
                continue
            if item is None:
                return
            try:
                self.handler(*item)
            except Exception:  # noqa: BLE001 - a handler bug must not end command handling
                log.exception("command handling crashed")

    def stop(self) -> None:
        try:
            self.queue.put_nowait(None)
        except queue.Full:
            pass  # daemon thread: it ends with the process
