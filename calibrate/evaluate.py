"""`evaluate`: calibrate on train/good, score test/, report MVTec AD metrics per category.

Masks are resized (nearest neighbour) to the anomaly map's resolution (the model's input
W x H, or its tiled canvas), not the map to the image: 83 bottle maps at 224 px are 4.2 M
pixels instead of 67 M, and the maps carry no detail finer than that anyway. test/good
images count as all-good pixels. A defective image without a mask has unknown pixel labels:
pixel metrics use only the images whose pixels are known, and are None (JSON null, "–" in
the table, with a note) when no defective image has a mask: most plant data has image
labels only.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from edge.backends.ort_backend import OrtBackend
from edge.errors import ImageError
from edge.extract import extract_features
from edge.heatmap import encode_jpeg, overlay
from edge.knn import make_search
from edge.files import atomic_write_bytes
from edge.modeldir import load_model
from edge.preprocess import list_images, read_image
from edge.scoring import image_scores, score_and_map_many

from .build import RunOptions, calibrate
from .metrics import aupro, at_threshold, best_f1, image_auroc, pixel_auroc
from .operating_point import average as op_average
from .operating_point import operating_point
from .settings import CalibrationSettings

log = logging.getLogger(__name__)

LAYOUT = ("CATEGORY/train/good/*.png, CATEGORY/test/<good|defect type>/*.png, "
          "CATEGORY/ground_truth/<defect type>/<stem>_mask.png")
METRICS = ("image_auroc", "pixel_auroc", "pixel_f1", "aupro")


def is_category(path: Path) -> bool:
    return (path / "train" / "good").is_dir() and (path / "test").is_dir()


def find_categories(path: Path) -> list[Path]:
    """One category folder, or the categories inside a root; ImageError names the layout."""
    path = Path(path)
    if not path.is_dir():
        raise ImageError(f"dataset {path} does not exist or is not a folder")
    if is_category(path):
        return [path]
    cats = sorted(p for p in path.iterdir() if p.is_dir() and is_category(p))
    if not cats:
        raise ImageError(f"{path} is not in MVTec layout; expected {LAYOUT} (or a folder holding such categories)")
    return cats


def load_test_set(cat: Path, size: int | tuple[int, int]) -> tuple[list[Path], np.ndarray, np.ndarray, np.ndarray]:
    """Test image paths, image labels (1 = defective), masks (N, H, W) bool (size: S or (W, H))
    and whether each image's pixel labels are known (good images, or defective ones with a mask file)."""
    w, h = (size, size) if isinstance(size, int) else size
    paths, labels, masks, known = [], [], [], []
    for d in sorted(p for p in (cat / "test").iterdir() if p.is_dir()):
        for img in list_images(d):
            paths.append(img)
            labels.append(0 if d.name == "good" else 1)
            m = np.zeros((h, w), bool)
            gt = cat / "ground_truth" / d.name / f"{img.stem}_mask.png"
            known.append(d.name == "good" or gt.is_file())
            if d.name != "good" and gt.is_file():
                raw = cv2.imread(str(gt), cv2.IMREAD_GRAYSCALE)
                if raw is None:
                    raise ImageError(f"mask {gt} cannot be decoded")
                m = cv2.resize(raw, (w, h), interpolation=cv2.INTER_NEAREST) > 127
            masks.append(m)
    if not paths:
        raise ImageError(f"{cat / 'test'} holds no images; expected {LAYOUT}")
    return paths, np.asarray(labels), np.stack(masks), np.asarray(known, bool)


def pixel_metrics(masks: np.ndarray, maps: np.ndarray, labels: np.ndarray, known: np.ndarray,
                  types: list[str]) -> tuple[dict, str | None]:
    """Pixel AUROC, F1 and AUPRO over the images with known pixel labels, or None each when no
    defective image has a mask; returns them and a note saying what was left out, if anything."""
    missing = sorted({t for t, lab, k in zip(types, labels, known) if lab and not k})
    if not masks[known].any():
        return dict.fromkeys(("pixel_auroc", "pixel_f1", "aupro")), \
            "no defect masks (image labels only): pixel metrics not computed"
    m, a = masks[known], maps[known]
    note = None
    if missing:
        note = (f"pixel metrics over {int((labels * known).sum())} of {int(labels.sum())} defective images "
                f"(no masks for: {', '.join(missing)})")
    return {"pixel_auroc": pixel_auroc(m, a), "pixel_f1": best_f1(m, a), "aupro": aupro(m, a)}, note


def evaluate_category(cat: Path, base: CalibrationSettings, work: Path, output_dir: Path | None,
                      extract=extract_features, image_paths: list[Path] | None = None) -> dict:
    """Calibrate on train/good (or on `image_paths`), score test/, compute every metric; returns a dict of numbers.

    `extract` computes the test features (benchmarks/accuracy.py passes a caching one)."""
    t0 = time.perf_counter()
    cfg = base.model_copy(update={"images": cat / "train" / "good", "output": work / cat.name})
    calib = calibrate(cfg, run=RunOptions(force=True, image_paths=image_paths))
    t_cal = time.perf_counter() - t0
    t1 = time.perf_counter()
    model = load_model(cfg.output)
    geo = model.geometry  # input W x H and tiling
    paths, labels, masks, known = load_test_set(cat, geo.canvas)
    feats, kept, _ = extract(OrtBackend(str(model.onnx_path)), paths, geo, model.mean, model.std,
                             desc=f"{cat.name} test")
    if len(kept) != len(paths):
        raise ImageError(f"{len(paths) - len(kept)} test images of {cat.name} could not be read")
    search = make_search(model.bank, feats.shape[0] * feats.shape[2] * feats.shape[3])
    patch_maps, fine_maps = score_and_map_many(feats, search, model.bank, model.spec.map_fine)
    # as inspection scores a frame: over all of its patches, its tiles together
    scores = image_scores(patch_maps.reshape(len(paths), -1), model.spec.score_top_k)
    maps = np.stack([geo.anomaly_map(p) for p in fine_maps.reshape(len(paths), geo.tiles, *fine_maps.shape[1:])])
    pixel, note = pixel_metrics(masks, maps, labels, known, [p.parent.name for p in paths])
    res = {
        "image_auroc": image_auroc(labels, scores),
        **pixel,
        "pixel_note": note,
        "at_threshold": at_threshold(labels, scores, model.threshold),
        "operating_point": operating_point(labels, scores, model.threshold, calib.rule.fit if calib.rule else None),
        "threshold": model.threshold,
        "n_test": len(paths),
        "n_defective": int(labels.sum()),
        "calibrate_s": t_cal,
        "evaluate_s": time.perf_counter() - t1,
        "model_version_dir": str(calib.version_dir),
    }
    if output_dir:
        write_visuals(cat.name, paths, labels, scores, maps, model.threshold, output_dir / cat.name)
    return res


def write_visuals(name: str, paths: list[Path], labels: np.ndarray, scores: np.ndarray, maps: np.ndarray,
                  threshold: float, out: Path) -> None:
    """Heatmap overlay per test image and one ROC + score histogram PNG per category."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    out.mkdir(parents=True, exist_ok=True)
    for p, amap in zip(paths, maps):
        img = overlay(read_image(p), amap, threshold, max_side=512)
        atomic_write_bytes(out / f"{p.parent.name}_{p.stem}.jpg", encode_jpeg(img, 85))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    fpr, tpr, _ = roc_curve(labels, scores)
    ax1.plot(fpr, tpr)
    ax1.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax1.set(title=f"{name}: image ROC (AUROC {image_auroc(labels, scores):.4f})", xlabel="false positive rate",
            ylabel="true positive rate")
    bins = np.linspace(scores.min(), scores.max(), 30)
    ax2.hist(scores[labels == 0], bins=bins, alpha=0.6, label="good")
    ax2.hist(scores[labels == 1], bins=bins, alpha=0.6, label="defective")
    ax2.axvline(threshold, color="k", ls="--", label="threshold")
    ax2.set(title="image scores", xlabel="score", ylabel="images")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(out / "scores.png", dpi=100)
    plt.close(fig)


def results_table(results: dict[str, dict]) -> str:
    """Markdown table: rows = metrics, columns = Avg + categories (the seed's layout)."""
    cats = list(results)
    lines = ["| metric | Avg | " + " | ".join(cats) + " |", "|---|---|" + "---|" * len(cats)]
    for m in METRICS:
        vals = [results[c][m] for c in cats]
        lines.append(f"| {m} | {_fmt(_mean(vals))} | " + " | ".join(_fmt(v) for v in vals) + " |")
    for m in ("f1", "precision", "recall"):
        vals = [results[c]["at_threshold"][m] for c in cats]
        lines.append(f"| image_{m}@threshold | {np.mean(vals):.4f} | " + " | ".join(f"{v:.4f}" for v in vals) + " |")
    notes = [f"{c}: {results[c]['pixel_note']}" for c in cats if results[c].get("pixel_note")]
    if notes:
        lines += ["", "– = not available. Avg of a pixel metric is over the categories that have it."]
        lines += [f"Note, {n}" for n in notes]
    return "\n".join(lines)


def _mean(vals: list) -> float | None:
    """Mean of the values that exist (pixel metrics are None for label-only categories)."""
    have = [v for v in vals if v is not None]
    return float(np.mean(have)) if have else None


def _fmt(v: float | None) -> str:
    return "–" if v is None else f"{v:.4f}"


def summary_json(results: dict[str, dict]) -> dict:
    """Per-category numbers plus an 'average' entry with the four headline metrics (null where
    no category has the metric; pixel averages are over the categories with masks)."""
    avg = {m: _mean([r[m] for r in results.values()]) for m in METRICS}
    return {"categories": results, "average": avg, "operating_point_average": op_average(results)}


def evaluate(dataset: Path, base: CalibrationSettings, output_dir: Path | None = None,
             json_path: Path | None = None) -> dict[str, dict]:
    """Evaluate every category under `dataset`; writes JSON atomically when asked."""
    cats = find_categories(dataset)
    keep_models = output_dir is not None
    with tempfile.TemporaryDirectory(prefix="pc-eval-") as tmp:
        work = (output_dir / "models") if keep_models else Path(tmp)
        results = {c.name: evaluate_category(c, base, work, output_dir) for c in cats}
    if json_path:
        atomic_write_bytes(Path(json_path), json.dumps(summary_json(results), indent=2).encode())
    return results
