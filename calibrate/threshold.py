"""The pass/fail boundary, learned from good images only.

Rule (documented in the README): hold out a fraction of the good images, score them against
a coreset built from the rest, and set

    threshold = max(max(held-out scores), mean + SIGMAS * std)

i.e. at least the worst good image seen, and at least 3 standard deviations above the mean
of good scores (the max alone is noisy with ~40 held-out images). The published normalised
score is score / threshold, so 1.0 is the boundary and PLCs can compare against a constant.
"""

from __future__ import annotations

import numpy as np

SIGMAS = 3.0


def score_stats(scores: np.ndarray) -> dict[str, float]:
    """Summary of held-out good image scores, stored in the manifest."""
    s = np.asarray(scores, dtype=np.float64)
    return {
        "n": int(s.size),
        "mean": float(s.mean()),
        "std": float(s.std(ddof=1)) if s.size > 1 else 0.0,
        "min": float(s.min()),
        "p50": float(np.percentile(s, 50)),
        "p95": float(np.percentile(s, 95)),
        "max": float(s.max()),
    }


def threshold_from_good(scores: np.ndarray, sigmas: float = SIGMAS) -> float:
    """Decision boundary from held-out good scores (see module docstring)."""
    st = score_stats(scores)
    return max(st["max"], st["mean"] + sigmas * st["std"])


def split_holdout(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, held-out indices): a seeded split with at least one image on each side."""
    if n < 2:
        raise ValueError(f"need at least 2 good images to set a threshold, got {n}")
    k = int(round(n * fraction))
    k = min(max(k, 1), n - 1)
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[k:]), np.sort(perm[:k])
