"""k-fold cross-scoring: every good image scored once, by a bank built without it.

The scores must look like a new good part's score against the stored bank, or the threshold
lands in the wrong place. The stored bank is one greedy coreset of k vectors over every patch.
Fold i's bank mimics it without fold i: each of the F folds gets a coreset of 2k/(F-1)
vectors (k/2 for 5 folds; calibrate/build.py), and the other folds' coresets (2k vectors) are
reduced to k by a second greedy pass (greedy coresets compose: a coreset of the union of
coresets covers the union within the sum of the radii). The reduction runs the plain greedy
loop (greedy_coreset_naive): on 2k points it is ~8x faster than the blocks' bookkeeping, and
its float32 expanded distances may resolve a near-tie differently, which a threshold estimate
does not feel. Measured on bottle / tire / screw (README, operating
point): the plain union of the other folds' coresets (k/5 each, 0.8k in all) scored good
images ~1-2 units high (screw median 16.4 against 14.6 for the test's good parts, every
target threshold above nearly every defect); the reduced banks' medians are within 0.1
(bottle, tire) and 0.45 (screw) of the test's, about as close as a bank built from all the
other folds' patches (screw 14.54; 5x the cost).
"""

from __future__ import annotations

import numpy as np

from edge.knn import make_search
from edge.scoring import score_many

from .coreset import greedy_coreset_naive


def fold_size(bank_size: int, folds: int) -> int:
    """Vectors in each fold's own coreset: 2k/(F-1), so every fold's complement holds 2k to
    reduce to k (k/2 for 5 folds; with 2 folds the single other fold alone must have 2k)."""
    return max(1, -(-2 * bank_size // max(folds - 1, 1)))


def leave_fold_out_banks(fold_coresets: list[np.ndarray], bank_size: int, proj_dim: int, seed: int
                         ) -> list[np.ndarray]:
    """Bank i: the union of every fold's coreset but fold i's, reduced to `bank_size` vectors."""
    out = []
    for i in range(len(fold_coresets)):
        union = np.concatenate([b for j, b in enumerate(fold_coresets) if j != i])
        if len(union) > bank_size:
            union = union[greedy_coreset_naive(union, bank_size, proj_dim, seed)]
        out.append(np.ascontiguousarray(union))
    return out


def cross_scores(feats: np.ndarray, folds: list[np.ndarray], banks: list[np.ndarray], top_k: int = 1
                 ) -> np.ndarray:
    """Image score of every image in `feats` (N, D, h, w): fold i's images against `banks[i]`,
    a bank built without them (leave_fold_out_banks)."""
    n, _, gh, gw = feats.shape
    out = np.full(n, np.nan)
    for idx, bank in zip(folds, banks, strict=True):
        out[idx], _ = score_many(feats[idx], make_search(bank, len(idx) * gh * gw), top_k=top_k)
    if np.isnan(out).any():
        raise ValueError("folds do not cover every image")  # a programming error, not user input
    return out
