"""The station page's images (edge/web/render.py): sizes, and the same colours as the MQTT heatmap."""


import cv2
import numpy as np
import pytest

from edge import heatmap
from edge.web import render
from edge.web.state import Failure, Latest



@pytest.mark.parametrize("shape", [(160, 160), (640, 480), (33, 77), (1, 5)])
def test_the_colour_table_gives_opencvs_jet_pixels(shape):
    """The table built once colours exactly as cv2.applyColorMap(COLORMAP_JET) (rebuilt per call)."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    amap = (rng.random((224, 224)) * 40).astype(np.float32)  # below 0 .. far above 2x threshold
    level = cv2.resize(np.clip(amap / 30.0 * 255.0, 0, 255).astype(np.uint8), shape[::-1],
                       interpolation=cv2.INTER_LINEAR)
    want = cv2.addWeighted(img, 0.5, cv2.applyColorMap(level, cv2.COLORMAP_JET), 0.5, 0.0)
    assert np.array_equal(heatmap.colour_over(img, amap, 15.0), want)


def test_the_page_and_the_mqtt_heatmap_draw_the_same_picture():
    rng = np.random.default_rng(3)
    frame = rng.integers(0, 256, (900, 700, 3), dtype=np.uint8)
    amap = (rng.random((224, 224)) * 30).astype(np.float32)
    latest = Latest(1, frame, None, {"threshold": 15.0, "verdict": "pass"}, amap)
    page = render.annotated(latest.frame, None, amap, 15.0, "pass", 320, heatmap=True)
    mqtt = heatmap.overlay(frame, amap, 15.0, max_side=320)
    inner = (slice(4, -4), slice(4, -4))  # the page draws the ROI outline over the border
    assert page.shape == mqtt.shape and np.array_equal(page[inner], mqtt[inner])


@pytest.mark.parametrize("shape,side,want", [
    ((900, 900), 640, (640, 640)), ((900, 900), 160, (160, 160)), ((900, 900), 450, (450, 450)),
    ((901, 677), 160, (160, 120)), ((677, 901), 200, (150, 200)), ((1080, 1920), 640, (360, 640)),
    ((3, 2000), 64, (1, 64)), ((100, 80), 640, (100, 80)),
])
def test_downscale_sizes(shape, side, want):
    img = np.zeros((*shape, 3), np.uint8)
    out, s = heatmap.downscale(img, side)
    assert out.shape[:2] == want and out.flags.c_contiguous and out is not img
    assert s == pytest.approx(min(1.0, side / max(shape)))


def test_downscale_keeps_the_picture(bottle):
    """Exact halvings + one bilinear step stay close to a full-frame INTER_AREA resize (on a real
    frame: on noise any two resamplings differ by tens of levels)."""
    frame = cv2.imread(str(bottle / "test/broken_large/000.png"))
    assert frame is not None
    for side in (640, 160):
        out, _ = heatmap.downscale(frame, side)
        ref = cv2.resize(frame, out.shape[1::-1], interpolation=cv2.INTER_AREA)
        assert np.abs(out.astype(int) - ref.astype(int)).mean() < 4


def test_live_and_failure_jpegs():
    rng = np.random.default_rng(2)
    frame = rng.integers(0, 256, (900, 900, 3), dtype=np.uint8)
    amap = (rng.random((224, 224)) * 30).astype(np.float32)
    latest = Latest(1, frame, (100, 50, 600, 700), {"threshold": 15.0, "verdict": "fail"}, amap)
    for hm in (False, True):
        img = cv2.imdecode(np.frombuffer(render.live_jpeg(latest, hm, 640, 75), np.uint8), cv2.IMREAD_COLOR)
        assert img.shape == (640, 640, 3)
    f = Failure(1, {"threshold": 15.0}, frame, (100, 50, 600, 700), amap)
    for size, side in (("thumb", render.THUMB_SIDE), ("large", render.LARGE_SIDE)):
        img = cv2.imdecode(np.frombuffer(render.failure_jpeg(f, size, 75), np.uint8), cv2.IMREAD_COLOR)
        assert max(img.shape[:2]) == min(side, 700) and img.shape[1] / img.shape[0] == pytest.approx(6 / 7, abs=0.01)
