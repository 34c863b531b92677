"""Limits on the size of an image or frame, checked before the expensive work.

A 20000 x 20000 file took 7 s and 2.5 GB to score, and a 1 x 1 image scored "pass" without a
word: neither is a real inspection. Files are checked from their header (Pillow reads only
the header, no pixels) so an oversized one is refused before it is decoded; frames (from a
camera, or a file whose header Pillow cannot read) are checked after decoding.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from .errors import ImageError

MAX_PIXELS = 64_000_000  # 64 MP: above any industrial camera in use here (a 900x900 frame is 0.8 MP)
MIN_SIDE = 32  # below this the network sees only interpolated blur
# Largest image file read at all: an uncompressed MAX_PIXELS image with 4 channels of 16 bits
# (BMP/TIFF/PPM without compression, the worst real case) plus 16 MiB for headers and metadata.
# Checked from the file size before a byte is read: a 2 GiB file (sparse, or a mislabelled
# video) was read whole into memory and then made OpenCV's decoder assert.
MAX_FILE_BYTES = MAX_PIXELS * 4 * 2 + 16 * 2**20


def check_size(width: int, height: int, what: str) -> None:
    """ImageError when an image is too large to decode safely or too small to judge."""
    if width * height > MAX_PIXELS:
        raise ImageError(f"{what} is {width}x{height} ({width * height / 1e6:.0f} MP), more than the "
                         f"{MAX_PIXELS / 1e6:.0f} MP limit; downscale it or crop it (roi) first")
    if min(width, height) < MIN_SIDE:
        raise ImageError(f"{what} is only {width}x{height} px; at least {MIN_SIDE} px a side is needed "
                         "for a meaningful verdict")


def check_file_size(size: int, what: str) -> None:
    """ImageError when a file is larger than any image within the pixel limit can be."""
    if size > MAX_FILE_BYTES:
        raise ImageError(f"{what} is {size / 2**20:.0f} MiB, more than the {MAX_FILE_BYTES / 2**20:.0f} MiB an image "
                         f"of at most {MAX_PIXELS / 1e6:.0f} MP can take; not read (downscale it or crop it first)")


def check_file_header(path: str | Path) -> None:
    """Check the size a file's header declares, without decoding its pixels (when Pillow knows the format)."""
    try:
        from PIL import Image
    except ImportError:  # optional: the check after decoding still applies
        return
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # we apply our own limit
            with Image.open(path) as im:
                width, height = im.size
    except Image.DecompressionBombError:  # Pillow's own limit (2x 89 MP) is above ours
        raise ImageError(f"image {path} is over {2 * (Image.MAX_IMAGE_PIXELS or 0) / 1e6:.0f} MP, more than the "
                         f"{MAX_PIXELS / 1e6:.0f} MP limit; downscale it or crop it first") from None
    except Exception:  # noqa: BLE001 - not a format Pillow reads: OpenCV decides
        return
    check_size(width, height, f"image {path}")
