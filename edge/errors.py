"""Errors the user can act on: each message says what is wrong and how to fix it."""


class PatchcoreError(Exception):
    """Base class: the CLI prints these as one line and exits non-zero, no traceback."""


class ConfigError(PatchcoreError):
    """A bad option or config value."""


class ImageError(PatchcoreError):
    """An image that cannot be read, or no usable images at all."""


class ModelError(PatchcoreError):
    """A missing, corrupt or incompatible model directory."""


class BackboneError(PatchcoreError):
    """An unknown backbone or unavailable weights."""


class BackendError(PatchcoreError):
    """An inference backend that cannot run here (missing package or device)."""
