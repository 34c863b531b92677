import json
import shutil

import cv2
import pytest

from calibrate.settings import CalibrationSettings
from calibrate.evaluate import evaluate, find_categories, results_table
from edge.errors import ImageError
from edge.preprocess import list_images


@pytest.fixture(scope="module")
def mini_bottle(bottle, tmp_path_factory):
    """A small real MVTec-layout subset: 10 train, 4 good + 4 broken_large test images, masks; some as jpg."""
    root = tmp_path_factory.mktemp("ds") / "bottle"
    for sub, n in (("train/good", 10), ("test/good", 4), ("test/broken_large", 4)):
        (root / sub).mkdir(parents=True)
        for i, p in enumerate(list_images(bottle / sub)[:n]):
            if i % 2:  # the pipeline must not care about the format
                cv2.imwrite(str(root / sub / f"{p.stem}.jpg"), cv2.imread(str(p)))
            else:
                shutil.copy(p, root / sub / p.name)
    (root / "ground_truth/broken_large").mkdir(parents=True)
    for p in list_images(bottle / "ground_truth/broken_large")[:4]:
        shutil.copy(p, root / "ground_truth/broken_large" / p.name)
    return root


def test_evaluate_end_to_end_on_real_subset(mini_bottle, tmp_path):
    base = CalibrationSettings(images=mini_bottle, output=mini_bottle, coreset_ratio=0.05)
    res = evaluate(mini_bottle.parent, base, tmp_path / "out", tmp_path / "r.json")["bottle"]
    assert res["image_auroc"] >= 0.9 and 0.8 <= res["pixel_auroc"] <= 1.0
    assert 0.2 <= res["pixel_f1"] <= 1.0 and 0.5 <= res["aupro"] <= 1.0
    data = json.loads((tmp_path / "r.json").read_text())
    assert set(data["average"]) == {"image_auroc", "pixel_auroc", "pixel_f1", "aupro"}
    assert data["categories"]["bottle"]["image_auroc"] == res["image_auroc"]
    heat = sorted((tmp_path / "out/bottle").glob("*.jpg"))
    assert len(heat) == 8 and all(cv2.imread(str(h)) is not None for h in heat)
    plot = cv2.imread(str(tmp_path / "out/bottle/scores.png"))
    assert plot is not None and plot.shape[1] > 500
    table = results_table({"bottle": res})
    assert table.splitlines()[0] == "| metric | Avg | bottle |" and "| aupro |" in table


def test_wrong_layout_names_the_expected_one(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(ImageError, match="train/good"):
        find_categories(tmp_path)


def _copy(src, dst, n):
    dst.mkdir(parents=True)
    for p in list_images(src)[:n]:
        shutil.copy(p, dst / p.name)


def test_label_only_and_partly_masked_categories_give_image_metrics_and_null_pixel_metrics(bottle, tmp_path):
    """Real bottle images laid out without ground_truth (labels only), and with masks for one of two
    defect types: no "AUPRO needs a defect mask" crash; pixel metrics null / over the masked type only."""
    root = tmp_path / "ds"
    for cat in ("labels_only", "partly_masked"):
        _copy(bottle / "train/good", root / cat / "train/good", 10)
        _copy(bottle / "test/good", root / cat / "test/good", 4)
        _copy(bottle / "test/broken_large", root / cat / "test/broken_large", 3)
        _copy(bottle / "test/contamination", root / cat / "test/contamination", 3)
    _copy(bottle / "ground_truth/broken_large", root / "partly_masked/ground_truth/broken_large", 3)
    base = CalibrationSettings(images=root, output=root, coreset_ratio=0.05)
    res = evaluate(root, base, json_path=tmp_path / "r.json")
    lo, pm = res["labels_only"], res["partly_masked"]
    assert lo["image_auroc"] >= 0.8 and lo["n_defective"] == 6 and "f1" in lo["at_threshold"]
    assert lo["pixel_auroc"] is None and lo["pixel_f1"] is None and lo["aupro"] is None
    assert "no defect masks" in lo["pixel_note"]
    assert 0.8 <= pm["pixel_auroc"] <= 1.0 and pm["aupro"] is not None
    assert pm["pixel_note"] == "pixel metrics over 3 of 6 defective images (no masks for: contamination)"
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["categories"]["labels_only"]["aupro"] is None
    assert data["average"]["pixel_auroc"] == pm["pixel_auroc"]  # over the categories that have it
    table = results_table(res)
    assert "| pixel_auroc | " in table and "| – |" in table and "labels_only: no defect masks" in table
