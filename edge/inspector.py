"""One camera view's inspection: frame -> features -> 1-NN -> score, verdict and anomaly map."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from .backends import create_backend
from .backends.base import FeatureBackend
from .knn import make_search
from .modeldir import Model
from .shapecheck import check_backbone_output
from .scoring import image_scores, score_and_map_many, score_features, score_many

# A frame whose image score is not finite (NaN from a bad bank, inf from an fp16 overflow) fails
# and is published with this normalised score (score = threshold x this) and a `reason`: JSON has
# no NaN, and a consumer reading `normalised_score > 1.0` must see a fail too.
NONFINITE_NORMALISED = 1e6


def judge(score: float, threshold: float) -> tuple[float, str, str | None]:
    """(normalised score, verdict, reason): a non-finite score is never a pass."""
    norm = score / threshold
    if math.isfinite(norm):
        return norm, ("fail" if norm > 1.0 else "pass"), None
    return norm, "fail", (f"image score is {score} (not a finite number: NaN or overflow in the backbone or the "
                          "model bank); judged fail")


@dataclass
class Inspection:
    """The verdict for one frame, in the units the MQTT contract publishes."""

    score: float  # raw image score (L2 distance in feature space)
    normalised: float  # score / threshold: 1.0 is the boundary
    threshold: float
    verdict: str  # "pass" or "fail"
    patch_scores: np.ndarray  # (h, w); tiled models: (tiles, h, w)
    anomaly_map: np.ndarray  # (H, W): the input (or tiled canvas) resolution, blurred
    model_version: str
    timings_ms: dict[str, float] = field(default_factory=dict)
    reason: str | None = None  # set when the score is not finite (see judge)

    def record(self) -> dict:
        """The verdict as published: the daemon's result JSON and `infer`'s lines both start from it.
        Always valid JSON: a non-finite score is published as NONFINITE_NORMALISED with `reason`."""
        if self.reason is None and math.isfinite(self.score) and math.isfinite(self.normalised):
            return {"score": round(self.score, 5), "normalised_score": round(self.normalised, 5),
                    "threshold": round(self.threshold, 5), "verdict": self.verdict,
                    "model_version": self.model_version}
        return {"score": round(self.threshold * NONFINITE_NORMALISED, 5), "normalised_score": NONFINITE_NORMALISED,
                "threshold": round(self.threshold, 5), "verdict": "fail", "model_version": self.model_version,
                "reason": self.reason or judge(self.score, self.threshold)[2]}


class Inspector:
    """Holds a loaded model, its feature backend and its search index; `inspect` is thread-safe
    for one caller at a time (the daemon gives each camera its own worker)."""

    def __init__(self, model: Model, backend: str | FeatureBackend = "auto", search: str = "auto",
                 reweight: bool = False):
        self.model = model
        self.backend = backend if isinstance(backend, FeatureBackend) else create_backend(
            backend, model.onnx_path, model.manifest, engine_dir=model.path)
        check_backbone_output(self.backend, model.manifest, str(model.path))  # refuse now, not every frame
        grid = model.spec.grid
        self.geometry = model.geometry
        self.search = make_search(model.bank, self.geometry.tiles * grid[0] * grid[1], search)
        self.reweight = reweight

    def inspect(self, bgr: np.ndarray) -> Inspection:
        """Score one BGR frame of any size."""
        m = self.model
        t0 = time.perf_counter()
        geo = self.geometry
        x = geo.inputs(bgr, m.mean, m.std)  # (tiles, 3, H, W)
        t1 = time.perf_counter()
        feats = self.backend(x)  # all tiles in one batch
        t2 = time.perf_counter()
        if geo.tiled:
            patch_scores, maps = score_and_map_many(feats, self.search, m.bank, m.spec.map_fine)
            if self.reweight:  # eq. 7 per tile, then the max over the tiles
                score = float(score_many(feats, self.search, True, m.bank)[0].max())
            else:  # over all of the frame's patches, its tiles together (as calibrate scores them)
                score = float(image_scores(patch_scores.reshape(1, -1), m.spec.score_top_k)[0])
        else:
            scored = score_features(feats[0], self.search, m.bank, self.reweight, m.spec.score_top_k,
                                    m.spec.map_fine)
            score, patch_scores, maps = scored.score, scored.patch_scores, scored.map_scores
        t3 = time.perf_counter()
        amap = geo.anomaly_map(maps)
        t4 = time.perf_counter()
        norm, verdict, reason = judge(score, m.threshold)
        return Inspection(
            score=score, normalised=norm, threshold=m.threshold, verdict=verdict,
            patch_scores=patch_scores, anomaly_map=amap, model_version=m.version,
            timings_ms={"preprocess": (t1 - t0) * 1e3, "backbone": (t2 - t1) * 1e3, "knn": (t3 - t2) * 1e3,
                        "map": (t4 - t3) * 1e3}, reason=reason,
        )
