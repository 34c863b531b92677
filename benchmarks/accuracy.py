"""Benchmark: accuracy of candidate presets across categories, with their cost; prints markdown.

    nice -n 0 .venv/bin/python benchmarks/accuracy.py \\
        --data ../shared/data/mvtec/bottle /work/devsets/tire /work/devsets/screw \\
        [--candidates NAME,NAME] [--results out/accuracy.json] [--train-limit N] [--list]

For every candidate and category it runs the product's own `evaluate` code in process
(calibrate on train/good, score test/), and prints one table per candidate (rows: image
AUROC, pixel AUROC, pixel F1, AUPRO; columns: Avg + each category; "–" where a category has
no masks) with calibrate seconds per category and the CPU frame latency (ONNX Runtime,
median ms per frame over bottle test frames, decode excluded), then one summary row per
candidate. Choose a default by the average and the worst category, never by one.

Affordable on a shared 2-core machine: test features depend only on the graph (backbone,
stages, input size, normalisation), so candidates that differ only in the coreset reuse
them (kept in memory for the last graph); finished candidates are stored in --results and
skipped on a rerun (delete the file or pass --fresh to measure again). Calibration is never
cached: its seconds are the real thing (ONNX graph built before the clock starts, as a
station that has calibrated once has it cached).

--train-limit N calibrates on the first N train/good images only (the same test sets), to
see what a bank-size floor does for a station with a few dozen images.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from calibrate.evaluate import METRICS, evaluate_category, find_categories  # noqa: E402
from calibrate.settings import CalibrationSettings  # noqa: E402
from edge.extract import extract_features  # noqa: E402
from edge.graph_cache import extractor_onnx  # noqa: E402
from edge.inspector import Inspector  # noqa: E402
from edge.files import atomic_write_bytes  # noqa: E402
from edge.modeldir import load_model  # noqa: E402
from edge.preprocess import list_images, read_image  # noqa: E402

L0, L1, L2 = "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"


def cand(backbone: str = L0, strides=(8, 16), input_size: int = 224, coreset_ratio: float = 0.01,
         min_bank: int = 0, normalization: str = "backbone", feature_dim: int | None = None,
         score_top_k: int = 1, map_fine_weight: float = 0.0) -> dict:
    """One candidate's settings; score_top_k 1 (the max) and no fine-stage map term unless a
    candidate says otherwise, so the stored results of candidates measured before them keep
    their meaning."""
    out = {"backbone": backbone, "strides": list(strides), "input_size": input_size,
           "coreset_ratio": coreset_ratio, "min_bank": min_bank, "normalization": normalization}
    out = {**out, "feature_dim": feature_dim} if feature_dim else out
    out = {**out, "score_top_k": score_top_k} if score_top_k != 1 else out
    return {**out, "map_fine_weight": map_fine_weight} if map_fine_weight else out


# Ordered so that candidates sharing a graph (same backbone, stages, size, normalisation)
# follow each other and reuse the cached test features.
CANDIDATES = {
    "yardstick L0 8+16 224 1% imagenet": cand(normalization="imagenet"),
    "L0 8+16 224 1%": cand(),
    "L0 8+16 224 1% floor2k": cand(min_bank=2000),
    "L0 8+16 224 2.5%": cand(coreset_ratio=0.025),
    "L0 4+8 192 0.25% (old default)": cand(strides=(4, 8), input_size=192, coreset_ratio=0.0025),
    "L0 4+8 192 0.25% floor2k": cand(strides=(4, 8), input_size=192, coreset_ratio=0.0025, min_bank=2000),
    "L0 4+8+16 192 0.25%": cand(strides=(4, 8, 16), input_size=192, coreset_ratio=0.0025),
    "L0 4+8+16 224 0.25%": cand(strides=(4, 8, 16), input_size=224, coreset_ratio=0.0025),
    "L0 4+8+16 224 0.25% floor1k": cand(strides=(4, 8, 16), input_size=224, coreset_ratio=0.0025, min_bank=1000),
    "L0 4+8+16 224 0.1% floor1k dim96": cand(strides=(4, 8, 16), input_size=224, coreset_ratio=0.001, min_bank=1000,
                                             feature_dim=96),
    "L0 4+8+16 224 0.25% dim96": cand(strides=(4, 8, 16), input_size=224, coreset_ratio=0.0025, feature_dim=96),
    "L0 8+16 256 1%": cand(input_size=256),
    "L0 8+16 320 1%": cand(input_size=320),
    "L0 8+16 320 1% floor2k": cand(input_size=320, min_bank=2000),
    "L1 8+16 240 1%": cand(L1, input_size=240),
    "L1 8+16 320 1%": cand(L1, input_size=320),
    "L2 8+16 256 1%": cand(L2, input_size=256),
    "L2 8+16 320 1%": cand(L2, input_size=320),
    "L0 4+8+16 320 0.25%": cand(strides=(4, 8, 16), input_size=320, coreset_ratio=0.0025),
    # image score = mean of the top k patch scores instead of the max (edge/scoring.py)
    "L0 4+8+16 224 0.1% floor1k dim96 top3": cand(strides=(4, 8, 16), input_size=224, coreset_ratio=0.001,
                                                  min_bank=1000, feature_dim=96, score_top_k=3),
    "L0 4+8+16 224 0.1% floor1k dim96 top5": cand(strides=(4, 8, 16), input_size=224, coreset_ratio=0.001,
                                                  min_bank=1000, feature_dim=96, score_top_k=5),
    # + the fine stages' residual in the anomaly map (edge/scoring.py map_scores)
    "L0 4+8+16 224 0.1% floor1k dim96 top5 fine1 (default)": cand(
        strides=(4, 8, 16), input_size=224, coreset_ratio=0.001, min_bank=1000, feature_dim=96, score_top_k=5,
        map_fine_weight=1.0),
    "L0 4+8+16 224 0.25% dim96 top5 fine1 (accurate)": cand(
        strides=(4, 8, 16), input_size=224, coreset_ratio=0.0025, min_bank=1000, feature_dim=96, score_top_k=5,
        map_fine_weight=1.0),
    "L0 4+8+16 224 0.1% floor1k dim96 top10": cand(strides=(4, 8, 16), input_size=224, coreset_ratio=0.001,
                                                   min_bank=1000, feature_dim=96, score_top_k=10),
    "L0 4+8+16 224 0.25% dim96 top5 (accurate)": cand(strides=(4, 8, 16), input_size=224, coreset_ratio=0.0025,
                                                      min_bank=1000, feature_dim=96, score_top_k=5),
    # the default's recipe on the larger embedded backbones (about their native 240 / 260 px, and Lite0's 224)
    "L1 4+8+16 224 0.1% floor1k dim96": cand(L1, strides=(4, 8, 16), input_size=224, coreset_ratio=0.001,
                                             min_bank=1000, feature_dim=96),
    "L1 4+8+16 240 0.1% floor1k dim96": cand(L1, strides=(4, 8, 16), input_size=240, coreset_ratio=0.001,
                                             min_bank=1000, feature_dim=96),
    "L2 4+8+16 224 0.1% floor1k dim96": cand(L2, strides=(4, 8, 16), input_size=224, coreset_ratio=0.001,
                                             min_bank=1000, feature_dim=96),
    "L2 4+8+16 256 0.1% floor1k dim96": cand(L2, strides=(4, 8, 16), input_size=256, coreset_ratio=0.001,
                                             min_bank=1000, feature_dim=96),
}


def graph_key(c: dict) -> tuple:
    return c["backbone"], tuple(c["strides"]), c["input_size"], c["normalization"], c.get("feature_dim")


class FeatureCache:
    """Test features per (graph, category), for the graph of the current candidate only."""

    def __init__(self) -> None:
        self.graph: tuple | None = None
        self.store: dict = {}
        self.key: tuple | None = None

    def use(self, graph: tuple, category: str) -> None:
        if graph != self.graph:
            self.graph, self.store = graph, {}
        self.key = (graph, category)

    def __call__(self, backend, paths, *args, **kw):
        if self.key not in self.store:
            self.store[self.key] = extract_features(backend, paths, *args, **kw)
        return self.store[self.key]


def frame_latency_ms(model_dir: Path, frames: list[Path], warmup: int = 3) -> float:
    """Median ms per frame (preprocess + ONNX Runtime backbone + kNN + map), decode excluded."""
    insp = Inspector(load_model(model_dir), backend="onnxruntime")
    images = [read_image(p) for p in frames]
    for img in images[:warmup]:
        insp.inspect(img)
    totals = [sum(insp.inspect(img).timings_ms.values()) for img in images]
    return statistics.median(totals)


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", name).strip("_")


STAGES = ("preprocess", "backbone", "knn", "map")


def interleaved_latency(model_dirs: dict[str, Path], frames: list[Path], rounds: int = 5) -> dict[str, dict]:
    """Median ms per stage and in total per model, the models taking turns frame by frame (fair on
    a noisy host)."""
    insps = {n: Inspector(load_model(d), backend="onnxruntime") for n, d in model_dirs.items()}
    images = [read_image(p) for p in frames]
    times: dict[str, dict[str, list[float]]] = {n: {k: [] for k in (*STAGES, "total")} for n in insps}
    for n, insp in insps.items():
        for img in images[:3]:
            insp.inspect(img)
    for _ in range(rounds):
        for img in images:
            for n, insp in insps.items():
                t = insp.inspect(img).timings_ms
                for k in STAGES:
                    times[n][k].append(t[k])
                times[n]["total"].append(sum(t[k] for k in STAGES))
    return {n: {k: statistics.median(v) for k, v in t.items()} for n, t in times.items()}


def run_candidate(name: str, c: dict, cats: list[Path], cache: FeatureCache, frames: int,
                  keep: Path | None = None) -> dict:
    base = CalibrationSettings(images=Path("."), output=Path("."), backbone=c["backbone"], input_size=c["input_size"],
                               coreset_ratio=c["coreset_ratio"], layers=c["strides"], min_bank=c["min_bank"],
                               normalization=c["normalization"], feature_dim=c.get("feature_dim"),
                               score_top_k=c.get("score_top_k", 1), map_fine_weight=c.get("map_fine_weight", 0.0))
    extractor_onnx(c["backbone"], None, c["input_size"], c.get("feature_dim"), tuple(c["strides"]))  # warm the cache
    out = {"settings": c, "categories": {}}
    with tempfile.TemporaryDirectory(prefix="pc-acc-") as tmp:
        for cat in cats:
            cache.use(graph_key(c), cat.name)
            t = time.perf_counter()
            r = evaluate_category(cat, base, Path(tmp), None, extract=cache)
            r["wall_s"] = time.perf_counter() - t
            r["coreset_size"] = int(load_model(Path(tmp) / cat.name).bank.shape[0])
            out["categories"][cat.name] = {k: v for k, v in r.items() if k != "model_version_dir"}
            print(f"  {name} / {cat.name}: image AUROC {r['image_auroc']:.4f}, calibrate {r['calibrate_s']:.1f} s",
                  file=sys.stderr, flush=True)
            if cat.name == "bottle" or "frame_ms" not in out:
                tests = sorted(p for d in (cat / "test").iterdir() if d.is_dir() for p in list_images(d))
                out["frame_ms"] = frame_latency_ms(Path(tmp) / cat.name, tests[:frames])
                out["frame_ms_on"] = cat.name
                if keep:  # for --latency: every kept model timed in turn on the same frames
                    shutil.rmtree(keep / slug(name), ignore_errors=True)
                    shutil.copytree(Path(tmp) / cat.name, keep / slug(name))
    return out


def fmt(v) -> str:
    return "–" if v is None else f"{v:.4f}"


def mean(vals) -> float | None:
    have = [v for v in vals if v is not None]
    return sum(have) / len(have) if have else None


def candidate_table(name: str, r: dict) -> str:
    cats = list(r["categories"])
    res = r["categories"]
    lines = [f"### {name}", "", "| metric | Avg | " + " | ".join(cats) + " |", "|---|---|" + "---|" * len(cats)]
    for m in METRICS:
        vals = [res[c][m] for c in cats]
        lines.append(f"| {m} | {fmt(mean(vals))} | " + " | ".join(fmt(v) for v in vals) + " |")
    lines.append("| calibrate s | | " + " | ".join(f"{res[c]['calibrate_s']:.1f}" for c in cats) + " |")
    lines.append("| coreset size | | " + " | ".join(str(res[c]["coreset_size"]) for c in cats) + " |")
    lines.append("")
    lines.append(f"Frame latency (ONNX Runtime, CPU, median, decode excluded, {r['frame_ms_on']} frames): "
                 f"{r['frame_ms']:.1f} ms")
    notes = [f"{c}: {res[c]['pixel_note']}" for c in cats if res[c].get("pixel_note")]
    lines += [f"Note, {n}." for n in notes]
    return "\n".join(lines)


def summary_table(results: dict) -> str:
    lines = ["| candidate | avg image AUROC | worst category (image AUROC) | bottle pixel AUROC | tire pixel AUROC "
             "| bottle calibrate s | frame ms |", "|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        res = r["categories"]
        img = {c: v["image_auroc"] for c, v in res.items()}
        worst = min(img, key=img.get)

        def px(c):
            return fmt(res[c]["pixel_auroc"]) if c in res else "n/a"

        cal = f"{res['bottle']['calibrate_s']:.1f}" if "bottle" in res else "n/a"
        lines.append(f"| {name} | {mean(img.values()):.4f} | {worst} {img[worst]:.4f} | {px('bottle')} | "
                     f"{px('tire')} | {cal} | {r['frame_ms']:.1f} |")
    return "\n".join(lines)


def limited(cats: list[Path], n: int, root: Path) -> list[Path]:
    """The categories with only their first n train/good images (symlinks; test/ and masks shared)."""
    out = []
    for cat in cats:
        dst = root / cat.name
        (dst / "train" / "good").mkdir(parents=True)
        for p in list_images(cat / "train" / "good")[:n]:
            (dst / "train" / "good" / p.name).symlink_to(p.resolve())
        for sub in ("test", "ground_truth"):
            if (cat / sub).is_dir():
                (dst / sub).symlink_to((cat / sub).resolve())
        out.append(dst)
    return out


def main() -> None:
    here = Path(__file__).resolve().parents[1]
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, nargs="+",
                    default=[here.parent / "shared/data/mvtec/bottle", Path("/work/devsets/tire"),
                             Path("/work/devsets/screw")],
                    help="MVTec-layout categories (or roots of categories)")
    ap.add_argument("--candidates", help="comma-separated candidate names (default: all; see --list)")
    ap.add_argument("--results", type=Path, default=Path("out/accuracy.json"),
                    help="JSON of finished candidates; they are skipped on a rerun")
    ap.add_argument("--fresh", action="store_true", help="measure every chosen candidate again")
    ap.add_argument("--frames", type=int, default=40, help="frames for the latency median")
    ap.add_argument("--train-limit", type=int, help="calibrate on the first N train/good images only")
    ap.add_argument("--models", type=Path, default=Path("out/accuracy-models"),
                    help="the bottle model of each measured candidate is kept here (for --latency)")
    ap.add_argument("--latency", action="store_true",
                    help="only time the kept bottle models of the chosen candidates, taking turns frame by frame")
    ap.add_argument("--list", action="store_true", help="print the candidates and exit")
    a = ap.parse_args()
    if a.list:
        for n, c in CANDIDATES.items():
            print(f"{n}: {json.dumps(c)}")
        return
    names = a.candidates.split(",") if a.candidates else list(CANDIDATES)
    unknown = [n for n in names if n not in CANDIDATES]
    if unknown:
        sys.exit(f"unknown candidate(s) {unknown}; --list shows them")
    cats = [c for d in a.data for c in find_categories(d)]
    if a.latency:
        dirs = {n: a.models / slug(n) for n in names if (a.models / slug(n)).is_dir()}
        bottle = next(c for c in cats if c.name == "bottle")
        tests = sorted(p for d in (bottle / "test").iterdir() if d.is_dir() for p in list_images(d))[:a.frames]
        print(f"Frame latency, bottle models, {len(tests)} frames x 5 rounds, models in turn; median ms "
              "(preprocess + ONNX Runtime backbone + kNN + map, decode excluded)\n")
        print("| candidate | " + " | ".join(STAGES) + " | total |\n|---|" + "---|" * (len(STAGES) + 1))
        for n, ms in interleaved_latency(dirs, tests).items():
            print(f"| {n} | " + " | ".join(f"{ms[k]:.1f}" for k in (*STAGES, "total")) + " |")
        return
    if a.train_limit:
        cats = limited(cats, a.train_limit, Path(tempfile.mkdtemp(prefix="pc-acc-subset-")))
    done = json.loads(a.results.read_text()) if a.results.is_file() and not a.fresh else {}
    cache = FeatureCache()
    for n in names:
        if n in done and done[n]["settings"] == CANDIDATES[n] and done[n].get("train_limit") == a.train_limit \
                and set(done[n]["categories"]) >= {c.name for c in cats}:
            continue
        keep = None if a.train_limit else a.models
        done[n] = {**run_candidate(n, CANDIDATES[n], cats, cache, a.frames, keep), "train_limit": a.train_limit}
        a.results.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(a.results, json.dumps(done, indent=1).encode())  # a kill keeps what finished
    chosen = {n: done[n] for n in names}
    for n, r in chosen.items():
        print(candidate_table(n, r) + "\n")
    print("### Summary\n")
    print(summary_table(chosen))


if __name__ == "__main__":
    main()
