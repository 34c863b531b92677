"""Files the commands read at run time (unit template, example configs, MQTT schemas).

They ship as package data of `patchcore_edge` and are found through importlib.resources, so an
installed wheel finds them as a source checkout does (there patchcore_edge/configs etc. are links
to the top-level folders; one copy of each file in git). Only the package's data is read: edge/
imports no module of patchcore_edge (ARCHITECTURE.md).
"""

from __future__ import annotations

from importlib.resources import files
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # importlib.resources.abc is 3.11+; only the annotation needs it
    from importlib.resources.abc import Traversable

PACKAGE = "patchcore_edge"


def data_file(*parts: str) -> Traversable:
    """e.g. data_file("systemd", "patchcore-edge.service.in"); may not exist (check is_file())."""
    return files(PACKAGE).joinpath(*parts)
