"""Capture threads run below inspection's priority (edge/threadprio.py), and still deliver."""

from __future__ import annotations

import os
import sys

import pytest

from edge.capture import Capture, make_source
from edge.threadprio import CAPTURE_NICE, lower_this_thread

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux behaviour")


def test_capture_thread_is_niced_but_the_rest_of_the_process_is_not(bottle):
    main_nice = os.getpriority(os.PRIO_PROCESS, 0)
    cap = Capture("cam", make_source(str(bottle / "test/good"), loop=True), fps=50)
    cap.start()
    try:
        got = cap.latest(0, timeout=10)
        assert got is not None and got[1].ndim == 3  # a real decoded frame still arrives
        assert os.getpriority(os.PRIO_PROCESS, cap.native_id) == min(19, main_nice + CAPTURE_NICE)
        assert os.getpriority(os.PRIO_PROCESS, 0) == main_nice  # only that thread moved
    finally:
        cap.stop()
        cap.join(5)


def test_lower_this_thread_is_refused_quietly_for_nothing_to_do():
    assert lower_this_thread(0) is False
