"""Starting the calibration child while inspection threads run BLAS must never deadlock.

With preexec_fn this deadlocked within seconds (OpenBLAS's fork handler joins its threads
while one is busy); the test runs in a subprocess so a deadlock fails it instead of hanging.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

from .mqtt_helpers import ROOT

CODE = textwrap.dedent("""
    import os, sys, threading, time
    import edge  # first, as in the daemon: it sets OpenBLAS's thread timeout before numpy loads
    import numpy as np
    from edge.recalibrate import start_child

    stop = threading.Event()

    def inspection_like():  # the daemon's kNN: a BLAS matmul, over and over
        a, b = np.random.rand(2304, 65).astype(np.float32), np.random.rand(65, 1203).astype(np.float32)
        while not stop.is_set():
            a @ b

    threading.Thread(target=inspection_like, daemon=True).start()
    end = time.monotonic() + 10
    while time.monotonic() < end:
        start_child([sys.executable, "-c", "pass"], dict(os.environ), None, 5).wait()
    probe = "import os, time; time.sleep(0.5); print(os.getpriority(os.PRIO_PROCESS, 0))"
    child = start_child([sys.executable, "-c", probe], dict(os.environ), None, 5)
    print("nice", child.stdout.read().strip())
    stop.set()
""")


def test_starting_children_beside_blas_threads_does_not_deadlock():
    r = subprocess.run([sys.executable, "-c", CODE], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    nice = int(r.stdout.split()[-1])
    assert nice >= 5, r.stdout
