"""Camera capture: one thread per camera that only ever holds the latest frame.

A source is behind a small interface so tests and replays feed real frames from a video
file or an image folder. Replayed (finite) sources are not real-time: the capture thread
waits until the previous frame was taken instead of dropping it, so a replay judges every
frame however slow the machine is. The capture thread drops (and counts) a frame that was not
consumed before the next one arrived, reconnects with exponential backoff when the source
fails to open or dies, and a watchdog reopens a stream whose last frame is older than the
stall timeout. Any other failure of a source (a decoder that raises, a bug) does not end the
thread: the camera goes `offline` with a one-line reason (traceback logged once) and is retried
with the same backoff. Sources are shown with their credentials hidden (edge/redact.py).
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from abc import ABC, abstractmethod
from pathlib import Path

import cv2
import numpy as np

from .config import MIN_FPS
from .errors import ImageError, PatchcoreError
from .image_size import check_size
from .preprocess import IMAGE_EXTENSIONS, list_images, read_image, to_bgr8
from .redact import redact
from .threadprio import CAPTURE_NICE, lower_this_thread

log = logging.getLogger(__name__)


class CameraError(PatchcoreError):
    """A camera or stream that cannot be opened or read."""


class FrameSource(ABC):
    """Where frames come from; `finite` sources (files, folders) end unless looped."""

    finite = False

    @abstractmethod
    def open(self) -> None:
        """Open the source or raise CameraError saying what failed."""

    @abstractmethod
    def read(self) -> np.ndarray | None:
        """The next BGR frame, or None when none came (stream hiccup) or the source ended."""

    def close(self) -> None:
        """Release the source."""


class OpenCVSource(FrameSource):
    """A V4L2 device index, an RTSP/HTTP URL or a video file, through cv2.VideoCapture."""

    def __init__(self, source: str | int, loop: bool = False):
        self.source = int(source) if isinstance(source, str) and source.isdigit() else source
        self.finite = isinstance(self.source, str) and "://" not in self.source
        self.loop = loop
        self.cap: cv2.VideoCapture | None = None

    def open(self) -> None:
        if self.finite and not Path(self.source).is_file():
            # a folder source that is missing lands here too (make_source saw no folder)
            raise CameraError(f"camera source {self.source} does not exist (neither a video file nor an image "
                              f"folder); check the camera's source in the config")
        self.cap = cv2.VideoCapture(self.source)
        if not self.cap.isOpened():
            self.cap.release()
            raise CameraError(f"cannot open camera source {redact(repr(self.source))}: check the device index/URL "
                              "and that no other process holds it")

    def read(self) -> np.ndarray | None:
        ok, frame = self.cap.read()
        if not ok and self.finite and self.loop:
            self.cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, frame = self.cap.read()
        if not ok:
            return None
        try:  # a stream of 1x1 or gigapixel frames is a broken source, not something to judge
            check_size(frame.shape[1], frame.shape[0], f"frame from {redact(repr(self.source))}")
        except ImageError as e:
            raise CameraError(str(e)) from e
        return to_bgr8(frame)

    def close(self) -> None:
        if self.cap is not None:
            self.cap.release()


class FolderSource(FrameSource):
    """Image files of a folder in name order: replays a recorded line or a test set."""

    finite = True

    def __init__(self, folder: str | Path, loop: bool = False):
        self.folder, self.loop = Path(folder), loop
        self.paths: list[Path] = []
        self.i = 0

    def open(self) -> None:
        try:
            self.paths = list_images(self.folder)
        except PatchcoreError as e:
            raise CameraError(str(e)) from e
        if not self.paths:
            raise CameraError(f"image folder {self.folder} holds no images")
        self.i = 0
        self.read_ok = False

    def read(self) -> np.ndarray | None:
        failed = 0
        while (self.i < len(self.paths) or self.loop) and failed < len(self.paths):  # one pass at most
            if self.i >= len(self.paths):
                self.i = 0
            path = self.paths[self.i]
            self.i += 1
            try:
                frame = read_image(path)
                self.read_ok = True
                return frame
            except PatchcoreError as e:
                failed += 1
                log.warning("skipping frame: %s", e)
        if not self.read_ok:  # not one file decoded: say so rather than "ended" with no frame
            raise CameraError(f"image folder {self.folder}: none of its {len(self.paths)} image files can be "
                              "decoded (text or truncated files named like images?)")
        return None


class ImageFileSource(FrameSource):
    """One image file (png, jpg, ...): a single frame, or the same one again with `loop`.

    Decoded with the same reader as folders, so a file that is not an image (a text file
    named .png) is a clear camera error instead of a video backend's silent empty stream."""

    finite = True

    def __init__(self, path: str | Path, loop: bool = False):
        self.path, self.loop = Path(path), loop
        self.frame: np.ndarray | None = None
        self.served = False

    def open(self) -> None:
        try:
            self.frame = read_image(self.path)
        except PatchcoreError as e:
            raise CameraError(f"camera source {e}") from e
        self.served = False

    def read(self) -> np.ndarray | None:
        if self.served and not self.loop:
            return None
        self.served = True
        return self.frame


def make_source(source: str | int, loop: bool = False) -> FrameSource:
    """Pick the source type: a folder replays images, an image file is one frame, anything
    else (device, URL, video file) goes to OpenCV."""
    if isinstance(source, str) and Path(source).is_dir():
        return FolderSource(source, loop)
    if isinstance(source, str) and "://" not in source and Path(source).suffix.lower() in IMAGE_EXTENSIONS:
        return ImageFileSource(source, loop)
    return OpenCVSource(source, loop)


# Longest pause between two paced frames, whatever the fps: the config's slowest rate (one frame
# a day); a tiny fps (1e-300) made the pace overflow the clock arithmetic and killed the thread.
MAX_PACE_S = 1.0 / MIN_FPS


def _one_line(e: BaseException) -> str:
    """An unexpected exception as one short line for `camera_error` (credentials hidden)."""
    text = " ".join(str(e).split())
    if len(text) > 200:
        text = text[:200] + "..."
    return redact(f"capture failed: {type(e).__name__}" + (f": {text}" if text else ""))


class Capture(threading.Thread):
    """Reads a source continuously and keeps only the newest frame for the consumer."""

    def __init__(self, name: str, source: FrameSource, fps: float, stall_timeout_s: float = 5.0,
                 backoff_max_s: float = 10.0, lossless: bool | None = None):
        super().__init__(name=f"capture-{name}", daemon=True)
        self.camera, self.source = name, source
        # replayed files are paced at the target rate; live sources deliver at their own rate
        self.pace = min(1.0 / fps, MAX_PACE_S) if source.finite and fps > 0 else 0.0
        self.stall_timeout_s, self.backoff_max_s = stall_timeout_s, backoff_max_s
        # replays judge every frame (back-pressure); live sources and triggered cameras
        # always get the newest frame
        self.lossless = source.finite if lossless is None else lossless
        self.cond = threading.Condition()
        self.frame: np.ndarray | None = None
        self.seq = 0
        self.t_frame = 0.0
        self.consumed_seq = 0
        self.frames = 0
        self.dropped = 0
        self.reconnects = 0
        self.status = "starting"
        self.error: str | None = None
        self._halt = threading.Event()
        self.nice = CAPTURE_NICE

    def stop(self) -> None:
        self._halt.set()
        with self.cond:
            self.cond.notify_all()

    def _set_status(self, status: str, error: str | None = None) -> None:
        error = redact(error) if error else error  # it is logged, published (stats) and served (web)
        if status != self.status:
            log.info("camera %s: %s%s", self.camera, status, f" ({error})" if error else "")
        self.status, self.error = status, error
        with self.cond:
            self.cond.notify_all()

    def run(self) -> None:
        lower_this_thread(self.nice)  # decode in the gaps between frames, not during one
        backoff = 0.5
        logged: str | None = None  # the last unexpected failure whose traceback was logged
        while not self._halt.is_set():
            try:
                self.source.open()
                self._set_status("online")
                ended = self._read_loop()
            except Exception as e:  # noqa: BLE001 - the thread must not die: say why and retry
                if isinstance(e, CameraError):  # a source that does not open or yields nothing usable
                    reason = str(e)
                else:  # a decoder that raised, arithmetic, a bug: same handling, traceback logged once
                    reason = _one_line(e)
                    if reason != logged:  # its message may quote the source: the traceback is redacted too
                        trace = redact("".join(traceback.format_exception(type(e), e, e.__traceback__)))
                        log.error("camera %s: %s; retrying with backoff\n%s", self.camera, reason, trace.rstrip())
                        logged = reason
                self._close_quietly()
                if self.source.finite and not getattr(self.source, "loop", False) \
                        and not isinstance(e, CameraError):
                    # a replay played once: reopening starts it over (every frame judged and
                    # published again) and a failure that repeats would never end; end it instead
                    self._set_status("ended", reason)
                    return
                self._set_status("offline", reason)
                self._halt.wait(backoff)
                backoff = min(backoff * 2, self.backoff_max_s)
                self.reconnects += 1
                continue
            backoff = 0.5
            self._close_quietly()
            if ended:
                self._set_status("ended")
                return
            if not self._halt.is_set():
                self.reconnects += 1
                self._set_status("offline", "stream stalled or died; reconnecting")
        self._set_status("stopped")

    def _close_quietly(self) -> None:
        try:
            self.source.close()
        except Exception as e:  # noqa: BLE001 - closing a broken source must not end the thread
            log.warning("camera %s: closing the source failed: %s", self.camera, _one_line(e))

    def _read_loop(self) -> bool:
        """Read until stopped (False), the finite source ends (True) or the stream stalls (False)."""
        last_ok = time.monotonic()
        next_t = time.monotonic()
        while not self._halt.is_set():
            frame = self.source.read()
            now = time.monotonic()
            if frame is None:
                if self.source.finite:
                    return True
                if now - last_ok > self.stall_timeout_s:  # watchdog on frame age
                    return False
                time.sleep(0.01)
                continue
            last_ok = now
            with self.cond:
                while self.lossless and self.seq > self.consumed_seq and not self._halt.is_set():
                    self.cond.wait(0.1)  # replay: back-pressure instead of dropping
                if self.seq > self.consumed_seq:
                    self.dropped += 1  # the previous frame was never inspected
                self.frame, self.t_frame = frame, time.perf_counter()
                self.seq += 1
                self.frames += 1
                self.cond.notify_all()
            if self.pace:
                next_t = max(next_t + self.pace, now)
                self._halt.wait(max(0.0, next_t - time.monotonic()))
        return False

    def latest(self, after_seq: int, timeout: float) -> tuple[int, np.ndarray, float] | None:
        """The newest frame with seq > after_seq (waits up to timeout), or None."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.seq <= after_seq:
                left = deadline - time.monotonic()
                if left <= 0 or self._halt.is_set() or self.status in ("ended", "stopped"):
                    if self.seq > after_seq:
                        break
                    return None
                self.cond.wait(left)
            self.consumed_seq = self.seq
            self.cond.notify_all()
            return self.seq, self.frame, self.t_frame
