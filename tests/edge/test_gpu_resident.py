"""The device-resident inspection path (edge/gpu/) on device="cpu" against the CPU path.

The same torch code runs on CUDA; the CUDA-only parts (graphs, pinned upload, nvJPEG) are
tested by the last test, which skips without a CUDA device.
"""

from __future__ import annotations

import copy

import cv2
import numpy as np
import pytest
import torch

from edge.geometry import Geometry
from edge.gpu import heatmap_jpeg, open_inspector, resident_device
from edge.gpu import preprocess as gp
from edge.gpu.resident import ResidentInspection, ResidentInspector
from edge.heatmap import encode_jpeg, overlay
from edge.inspector import Inspector
from edge.modeldir import Model, load_model
from edge.preprocess import list_images, read_image

MEAN, STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
LEVEL = 1.0 / (255.0 * 0.5)  # one uint8 level after normalisation


@pytest.fixture(scope="module")
def frames(bottle):
    """Good and defective bottle test images (900 x 900), the set the parity checks use."""
    picks = [("good", 3), ("broken_large", 2), ("broken_small", 1), ("contamination", 2)]
    paths = [p for d, n in picks for p in list_images(bottle / "test" / d)[:n]]
    return [(p.parent.name + "/" + p.name, read_image(p)) for p in paths]


@pytest.fixture(scope="module")
def model(small_model):
    return load_model(small_model)


@pytest.fixture(scope="module")
def resident(model):
    return ResidentInspector(model, device="cpu")


@pytest.fixture(scope="module")
def ort(model):
    return Inspector(model, backend="onnxruntime")


def _torch_inputs(bgr: np.ndarray, geo: Geometry) -> np.ndarray:
    x = gp.normalise(gp.resize_to(gp.frames_to_tensor(torch.from_numpy(np.ascontiguousarray(bgr))[None]),
                                  geo.canvas), MEAN, STD)[0].numpy()
    if not geo.tiled:
        return x[None]
    w, h = geo.size
    return np.stack([x[:, y:y + h, xx:xx + w] for xx, y in geo.origins()])


@pytest.mark.parametrize("geo", [Geometry(192, 192), Geometry(224, 224), Geometry(256, 192),
                                 Geometry(96, 96, 2, 2, 0.25)], ids=str)
def test_torch_preprocessing_is_calibrations(bottle, geo):
    """Calibration's CPU preprocessing (geometry.inputs: pyrDown + INTER_AREA + normalise) and the
    torch one agree exactly on real shrinking frames, ROI views included."""
    for p in list_images(bottle / "train/good")[:2] + list_images(bottle / "test/broken_large")[:1]:
        img = read_image(p)
        for frame in (img, img[113:801, 40:870]):  # a full frame and an odd-sized ROI view
            cpu = geo.inputs(frame, MEAN, STD)
            assert np.array_equal(_torch_inputs(frame, geo), cpu), (p.name, frame.shape, geo)


def test_torch_preprocessing_when_enlarging_is_within_one_level(bottle):
    """Frames smaller than the network input use INTER_LINEAR, where OpenCV's uint8 fixed point
    differs from float interpolation by at most one level on some pixels."""
    small = cv2.resize(read_image(list_images(bottle / "train/good")[0]), (150, 130), interpolation=cv2.INTER_AREA)
    geo = Geometry(192, 192)
    diff = np.abs(_torch_inputs(small, geo) - geo.inputs(small, MEAN, STD))
    assert diff.max() <= LEVEL + 1e-6 and (diff > 1e-6).mean() < 0.15


def _check_parity(a, b, frames, rel=1e-4):
    for name, img in frames:
        ra, rb = a.inspect(img), b.inspect(img)
        assert rb.verdict == ra.verdict, name
        assert abs(rb.score - ra.score) <= rel * ra.score, (name, ra.score, rb.score)
        assert rb.anomaly_map.shape == ra.anomaly_map.shape
        assert np.abs(rb.anomaly_map - ra.anomaly_map).max() <= 1e-3 * ra.threshold, name
        assert rb.patch_scores.shape == ra.patch_scores.shape


def test_resident_cpu_gives_the_ort_paths_verdicts_and_scores(resident, ort, frames):
    """FP32 parity on bottle test images: same verdicts, scores within 1e-4 relative, same maps."""
    verdicts = {name: resident.inspect(img).verdict for name, img in frames}
    assert "pass" in verdicts.values() and "fail" in verdicts.values()  # both sides of the threshold are checked
    _check_parity(ort, resident, frames)


@pytest.mark.parametrize("merge", ["max", "mean"])
def test_resident_tiled_parity(model, frames, merge):
    """Tiles (2x2, overlap 0.25) cut, scored as one batch and merged on the canvas as the CPU path does."""
    manifest = copy.deepcopy(model.manifest)
    manifest["tiling"] = {"tiles": [2, 2], "overlap": 0.25, "merge": merge}
    tiled = Model(model.path, manifest, model.bank)
    _check_parity(Inspector(tiled, backend="onnxruntime"), ResidentInspector(tiled, device="cpu"), frames[2:5])


def test_reweighted_score_parity(model, frames):
    """Eq. 7 reweighting computed on the device gives the CPU path's score."""
    _check_parity(Inspector(model, backend="onnxruntime", reweight=True),
                  ResidentInspector(model, device="cpu", reweight=True), frames[:1] + frames[3:4])


def test_batch_and_roi_views_match_single_frames(resident, frames):
    imgs = [img[100:800, 50:850] for _, img in frames[:3]]  # non-contiguous views, as the daemon's ROI
    batch = resident.inspect_many(imgs)
    for img, rb in zip(imgs, batch):
        r1 = resident.inspect(np.ascontiguousarray(img))
        assert abs(rb.score - r1.score) <= 1e-5 * r1.score and rb.verdict == r1.verdict
        assert np.allclose(rb.anomaly_map, r1.anomaly_map, atol=1e-4)
    with pytest.raises(ValueError, match="one size"):
        resident.inspect_many([imgs[0], frames[0][1]])


def test_profile_timings_and_describe(resident, frames):
    r = resident.inspect(frames[0][1], profile=True)
    assert isinstance(r, ResidentInspection)
    assert set(r.timings_ms) == {"upload", "preprocess", "backbone", "knn", "map"}
    assert resident.inspect(frames[0][1]).timings_ms.keys() == {"device"}
    assert resident.backend.describe() == "torch-resident:cpu"  # no graphs on a CPU
    assert resident.search.name == "torch-matmul:cpu"


def test_heatmap_drawn_by_the_resident_path_matches_the_cpu_one(resident, ort, frames):
    name, img = frames[3]
    rr, ro = resident.inspect(img), ort.inspect(img)
    jr = heatmap_jpeg(resident, img, rr, 320, 90)
    jo = heatmap_jpeg(ort, img, ro, 320, 90)
    assert jo == encode_jpeg(overlay(img, ro.anomaly_map, ro.threshold, 320), 90)  # CPU path: unchanged
    a, b = (cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR) for j in (jr, jo))
    assert a.shape == b.shape == (320, 320, 3)
    assert np.abs(a.astype(int) - b.astype(int)).mean() < 2.0, name
    assert not resident.jpeg_on_device  # nvJPEG only on CUDA


def test_selection_keeps_the_cpu_path_here(model, monkeypatch):
    """Without CUDA every backend setting keeps the ONNX Runtime/BLAS Inspector; explicit
    onnxruntime/tensorrt never go resident; PATCHCORE_RESIDENT=cpu forces it (wiring tests)."""
    monkeypatch.delenv("PATCHCORE_RESIDENT", raising=False)
    for kind in ("onnxruntime", "tensorrt"):
        assert resident_device(kind) is None
    if not torch.cuda.is_available():
        assert resident_device("auto") is None and resident_device("torch") is None
        assert type(open_inspector(model, "auto")) is Inspector
    monkeypatch.setenv("PATCHCORE_RESIDENT", "0")
    assert resident_device("torch") is None
    monkeypatch.setenv("PATCHCORE_RESIDENT", "cpu")
    assert resident_device("auto") == "cpu" and resident_device("onnxruntime") is None
    assert isinstance(open_inspector(model, "auto"), ResidentInspector)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: CUDA graphs, pinned upload and nvJPEG "
                    "of the resident path are only checked on a GPU machine")
def test_cuda_resident_parity_graphs_and_nvjpeg(model, ort, frames):
    cuda = ResidentInspector(model, device="cuda")
    _check_parity(ort, cuda, frames)
    assert cuda.backend.graphs and any(g is not None for g in cuda._graphs.values()), "no CUDA graph captured"
    _check_parity(ort, cuda, frames)  # replays: outputs of one frame are not overwritten by the next
    batch = cuda.inspect_many([img for _, img in frames[:4]])
    for (_, img), rb in zip(frames[:4], batch):
        assert abs(rb.score - ort.inspect(img).score) <= 1e-4 * rb.score
    r = cuda.inspect(frames[3][1])
    jpeg = heatmap_jpeg(cuda, frames[3][1], r, 320, 80)
    assert cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).shape == (320, 320, 3)


def test_daemon_runs_the_resident_path_through_the_broker(small_model, bottle, tmp_path):
    """The daemon wired to the resident inspector (forced onto the CPU here; on a GPU machine
    'auto' picks it by itself): verdicts, heatmap JPEG drawn by it, backend named in stats; two
    cameras on one model version share a batcher (gpu_batch_ms)."""
    from .mqtt_helpers import Collector, new_prefix, start_daemon, write_config

    src = tmp_path / "frames"
    src.mkdir()
    for i, p in enumerate(list_images(bottle / "test/good")[:2] + list_images(bottle / "test/broken_large")[:2]):
        (src / f"{i:02d}.png").write_bytes(p.read_bytes())
    prefix = new_prefix()
    sub = Collector(prefix)
    cams = [{"name": n, "source": str(src), "model": str(small_model), "fps": 10, "roi": [30, 20, 840, 860]}
            for n in ("cam1", "cam2")]
    cfg = write_config(tmp_path / "d.yaml", prefix, cams, gpu_batch_ms=20)
    p = start_daemon(cfg, env={"PATCHCORE_RESIDENT": "cpu"})
    try:
        assert sub.wait_for(lambda: all(len(sub.of(f"{c}/result")) >= 4 for c in ("cam1", "cam2")), 240), \
            p.diagnose()
        assert sub.wait_for(lambda: any(all(s["cameras"].get(c, {}).get("results", 0) >= 4 for c in ("cam1", "cam2"))
                                        for s in sub.json_of("stats")), 30)
    finally:
        out, err = p.stop()
    assert p.returncode == 0, err
    # the verdicts the ONNX Runtime inspector gives the same crops (a 16-image model is borderline on
    # a cropped good frame, so the reference is the CPU path itself), and both defects fail
    ort = Inspector(load_model(small_model), backend="onnxruntime")
    want = [ort.inspect(read_image(p)[20:880, 30:870]).verdict for p in sorted(src.iterdir())]
    assert want[2:] == ["fail", "fail"] and "pass" in want[:2]
    for c in ("cam1", "cam2"):
        assert [r["verdict"] for r in sub.json_of(f"{c}/result")[:4]] == want, c
        jpeg = cv2.imdecode(np.frombuffer(sub.of(f"{c}/heatmap")[-1], np.uint8), cv2.IMREAD_COLOR)
        assert jpeg is not None and max(jpeg.shape[:2]) == 320
        cam = sub.json_of("stats")[-1]["cameras"][c]
        assert cam["backend"] == "torch-resident:cpu" and cam["search"] == "torch-matmul:cpu"
        assert {"device", "heatmap", "total", "batch", "wait"} <= set(cam["latency_ms"]), c  # through the batcher
    sub.close()


def test_graph_capture_failure_falls_back_to_eager_and_pads_batches(model, resident, frames, caplog):
    """Graphs asked for where they cannot be captured (here: no CUDA): one warning, eager runs,
    same results; batches are padded to a power of two and only the real frames come back."""
    forced = ResidentInspector(model, device="cpu", graphs=True)
    assert forced.backend.describe().endswith(":cuda-graphs")
    imgs = [img for _, img in frames[:3]]
    with caplog.at_level("WARNING", logger="edge.gpu.resident"):
        got = forced.inspect_many(imgs)
        forced.inspect_many(imgs)
    assert len(got) == 3
    assert sum("CUDA graph capture failed" in r.message for r in caplog.records) == 1  # said once per shape
    for img, r in zip(imgs, got):
        want = resident.inspect(img)
        assert abs(r.score - want.score) <= 1e-5 * want.score and r.verdict == want.verdict


@pytest.mark.parametrize("side", [160, 320, 640])
def test_torch_heatmap_draws_the_cpu_picture(bottle, side):
    """edge/gpu/heatmap.py's overlay (here on the CPU device) against edge/heatmap.py's, on a
    real frame: same size, at most a few levels apart (bilinear rounding)."""
    from edge.gpu import heatmap as gpu_heatmap

    frame = read_image(bottle / "test/broken_large/000.png")[:, :, ::-1].copy()  # BGR, as a camera gives
    amap = (np.random.default_rng(0).random((224, 224)) * 30).astype(np.float32)
    want = overlay(frame, amap, 15.0, side)
    got = gpu_heatmap.overlay(torch.from_numpy(frame).permute(2, 0, 1).float(), torch.from_numpy(amap), 15.0,
                              side).permute(1, 2, 0).numpy()
    diff = np.abs(want.astype(int) - got.astype(int))
    assert got.shape == want.shape and diff.max() <= 4 and diff.mean() < 0.5
