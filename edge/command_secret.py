"""The command secret, checked once when the daemon starts (not at the first command)."""

from __future__ import annotations

import logging
import stat

from .config import RecalibrationConfig, credential_path
from .errors import ConfigError

log = logging.getLogger(__name__)


def load_command_secret(cfg: RecalibrationConfig) -> tuple[bytes | None, str | None]:
    """(secret, None), or (None, why commands are disabled). Logs one line either way it fails,
    and warns when the file is readable by group or others (anyone who reads it can sign)."""
    if cfg.secret_file is None:
        why = "recalibration is disabled: the config has no recalibration.secret_file"
        log.info("%s (inspection runs; station commands are refused)", why)
        return None, why
    try:
        secret = cfg.secret()
    except ConfigError as e:
        why = f"recalibration is disabled: {e}"
        log.error("%s (inspection runs; station commands are refused until this is fixed and the daemon restarted)",
                  why)
        return None, why
    path = credential_path(cfg.secret_file)
    try:
        mode = path.stat().st_mode
    except OSError:
        mode = 0
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("recalibration.secret_file %s has mode %04o: group/others can read it and sign commands; "
                    "chmod 600 it", path, stat.S_IMODE(mode))
    return secret, None
