"""MVTec AD metrics: image AUROC, pixel AUROC, best pixel F1 (scikit-learn) and AUPRO.

AUPRO (Bergmann et al., MVTec AD, IJCV 2021; reported by the PatchCore paper and anomalib):
the per-region overlap (PRO) is the mean, over every connected defect region of every
test image, of the fraction of that region above a threshold. Sweeping the threshold gives
PRO against the false-positive rate on defect-free pixels; AUPRO is the area under that
curve up to FPR 0.3, divided by 0.3 so that a perfect detector scores 1.
"""

from __future__ import annotations

import cv2
import numpy as np
from sklearn.metrics import precision_recall_curve, roc_auc_score

AUPRO_FPR_LIMIT = 0.3


def image_auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """AUROC of image scores against image labels (1 = defective)."""
    return float(roc_auc_score(np.asarray(labels).astype(int), np.asarray(scores, dtype=np.float64)))


def pixel_auroc(masks: np.ndarray, maps: np.ndarray) -> float:
    """AUROC over every pixel of every image (masks: bool, maps: float; same shape)."""
    return float(roc_auc_score(masks.ravel().astype(np.uint8), maps.ravel().astype(np.float64)))


def best_f1(labels: np.ndarray, scores: np.ndarray) -> float:
    """The best F1 over all thresholds (as the seed's 'pixel F1' table reports)."""
    p, r, _ = precision_recall_curve(labels.ravel().astype(np.uint8), scores.ravel().astype(np.float64))
    f1 = np.divide(2 * p * r, p + r, out=np.zeros_like(p), where=(p + r) > 0)
    return float(f1.max())


def aupro(masks: np.ndarray, maps: np.ndarray, fpr_limit: float = AUPRO_FPR_LIMIT) -> float:
    """Normalised area under the PRO-vs-FPR curve up to `fpr_limit` (exact, one sort).

    Every pixel carries two weights: 1/(#regions * |its region|) if it is defective (its
    share of the mean per-region overlap) and 1/#good pixels if it is good (its share of
    the FPR). Lowering the threshold past a pixel adds its weights, so cumulative sums over
    pixels sorted by score give the exact curve at every distinct threshold.
    """
    masks = masks.astype(bool)
    pro_w = np.zeros(masks.shape, dtype=np.float64)
    n_regions = 0
    labelled = []
    for m in masks:
        n, lab = cv2.connectedComponents(m.astype(np.uint8), connectivity=8)
        labelled.append((n, lab))
        n_regions += n - 1
    if n_regions == 0:
        raise ValueError("AUPRO needs at least one defect region in the masks")
    n_good = int((~masks).sum())
    if n_good == 0:
        raise ValueError("AUPRO needs defect-free pixels")
    for i, (n, lab) in enumerate(labelled):
        sizes = np.bincount(lab.ravel(), minlength=n).astype(np.float64)
        w = np.zeros(n)
        w[1:] = 1.0 / (n_regions * sizes[1:])
        pro_w[i] = w[lab]
    fpr_w = (~masks).astype(np.float64) / n_good
    order = np.argsort(-maps.ravel(), kind="stable")
    s = maps.ravel()[order]
    fpr = np.cumsum(fpr_w.ravel()[order])
    pro = np.cumsum(pro_w.ravel()[order])
    last = np.r_[s[1:] != s[:-1], True]  # one point per distinct threshold
    fpr, pro = np.r_[0.0, fpr[last]], np.r_[0.0, pro[last]]
    keep = fpr <= fpr_limit
    f, p = fpr[keep], pro[keep]
    if f[-1] < fpr_limit and keep.sum() < len(fpr):  # interpolate the curve at the limit
        j = keep.sum()
        t = (fpr_limit - fpr[j - 1]) / (fpr[j] - fpr[j - 1])
        f, p = np.r_[f, fpr_limit], np.r_[p, pro[j - 1] + t * (pro[j] - pro[j - 1])]
    return float(np.trapezoid(p, f) / fpr_limit)


def at_threshold(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    """Image-level precision/recall/F1 of 'fail = score > threshold' (what the line gets)."""
    y = np.asarray(labels).astype(bool)
    pred = np.asarray(scores) > threshold
    tp, fp, fn = int((pred & y).sum()), int((pred & ~y).sum()), int((~pred & y).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "false_rejects": fp, "escapes": fn}
