"""patchcore-edge runtime: backbone, preprocessing, scoring, model directory, daemon.

`calibrate/` and `export/` import from here; nothing here imports them.
"""

__version__ = "0.1.0"
