"""Benchmark: accuracy and frame latency per tile layout on one category; prints a markdown table.

    .venv/bin/python benchmarks/tiling.py [--dataset /work/devsets/screw] [--tiles 1x1,2x2,3x3,1x1@352]
        [--input-size 192] [--tile-overlap 0.1] [--train-every 1] [--frames 30]

`--models DIR...` skips calibration and only times existing model directories (kept with
`--keep DIR` from an earlier run). A layout is COLSxROWS, optionally @SIZE for its own input size (1x1@352: no tiles, but a
network input as large as 2x2 tiles' canvas, to tell tiling from plain resolution).

Each layout is calibrated on train/good (every n-th image with --train-every, to bound the
coreset time of many tiles on a small machine) and evaluated on test/ with
`calibrate/evaluate.py` (image AUROC; pixel metrics when the category has masks). Latency:
the daemon's Inspector (ONNX Runtime) on decoded test frames, after two warm-up frames, the
layouts taking turns frame by frame (so a busy machine slows all alike); medians per stage,
so a tile count's cost is visible (backbone ~ tiles, kNN ~ tiles x bank).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from calibrate.settings import CalibrationSettings  # noqa: E402
from calibrate.evaluate import evaluate_category  # noqa: E402
from edge.inspector import Inspector  # noqa: E402
from edge.modeldir import load_model  # noqa: E402
from edge.preprocess import list_images, read_image  # noqa: E402

STAGES = ("preprocess", "backbone", "knn", "map")


def latencies(version_dirs: list[Path], frames: list, search: str = "auto") -> list[dict[str, float]]:
    """Median ms per stage and in total per model over the frames, the models taking turns."""
    insps = [Inspector(load_model(v), backend="onnxruntime", search=search) for v in version_dirs]
    for insp in insps:
        for f in frames[:2]:  # warm-up
            insp.inspect(f)
    runs: list[list[dict]] = [[] for _ in insps]
    for f in frames:
        for insp, r in zip(insps, runs):
            r.append(insp.inspect(f).timings_ms)
    out = []
    for r in runs:
        med = {k: statistics.median(t[k] for t in r) for k in STAGES}
        med["total"] = statistics.median(sum(t[k] for k in STAGES) for t in r)
        out.append(med)
    return out


def fmt(v) -> str:
    return "–" if v is None else f"{v:.4f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, default=Path("/work/devsets/screw"), help="one MVTec-layout category")
    ap.add_argument("--tiles", default="1x1,2x2,3x3,1x1@352", help="comma-separated layouts, COLSxROWS[@SIZE]")
    ap.add_argument("--input-size", default=None, help="network input (default: the backbone's preset)")
    ap.add_argument("--tile-overlap", type=float, default=0.1)
    ap.add_argument("--tile-merge", default="max", choices=("max", "mean"))
    ap.add_argument("--coreset-ratio", type=float, help="for every layout (default: the backbone's preset)")
    ap.add_argument("--train-every", type=int, default=1, help="calibrate on every n-th train/good image")
    ap.add_argument("--frames", type=int, default=30, help="test frames timed per layout")
    ap.add_argument("--keep", type=Path, help="write the models here (default: a temp dir, deleted)")
    ap.add_argument("--models", type=Path, nargs="+", help="only time these model directories")
    ap.add_argument("--search", default="auto", choices=("auto", "matmul", "faiss"), help="kNN search (edge/knn.py)")
    a = ap.parse_args()
    train = list_images(a.dataset / "train" / "good")[:: a.train_every]
    test = [p for d in sorted((a.dataset / "test").iterdir()) if d.is_dir() for p in list_images(d)]
    frames = [read_image(p) for p in test[:: max(1, len(test) // a.frames)][: a.frames]]
    rows = []
    with tempfile.TemporaryDirectory(prefix="pc-tiling-") as tmp:
        work = a.keep or Path(tmp)
        for m in map(load_model, a.models or []):
            g = m.geometry
            rows.append((f"{g.cols}x{g.rows}@{g.width}", m, {"model_version_dir": m.path}))
        for layout in [] if a.models else a.tiles.split(","):
            tiles, _, size = layout.partition("@")
            base = CalibrationSettings(images=a.dataset, output=Path(tmp), input_size=size or a.input_size,
                                       tiles=tiles, tile_overlap=a.tile_overlap, tile_merge=a.tile_merge,
                                       coreset_ratio=a.coreset_ratio)
            res = evaluate_category(a.dataset, base, work / layout, None, image_paths=train)
            rows.append((layout, load_model(res["model_version_dir"]), res))
            print(f"{layout}: image AUROC {res['image_auroc']:.4f}", file=sys.stderr)
        lats = latencies([Path(r[2]["model_version_dir"]) for r in rows], frames, a.search)
    trained = "models given" if a.models else f"{len(train)} train images"
    print(f"\n{a.dataset.name}: {trained}, {len(test)} test images; "
          f"latency over {len(frames)} frames (ONNX Runtime, kNN search {a.search}, medians, ms)\n")
    print("| tiles | inputs/frame | input | canvas | bank | image AUROC | pixel AUROC | calibrate s "
          "| preprocess | backbone | kNN | map | total p50 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for (layout, model, res), lat in zip(rows, lats):
        g = model.geometry
        cal = f"{res['calibrate_s']:.1f}" if "calibrate_s" in res else "–"
        print(f"| {layout} | {g.tiles} | {g.width}x{g.height} | {g.canvas[0]}x{g.canvas[1]} | "
              f"{model.bank.shape[0]} | {fmt(res.get('image_auroc'))} | {fmt(res.get('pixel_auroc'))} | {cal} | "
              + " | ".join(f"{lat[k]:.1f}" for k in (*STAGES, "total")) + " |")


if __name__ == "__main__":
    main()
