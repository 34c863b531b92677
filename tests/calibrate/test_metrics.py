import numpy as np
import pytest

from calibrate.metrics import at_threshold, aupro, best_f1, image_auroc, pixel_auroc


def test_image_auroc_and_threshold_metrics_hand_computed():
    labels = np.array([0, 0, 1, 1])
    assert image_auroc(labels, np.array([0.1, 0.4, 0.35, 0.8])) == 0.75  # 3 of 4 pairs ordered
    m = at_threshold(labels, np.array([0.1, 0.4, 0.35, 0.8]), 0.3)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == 1.0 and m["false_rejects"] == 1


def test_pixel_metrics_hand_computed():
    masks = np.array([[[1, 1], [0, 0]]], bool)
    maps = np.array([[[0.9, 0.2], [0.5, 0.1]]])
    assert pixel_auroc(masks, maps) == 0.75
    # thresholds: >=0.9 -> P=1 R=.5 F1=.667; >=0.5 -> P=.5 R=.5; >=0.2 -> P=2/3 R=1 F1=.8
    assert best_f1(masks, maps) == pytest.approx(0.8)


def test_aupro_hand_computed():
    # one image, two regions: A = 2 pixels, B = 1 pixel; 5 good pixels
    masks = np.zeros((1, 1, 8), bool)
    masks[0, 0, [0, 1]] = True  # region A
    masks[0, 0, 3] = True  # region B (separated by pixel 2)
    maps = np.array([[[0.9, 0.1, 0.05, 0.8, 0.7, 0.0, 0.0, 0.0]]])
    # descending: 0.9 (A half) PRO=.25 FPR=0; 0.8 (B) PRO=.75 FPR=0; 0.7 (good) FPR=.2;
    # 0.1 (A) PRO=1 FPR=.2; 0.05 (good) FPR=.4 ...
    # curve to FPR .3: (0,0)-(0,.25)-(0,.75)-(.2,.75)-(.2,1)-(.3,1): area=.2*.75+.1*1=.25
    assert aupro(masks, maps) == pytest.approx(0.25 / 0.3)
    perfect = np.where(masks, 1.0, 0.0)
    assert aupro(masks, perfect) == pytest.approx(1.0)


def test_aupro_needs_regions():
    with pytest.raises(ValueError, match="defect region"):
        aupro(np.zeros((1, 2, 2), bool), np.zeros((1, 2, 2)))
