"""Parity: an exported backbone must give the torch model's features, scores and verdicts.

Tolerances (documented in the README; the export fails beyond them):
- FP32 (ONNX Runtime, TensorRT FP32): patch features max |diff| <= 1e-3, image scores
  relative |diff| <= 1e-4, identical verdicts;
- FP16 / INT8 engines: image scores relative |diff| <= 2e-2 and identical verdicts for
  images whose score is more than 2% away from the threshold.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge.backends.base import FeatureBackend
from edge.backends.torch_backend import TorchBackend
from edge.errors import PatchcoreError
from edge.extract import extract_features
from edge.knn import make_search
from edge.modeldir import Model
from edge.scoring import score_many

TOLERANCES = {
    "fp32": {"feature_max_abs": 1e-3, "score_max_rel": 1e-4, "verdict_margin": 0.0},
    "reduced": {"feature_max_abs": None, "score_max_rel": 2e-2, "verdict_margin": 0.02},
}


class FixedBatch(FeatureBackend):
    """Feeds a fixed-batch graph: splits larger batches and zero-pads the last chunk."""

    def __init__(self, inner: FeatureBackend, batch: int):
        self.inner, self.batch = inner, batch
        self.name, self.device = inner.name, inner.device

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        outs = []
        for i in range(0, len(batch), self.batch):
            chunk = batch[i:i + self.batch]
            pad = self.batch - len(chunk)
            if pad:
                chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)])
            outs.append(self.inner(chunk)[: self.batch - pad])
        return np.concatenate(outs)


class ParityError(PatchcoreError):
    """An export whose outputs differ from torch beyond the documented tolerance."""


def parity_report(model: Model, extractor, candidate: FeatureBackend, images: list[Path],
                  precision: str = "fp32") -> dict:
    """Compare candidate vs torch (CPU) on real images; raises ParityError beyond tolerance."""
    ref_be = TorchBackend(extractor, "cpu")
    geo = model.geometry
    ref, kept, _ = extract_features(ref_be, images, geo, model.mean, model.std, desc="torch")
    got, _, _ = extract_features(candidate, kept, geo, model.mean, model.std, desc="export")
    if not np.isfinite(got).all():
        # NaN would pass every comparison below (NaN > tol is False), and an FP16/INT8 engine
        # that overflows gives exactly that (the bank is finite: load_model refuses one that is not)
        bad = int((~np.isfinite(got.reshape(len(got), -1)).all(axis=1)).sum())
        raise ParityError(f"export differs from torch on {len(kept)} images: the export gives non-finite features "
                          f"on {bad} of {len(got)} inputs (an FP16/INT8 overflow?); the export was not kept")
    diff = np.abs(ref - got)
    search = make_search(model.bank, ref.shape[0] * ref.shape[2] * ref.shape[3])
    s_ref = geo.image_scores(score_many(ref, search)[0])  # per image: the max over its tiles
    s_got = geo.image_scores(score_many(got, search)[0])
    rel = np.abs(s_ref - s_got) / np.maximum(np.abs(s_ref), 1e-12)
    tol = TOLERANCES["fp32" if precision == "fp32" else "reduced"]
    thr = model.threshold
    clear = np.abs(s_ref / thr - 1.0) > tol["verdict_margin"]
    verdict_mismatch = int(((s_ref > thr) != (s_got > thr))[clear].sum())
    report = {
        "precision": precision, "images": len(kept), "backend": candidate.describe(),
        "feature_max_abs": float(diff.max()), "feature_mean_abs": float(diff.mean()),
        "score_max_abs": float(np.abs(s_ref - s_got).max()), "score_max_rel": float(rel.max()),
        "verdict_mismatches": verdict_mismatch, "tolerance": tol,
    }
    problems = []
    if tol["feature_max_abs"] is not None and report["feature_max_abs"] > tol["feature_max_abs"]:
        problems.append(f"feature max |diff| {report['feature_max_abs']:.2e} > {tol['feature_max_abs']:.0e}")
    if report["score_max_rel"] > tol["score_max_rel"]:
        problems.append(f"score max relative diff {report['score_max_rel']:.2e} > {tol['score_max_rel']:.0e}")
    if verdict_mismatch:
        problems.append(f"{verdict_mismatch} verdicts differ")
    report["ok"] = not problems
    if problems:
        raise ParityError(f"export differs from torch on {len(kept)} images: {'; '.join(problems)}; "
                          "the export was not kept")
    return report
