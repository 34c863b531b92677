"""Batching frames of cameras that share a model version (edge/gpu/batching.py), on device="cpu"."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from edge.gpu.batching import BatchedCamera, SharedBatcher, share_batches
from edge.gpu.resident import ResidentInspector
from edge.inspector import Inspector
from edge.modeldir import load_model
from edge.preprocess import list_images, read_image


@pytest.fixture(scope="module")
def resident(small_model):
    return ResidentInspector(load_model(small_model), device="cpu")


@pytest.fixture(scope="module")
def frames(bottle):
    paths = list_images(bottle / "test/good")[:2] + list_images(bottle / "test/broken_large")[:1]
    return [read_image(p)[150:750, 150:750] for p in paths]  # 600 x 600 ROI views


def test_cameras_batched_and_each_gets_its_own_result(resident, frames):
    # long window and activity span: a batch closes only when every camera is in (a slow CPU takes ~1 s a frame)
    batcher = SharedBatcher(resident, window_s=30.0, active_s=60.0)
    cams = [batcher.handle(f"cam{i}") for i in range(3)]
    direct = [resident.inspect(f).score for f in frames]
    got: dict[int, list] = {i: [] for i in range(3)}
    barrier = threading.Barrier(3)

    def camera(i):
        for k in range(2):
            barrier.wait()
            got[i].append(cams[i].inspect(frames[(i + k) % 3]))

    threads = [threading.Thread(target=camera, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads)
    for i in range(3):
        for k, r in enumerate(got[i]):
            want = direct[(i + k) % 3]
            assert abs(r.score - want) <= 1e-5 * want, (i, k)
    # round 2: all three cameras are active, so one batch of three
    assert any(r.timings_ms["batch"] == 3 for rs in got.values() for r in rs)
    assert batcher.frames == 6 and batcher.batches < 6


def test_a_lone_camera_never_waits_for_the_window(resident, frames):
    batcher = SharedBatcher(resident, window_s=30.0)
    cam = batcher.handle("solo")
    t0 = time.perf_counter()
    for f in frames[:2]:
        r = cam.inspect(f)
        assert r.timings_ms["batch"] == 1 and r.timings_ms["wait"] < 1000
    assert time.perf_counter() - t0 < 30  # the 30 s window was never waited out


def test_errors_reach_every_camera_of_the_batch(resident, frames):
    batcher = SharedBatcher(resident, window_s=0.0)
    with pytest.raises(Exception):
        batcher.handle("cam").inspect(np.zeros((10, 10), np.uint8))  # not a BGR frame
    assert batcher.handle("cam").inspect(frames[0]).verdict in ("pass", "fail")  # the batcher still works


def test_share_batches_groups_resident_cameras_of_one_model_version(resident, small_model):
    cpu = Inspector(load_model(small_model), backend="onnxruntime")
    other = ResidentInspector(load_model(small_model), device="cpu")
    ws = [SimpleNamespace(cfg=SimpleNamespace(name=n), inspector=i)
          for n, i in (("a", resident), ("b", other), ("c", cpu))]
    assert share_batches(ws, 0.0) == []  # window 0: batching off
    shared = share_batches(ws, 0.002)
    assert len(shared) == 1 and shared[0].inspector is resident
    assert isinstance(ws[0].inspector, BatchedCamera) and isinstance(ws[1].inspector, BatchedCamera)
    assert ws[2].inspector is cpu  # the CPU path is never batched
    assert ws[1].inspector.backend.describe() == "torch-resident:cpu"
