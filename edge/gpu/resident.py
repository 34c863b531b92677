"""The device-resident inspector: the whole frame -> verdict path on one torch device.

uint8 frame (the ROI, copied once into a pinned host buffer and uploaded once) -> resize +
normalise (edge/gpu/preprocess.py, the CPU definition) -> tiles -> the manifest's backbone
and aggregation (edge/features.py's PatchFeatures, the torch reference of backbone.onnx) ->
exact 1-NN against the bank held on the device (edge/gpu/nearest.py) -> patch map upsample
+ Gaussian (edge/gpu/maps.py) -> image score. Only the scores come back to the host; the
anomaly map, patch scores and the frame stay on the device until something asks for them
(the heatmap is drawn and JPEG-encoded there too: edge/gpu/heatmap.py).

On CUDA each (batch, frame height, width) is captured once as a CUDA graph and replayed
(at batch 1 the launch overhead of ~200 small kernels is most of the time); a failed
capture, PATCHCORE_CUDA_GRAPHS=0 or a faiss-gpu index (its own streams) fall back to eager
launches. On device="cpu" the same code runs eagerly: that is what CI tests.
FP32 only this round (FP16 needs its parity measured on a GPU first).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time

import numpy as np
import torch

from ..backends.torch_backend import TorchBackend
from ..heatmap import encode_jpeg as cpu_encode_jpeg
from ..heatmap import overlay as cpu_overlay
from ..inspector import Inspection, judge
from ..modeldir import Model
from ..scoring import REWEIGHT_NEIGHBOURS
from ..shapecheck import check_backbone_output
from . import heatmap as gpu_heatmap
from . import preprocess as pp
from .maps import MapMaker
from .nearest import TorchNearest

log = logging.getLogger(__name__)

MAX_GRAPHS = 8  # captured (batch, H, W) shapes per inspector; others run eagerly
_CAPTURE_LOCK = threading.Lock()  # one graph capture at a time in the process (cameras start together)


class ResidentBackend(TorchBackend):
    """The backbone module on the device; also callable on host batches (shape check, tools)."""

    name = "torch-resident"

    def __init__(self, extractor, device: torch.device, graphs: bool):
        super().__init__(extractor, device=str(device))
        self.graphs = graphs

    def describe(self) -> str:
        return f"{self.name}:{self.device}" + (":cuda-graphs" if self.graphs else "")


class ResidentInspection(Inspection):
    """An Inspection whose patch scores and anomaly map stay on the device until read."""

    def __init__(self, score: float, threshold: float, model_version: str, patch: torch.Tensor,
                 amap: torch.Tensor, frame: torch.Tensor, timings_ms: dict[str, float], stream=None):
        norm, self.verdict, self.reason = judge(score, threshold)  # a non-finite score fails
        self.score, self.normalised, self.threshold = score, norm, threshold
        self.model_version, self.timings_ms = model_version, timings_ms
        self.device_patch, self.device_map, self.device_frame = patch, amap, frame
        self.stream = stream  # the CUDA stream that wrote the tensors: readers queue behind it
        self._host: dict[str, np.ndarray] = {}

    def on_stream(self):
        return torch.cuda.stream(self.stream) if self.stream is not None else contextlib.nullcontext()

    @property
    def patch_scores(self) -> np.ndarray:  # (h, w); tiled: (tiles, h, w)
        if "patch" not in self._host:
            p = self.device_patch
            with self.on_stream():
                self._host["patch"] = (p[0] if p.shape[0] == 1 else p).cpu().numpy()
        return self._host["patch"]

    @property
    def anomaly_map(self) -> np.ndarray:  # (H, W)
        if "map" not in self._host:
            with self.on_stream():
                self._host["map"] = self.device_map.cpu().numpy()
        return self._host["map"]


class _Graph:
    """One captured run of `fn` for a fixed input shape: a pinned host buffer, a static device
    input and static outputs, overwritten by every replay."""

    def __init__(self, fn, shape: tuple[int, ...], device: torch.device):
        self.host = torch.empty(shape, dtype=torch.uint8, pin_memory=True)
        self.static_in = torch.zeros(shape, dtype=torch.uint8, device=device)
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):  # warm-up: cuDNN picks its kernels, the constant caches fill
            for _ in range(3):
                fn(self.static_in)
        torch.cuda.current_stream(device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        # thread_local: other cameras' threads keep launching their own (non-default) streams meanwhile
        with _CAPTURE_LOCK, torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
            self.out = fn(self.static_in)

    def run(self, frames: list[np.ndarray]) -> dict[str, torch.Tensor]:
        host = self.host.numpy()
        for i, f in enumerate(frames):
            host[i] = f  # one copy of the (possibly non-contiguous) ROI view into pinned memory
        self.static_in.copy_(self.host, non_blocking=True)
        self.graph.replay()
        return self.out


def graphs_possible(device: torch.device) -> bool:
    """CUDA graphs can be used: a CUDA device and not switched off (PATCHCORE_CUDA_GRAPHS=0)."""
    return device.type == "cuda" and os.environ.get("PATCHCORE_CUDA_GRAPHS", "1") != "0" \
        and hasattr(torch.cuda, "CUDAGraph")


class ResidentInspector:
    """Drop-in for edge.inspector.Inspector (same attributes the daemon reads: model, backend,
    search, geometry; `inspect`, `heatmap_jpeg`) plus `inspect_many` for a batch of frames."""

    def __init__(self, model: Model, device: str | torch.device = "cuda", reweight: bool = False,
                 graphs: bool | None = None):
        self.graphs_wanted = graphs
        self.model, self.reweight = model, reweight
        self.device = torch.device(device)
        # each inspector works on its own CUDA stream, never the legacy default one: that one would
        # synchronise with (and break) a graph capture running in another camera's thread
        self.stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        with self._on_stream():
            self._load(model)
        self._graphs: dict[tuple[int, ...], _Graph | None] = {}
        self._lock = threading.Lock()  # graphs' static buffers: one replay at a time

    def _on_stream(self):
        return torch.cuda.stream(self.stream) if self.stream is not None else contextlib.nullcontext()

    def _load(self, model: Model) -> None:
        from ..features import build_extractor

        self.geometry = geo = model.geometry
        bb = model.spec.backbone
        extractor, _ = build_extractor(bb.name, bb.weights_path, model.spec.feature_dim_request, geo.size, bb.strides)
        grid = model.spec.grid
        self.search = TorchNearest(model.bank, self.device, geo.tiles * grid[0] * grid[1])
        use_graphs = graphs_possible(self.device) if self.graphs_wanted is None else self.graphs_wanted
        self.backend = ResidentBackend(extractor, self.device, use_graphs and self.search.capturable)
        check_backbone_output(self.backend, model.manifest, str(model.path))  # refuse now, not every frame
        self.net = self.backend.model
        self.maps = MapMaker(geo, self.device)
        self.jpeg_on_device = gpu_heatmap.nvjpeg_available(self.device)

    # -- the device graph ------------------------------------------------------------------------
    def _core(self, frames_u8: torch.Tensor, marks: list | None = None) -> dict[str, torch.Tensor]:
        """(B, H, W, 3) uint8 on the device -> scores (B,), patch (B*tiles, h, w), map (B, CH, CW),
        features and 1-NN indices (for eq. 7). `marks` collects (stage, time) with syncs (profiling)."""
        geo, m = self.geometry, self.model

        def mark(stage: str) -> None:
            if marks is not None:
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                marks.append((stage, time.perf_counter()))

        b = frames_u8.shape[0]
        x = pp.normalise(pp.resize_to(pp.frames_to_tensor(frames_u8), geo.canvas), m.mean, m.std)
        if geo.tiled:
            w, h = geo.size
            x = torch.stack([x[:, :, y:y + h, xx:xx + w] for xx, y in geo.origins()], 1).flatten(0, 1)
        mark("preprocess")
        feats = self.net(x)  # (B * tiles, D, h, w)
        mark("backbone")
        n, d, gh, gw = feats.shape
        q = feats.permute(0, 2, 3, 1).reshape(-1, d)
        dist, idx = self.search(q)
        patch = dist.view(n, gh, gw)
        tile_scores = patch.flatten(1).amax(1)
        frame, k = patch.reshape(b, -1), min(m.spec.score_top_k, geo.tiles * gh * gw)
        # edge.scoring.image_scores over all of a frame's patches (its tiles together)
        scores = frame.amax(1) if k <= 1 else frame.topk(k, dim=1).values.mean(1)
        mark("knn")
        dims, weight, scale = m.spec.map_fine  # edge.scoring.map_scores: + the fine stages' residual
        drawn = patch if not (dims and weight) else scale * (patch + weight * torch.linalg.vector_norm(
            q[:, :dims] - self.search.bank[idx, :dims], dim=1).view(n, gh, gw))
        amap = self.maps(drawn)
        mark("map")
        return {"scores": scores, "tile_scores": tile_scores, "patch": patch, "map": amap, "feats": feats,
                "idx": idx, "frames": frames_u8}

    def _graph_for(self, shape: tuple[int, ...]) -> _Graph | None:
        if not self.backend.graphs:
            return None
        if shape not in self._graphs:
            if len(self._graphs) >= MAX_GRAPHS:
                return None
            try:
                with torch.no_grad():
                    self._graphs[shape] = _Graph(self._core, shape, self.device)
                log.info("CUDA graph captured for %s frames of %dx%d", shape[0], shape[2], shape[1])
            except Exception as e:  # capture is an optimisation: run eagerly, say why once
                log.warning("CUDA graph capture failed for shape %s (%s); running without graphs",
                            shape, str(e).splitlines()[0][:200])
                self._graphs[shape] = None
        return self._graphs[shape]

    def _upload(self, frames: list[np.ndarray]) -> torch.Tensor:
        host = torch.from_numpy(np.stack(frames) if len(frames) > 1 else np.ascontiguousarray(frames[0])[None])
        if self.device.type == "cpu":
            return host
        return host.pin_memory().to(self.device, non_blocking=True)

    # -- public ------------------------------------------------------------------------------------
    def inspect(self, bgr: np.ndarray, profile: bool = False) -> ResidentInspection:
        """Score one BGR frame of any size (the ROI already cut: a view is fine)."""
        return self.inspect_many([bgr], profile)[0]

    @torch.no_grad()
    def inspect_many(self, frames: list[np.ndarray], profile: bool = False) -> list[ResidentInspection]:
        """Score frames of one size as one batch. profile=True: eager, synchronised per stage
        (timings preprocess/backbone/knn/map as the CPU path reports them; slower)."""
        if len({f.shape for f in frames}) != 1:
            raise ValueError("inspect_many needs frames of one size; group them by shape")
        n = len(frames)
        if self.backend.graphs and n > 1:  # batches padded to a power of two: few graphs serve every batch size
            frames = frames + [frames[-1]] * ((1 << (n - 1).bit_length()) - n)
        shape = (len(frames), *frames[0].shape)
        t0 = time.perf_counter()
        with self._lock, self._on_stream():
            graph = None if profile else self._graph_for(shape)
            marks: list | None = [("start", t0)] if profile else None
            if graph is not None:
                out = graph.run(frames)
                t_up = t0
            else:
                u8 = self._upload(frames)
                t_up = time.perf_counter()
                if marks is not None:
                    marks[0] = ("start", t_up)
                out = self._core(u8, marks)
            scores = self._scores(out)  # the one device -> host copy on the verdict path (synchronises)
            t1 = time.perf_counter()
            # graph outputs are overwritten by the next replay: keep this frame's on the device
            keep = (lambda t: t.clone()) if graph is not None else (lambda t: t)
            tiles = self.geometry.tiles
            patch, amap, fr = keep(out["patch"]), keep(out["map"]), keep(out["frames"])
        if marks is not None:
            timings = {stage: (t - marks[i][1]) * 1e3 for i, (stage, t) in enumerate(marks[1:])}
            timings["upload"] = (t_up - t0) * 1e3
        else:
            timings = {"device": (t1 - t0) * 1e3}
        m = self.model
        return [ResidentInspection(float(scores[i]), m.threshold, m.version, patch[i * tiles:(i + 1) * tiles],
                                   amap[i], fr[i], dict(timings), self.stream) for i in range(n)]

    def _scores(self, out: dict[str, torch.Tensor]) -> np.ndarray:
        if not self.reweight:
            return out["scores"].cpu().numpy()
        return self._reweighted(out)

    def _reweighted(self, out: dict[str, torch.Tensor]) -> np.ndarray:
        """Eq. 7 per network input (tile), then the max over each frame's tiles (edge.scoring's rule)."""
        feats, patch, idx, bank = out["feats"], out["patch"], out["idx"], self.search.bank
        n, d = feats.shape[:2]
        per = feats.permute(0, 2, 3, 1).reshape(n, -1, d)
        dist, nn_idx = patch.reshape(n, -1), idx.view(n, -1)
        k = min(REWEIGHT_NEIGHBOURS, len(bank))
        tile = []
        for j in range(n):
            i = int(dist[j].argmax())
            s_star = dist[j, i]
            nb = self.search.knn_of(bank[nn_idx[j, i]], k)
            dd = torch.linalg.vector_norm(bank[nb] - per[j, i], dim=1)
            w = torch.exp(s_star - dd.min()) / torch.exp(dd - dd.min()).sum()
            tile.append(float((1.0 - w) * s_star))
        return np.asarray(tile, dtype=np.float64).reshape(-1, self.geometry.tiles).max(axis=1)

    def heatmap_jpeg(self, frame: np.ndarray, r: Inspection, max_side: int | None, quality: int) -> bytes:
        """The heatmap JPEG for an inspection, drawn where its map is (nvJPEG on CUDA when available)."""
        if not isinstance(r, ResidentInspection):
            return cpu_encode_jpeg(cpu_overlay(frame, r.anomaly_map, r.threshold, max_side), quality)
        with torch.no_grad(), r.on_stream():
            img = gpu_heatmap.overlay(r.device_frame.permute(2, 0, 1).float(), r.device_map, r.threshold, max_side)
            return gpu_heatmap.encode(img, quality, self.jpeg_on_device)
