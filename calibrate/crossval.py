"""k-fold cross-scoring: every good image scored once, by a bank built without it.

The fold coresets come from calibrate/build.py; fold i is scored against the union of the
other folds' coresets (greedy k-center coresets compose: the union covers each of its
folds within that fold's covering radius). The stored bank is a separate coreset over all
patches, so the cross-scores come from slightly sparser banks: they err on the high side.
"""

from __future__ import annotations

import numpy as np

from edge.knn import make_search
from edge.scoring import score_many


def cross_scores(feats: np.ndarray, folds: list[np.ndarray], fold_banks: list[np.ndarray], top_k: int = 1
                 ) -> np.ndarray:
    """Image score of every image in `feats` (N, D, h, w) against the other folds' banks."""
    n, _, gh, gw = feats.shape
    out = np.full(n, np.nan)
    for i, idx in enumerate(folds):
        others = np.concatenate([b for j, b in enumerate(fold_banks) if j != i])
        out[idx], _ = score_many(feats[idx], make_search(others, len(idx) * gh * gw), top_k=top_k)
    if np.isnan(out).any():
        raise ValueError("folds do not cover every image")  # a programming error, not user input
    return out
