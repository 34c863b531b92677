import cv2
import numpy as np
import pytest

from edge.errors import ImageError
from edge.preprocess import list_images, read_image, to_input


@pytest.mark.parametrize("ext", [".png", ".jpg", ".bmp"])
def test_formats_grayscale_and_sizes(bottle, tmp_path, ext):
    src = cv2.imread(str(bottle / "train/good/000.png"))
    gray = cv2.cvtColor(cv2.resize(src, (300, 250)), cv2.COLOR_BGR2GRAY)
    cv2.imwrite(str(tmp_path / f"g{ext}"), gray)
    img = read_image(tmp_path / f"g{ext}")
    assert img.shape == (250, 300, 3) and img.dtype == np.uint8
    x = to_input(img, 224, (0.5,) * 3, (0.5,) * 3)
    assert x.shape == (3, 224, 224) and x.dtype == np.float32 and -1.0 <= x.min() and x.max() <= 1.0


def test_sixteen_bit_png(tmp_path):
    img16 = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16)
    cv2.imwrite(str(tmp_path / "a.png"), img16)
    assert read_image(tmp_path / "a.png").max() == (img16.max() >> 8)


def test_channel_order_is_rgb_for_the_network():
    bgr = np.zeros((8, 8, 3), np.uint8)
    bgr[:, :, 2] = 255  # pure red in OpenCV's BGR
    x = to_input(bgr, 8, (0.0,) * 3, (1.0,) * 3)
    assert x[0].min() == 1.0 and x[2].max() == 0.0


def test_unreadable_and_missing_files(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not a png at all")
    with pytest.raises(ImageError, match="cannot decode"):
        read_image(tmp_path / "bad.png")
    with pytest.raises(ImageError, match="does not exist"):
        read_image(tmp_path / "missing.png")
    with pytest.raises(ImageError, match="not a folder"):
        list_images(tmp_path / "nope")
