"""Per-thread CPU priority: inspection first, everything that feeds or watches it after.

On Linux every thread is a task with its own nice value, and setpriority() on a thread id
changes that thread only (raising niceness needs no privilege). On a small CPU this keeps a
capture thread decoding the next frame, or a viewer's JPEG encoding, from taking a core from
the ONNX Runtime / BLAS threads of a frame in flight; they run in the gaps between frames.
Elsewhere it is a no-op.
"""

from __future__ import annotations

import logging
import os
import threading

log = logging.getLogger(__name__)

CAPTURE_NICE = 5  # capture threads: decoding the next frame never competes with inspecting this one


def lower_this_thread(by: int) -> bool:
    """Raise the calling thread's nice value by `by` (not the process's); False where unsupported."""
    if by <= 0 or not hasattr(os, "setpriority"):
        return False
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + by))
        return True
    except OSError as e:  # e.g. a seccomp profile refusing it: priority is an optimisation
        log.debug("could not lower thread %s priority: %s", tid, e)
        return False
