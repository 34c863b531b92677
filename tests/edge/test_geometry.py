"""Input W x H parsing, short-side resolution, tile layout, tile inputs and map stitching."""

from __future__ import annotations

import numpy as np
import pytest

from edge.errors import ConfigError, ModelError
from edge.geometry import (Geometry, ShortSide, median_aspect, parse_input_size, parse_tiles, resolve_short_side,
                           tiles_side_by_side)
from edge.preprocess import list_images, read_image, to_input


def test_input_size_forms():
    assert parse_input_size(224) == (224, 224)
    assert parse_input_size("224") == (224, 224)
    assert parse_input_size("256x192") == (256, 192)  # W x H
    assert parse_input_size([320, 128]) == (320, 128)
    assert parse_input_size("short:224") == ShortSide(224)
    for bad in ("250x192", "0", "2048", "big", "short:100", "16x16"):
        with pytest.raises(ConfigError, match="input|short"):
            parse_input_size(bad)


def test_tiles_forms():
    assert parse_tiles("2x3") == (2, 3) and parse_tiles("2") == (2, 2) and parse_tiles([1, 1]) == (1, 1)
    for bad in ("0x2", "9x1", "two"):
        with pytest.raises(ConfigError, match="tiles"):
            parse_tiles(bad)


def test_short_side_keeps_aspect_rounded_to_stride():
    assert resolve_short_side(224, 4 / 3) == (304, 224)  # 298.7 -> 304
    assert resolve_short_side(224, 3 / 4) == (224, 304)  # portrait
    assert resolve_short_side(224, 500 / 1250) == (224, 560)  # a long narrow strip
    assert resolve_short_side(192, 1.0, tiles=(2, 1), overlap=0.0) == (192, 384)  # half-width tiles: 1:2
    # a 2x1 tiling of a 2:1 image makes square tiles
    assert resolve_short_side(192, 2.0, tiles=(2, 1), overlap=0.0) == (192, 192)
    with pytest.raises(ConfigError, match="long side"):
        resolve_short_side(512, 4.0)


def test_median_aspect_reads_headers(bottle, tmp_path):
    import cv2

    img = read_image(list_images(bottle / "train/good")[0])
    for i, (w, h) in enumerate([(300, 100), (310, 100), (900, 100)]):
        cv2.imwrite(str(tmp_path / f"{i}.png"), cv2.resize(img, (w, h)))
    assert median_aspect(sorted(tmp_path.iterdir())) == pytest.approx(3.1)


@pytest.mark.parametrize("cols,rows,overlap", [(1, 1, 0.0), (2, 2, 0.1), (3, 2, 0.25), (4, 1, 0.0)])
def test_tiles_cover_the_canvas_exactly(cols, rows, overlap):
    g = Geometry(96, 64, cols, rows, overlap)
    cw, ch = g.canvas
    cover = np.zeros((ch, cw), int)
    for x, y in g.origins():
        assert x + g.width <= cw and y + g.height <= ch  # every tile inside, at the network size
        cover[y:y + g.height, x:x + g.width] += 1
    assert cover.min() >= 1  # nothing of the frame is left out
    assert len(g.origins()) == cols * rows
    if cols > 1:  # neighbours share overlap x tile width (rounded to pixels)
        assert g.width - g.step[0] == round(g.width * overlap)
        assert (cover[0] > 1).sum() == (cols - 1) * (g.width - g.step[0])


def test_tile_inputs_are_crops_of_the_resized_frame(bottle):
    frame = read_image(list_images(bottle / "train/good")[0])
    g = Geometry(64, 48, 2, 2, 0.25)
    x = g.inputs(frame, (0.5,) * 3, (0.25,) * 3)
    assert x.shape == (4, 3, 48, 64) and x.dtype == np.float32
    canvas = to_input(frame, g.canvas, (0.5,) * 3, (0.25,) * 3)
    for tile, (ox, oy) in zip(x, g.origins()):
        np.testing.assert_array_equal(tile, canvas[:, oy:oy + 48, ox:ox + 64])
    untiled = Geometry(64, 48).inputs(frame, (0.5,) * 3, (0.25,) * 3)
    np.testing.assert_array_equal(untiled[0], to_input(frame, (64, 48), (0.5,) * 3, (0.25,) * 3))


def test_stitched_map_places_each_tile_and_merges_overlaps():
    g = Geometry(64, 32, 2, 1, 0.25)  # canvas 112 x 32, tiles overlap on x in [48, 64)
    ps = np.zeros((2, 8, 16), np.float32)
    ps[1, :, -2:] = 10.0  # a hot spot at the right edge of the right tile
    amap = g.anomaly_map(ps)
    assert amap.shape == (32, 112)
    assert amap[:, 100:].mean() > 5 * max(amap[:, :40].mean(), 1e-6)
    wide = Geometry(256, 32, 2, 1, 0.25)  # overlap x in [192, 256): its centre is 8 sigma from any tile edge
    flat = np.ones((2, 8, 64), np.float32)
    flat[0] *= 2.0  # left tile 2, right tile 1: the overlap is 2 with max, 1.5 with mean
    assert wide.anomaly_map(flat)[16, 224] == pytest.approx(2.0, abs=1e-3)
    assert Geometry(256, 32, 2, 1, 0.25, "mean").anomaly_map(flat)[16, 224] == pytest.approx(1.5, abs=1e-3)
    assert Geometry(64, 32).anomaly_map(flat[0]).shape == (32, 64)


def test_tiles_side_by_side_keeps_each_images_patches():
    feats = np.random.default_rng(0).normal(size=(6, 5, 4, 3)).astype(np.float32)  # 3 images x 2 tiles
    row = tiles_side_by_side(feats, 2)
    assert row.shape == (3, 5, 4, 6)
    np.testing.assert_array_equal(row[1, :, :, :3], feats[2])
    np.testing.assert_array_equal(row[1, :, :, 3:], feats[3])
    assert tiles_side_by_side(feats, 1) is feats
    np.testing.assert_array_equal(Geometry(32, 32, 2, 1).image_scores(np.array([1, 5, 3, 2])), [5, 3])


def test_manifest_round_trip_and_old_square_manifests():
    g = Geometry(256, 192, 2, 3, 0.1, "mean")
    fields = g.manifest_fields()
    assert fields["input_size"] == [256, 192] and fields["tiling"]["tiles"] == [2, 3]
    assert Geometry.from_manifest(fields) == g
    old = {"input_size": 224}  # what models before W x H wrote (no tiling key)
    assert Geometry.from_manifest(old) == Geometry(224, 224)
    assert Geometry(224, 224).manifest_fields() == {"input_size": 224, "tiling": None}
    assert g.cli_args() == ["--input-size", "256x192", "--tiles", "2x3", "--tile-overlap", "0.1",
                            "--tile-merge", "mean"]
    with pytest.raises(ModelError, match="recalibrate"):
        Geometry.from_manifest({"input_size": "huge"})
