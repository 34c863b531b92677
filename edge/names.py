"""Names that become path components and MQTT topic levels, and paths built from them.

A camera name is used both as a topic level (`<prefix>/<camera>/result`) and as a folder
name (recalibration frames). One strict pattern serves both: it starts with a letter or
digit (so never `.`, `..`, `-x` or `$SYS`), then letters, digits, `_`, `-` or `.`, at most
64 characters; no `/`, `+`, `#`, spaces or control characters.

`inside(root, *parts)` is the one way to build a path from such a name: the result must
resolve (symlinks followed) to a path under `root`, or it raises. Even a name that passed
the pattern goes through it, so a later change to the pattern cannot reopen a hole that
deleted a whole model directory (a camera named `..`).
"""

from __future__ import annotations

import re
from pathlib import Path

from .errors import ConfigError

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_NAME = re.compile(NAME_PATTERN)


def check_name(name: str, what: str = "name") -> str:
    """`name` if it is a safe path component and topic level, else ConfigError saying why."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(f"{what} {name!r} is not allowed: use 1-64 letters, digits, '_', '-' or '.', "
                          "starting with a letter or digit")
    return name


def inside(root: str | Path, *parts: str) -> Path:
    """root / parts, refusing any result that does not resolve to a path under root."""
    base = Path(root).resolve()
    path = base.joinpath(*parts)
    if not path.resolve().is_relative_to(base) or path.resolve() == base and parts:
        raise ConfigError(f"path {path} built from {'/'.join(parts)!r} leaves {base}; refused")
    return path
