"""Recalibration commands: parsing, validation and HMAC authorisation.

A command is JSON on `<prefix>/<camera>/recalibrate`:

    {"action": "recalibrate", "id": "op-42", "ts": 1764115200, "frames": 200, "interval_s": 0.0,
     "images": null, "bad_images": null, "coreset_ratio": null, "hmac": "<hex>"}
    {"action": "rollback", "id": "op-43", "ts": 1764115300, "version": null, "hmac": "<hex>"}

`hmac` is HMAC-SHA256, keyed by the shared secret, over the command without its `hmac`
field serialised as compact JSON with sorted keys. `ts` (Unix seconds) must be within
max_age_s of the station's clock, so a captured command cannot be replayed later.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class CommandError(ValueError):
    """A malformed or unauthorised command; the message goes to the status topic."""


class Command(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: Literal["recalibrate", "rollback"]
    id: str = Field(min_length=1, max_length=64)
    ts: float
    frames: int | None = Field(None, ge=3)
    interval_s: float = Field(0.0, ge=0, le=3600)
    images: Path | None = None
    bad_images: Path | None = None
    coreset_ratio: float | None = Field(None, gt=0, le=1)
    version: str | None = Field(None, pattern=r"^v\d{4}$")
    hmac: str


def canonical(fields: dict) -> bytes:
    """The bytes that are signed: compact JSON, sorted keys, without the hmac field."""
    return json.dumps({k: v for k, v in fields.items() if k != "hmac"}, sort_keys=True,
                      separators=(",", ":")).encode()


def sign(fields: dict, secret: bytes) -> str:
    return hmac.new(secret, canonical(fields), hashlib.sha256).hexdigest()


def signed(fields: dict, secret: bytes) -> dict:
    """A command ready to publish (used by `patchcore-edge recalibrate` and tests)."""
    out = {k: v for k, v in fields.items() if v is not None}
    out.setdefault("ts", time.time())
    out["hmac"] = sign(out, secret)
    return out


def parse(payload: bytes, secret: bytes | None, max_age_s: float, max_frames: int) -> Command:
    """Validate and authorise; CommandError says why a command is refused."""
    if secret is None:
        raise CommandError("recalibration is disabled: set recalibration.secret_file in the daemon config")
    try:
        raw = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as e:
        raise CommandError(f"command is not JSON: {e}") from e
    if not isinstance(raw, dict):
        raise CommandError("command must be a JSON object")
    if not isinstance(raw.get("hmac"), str) or not hmac.compare_digest(raw["hmac"], sign(raw, secret)):
        raise CommandError("invalid or missing hmac: command refused")
    try:
        cmd = Command.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        raise CommandError(f"bad command field {'.'.join(map(str, err['loc']))}: {err['msg']}") from e
    if abs(time.time() - cmd.ts) > max_age_s:
        raise CommandError(f"command ts is {time.time() - cmd.ts:.0f} s off the station clock (max {max_age_s:.0f} s)")
    if cmd.action == "recalibrate":
        if (cmd.frames is None) == (cmd.images is None):
            raise CommandError("recalibrate needs exactly one of 'frames' (live camera) or 'images' (a folder)")
        if cmd.frames is not None and cmd.frames > max_frames:
            raise CommandError(f"frames={cmd.frames} exceeds recalibration.max_frames={max_frames}")
    return cmd
