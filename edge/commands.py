"""Station commands (format v2): the signing rule, parsing, validation.

A command is published on `<prefix>/<camera>/recalibrate`. The MQTT payload is

    <hmac>\\n<body>

- `body`: a JSON object, UTF-8, any key order and spacing (it is signed as sent, byte for
  byte, so nothing is canonicalised), e.g.
  {"v":2,"station":"factory/line1","camera":"cam1","action":"rollback","id":"op-43","ts":1764115300}
- `hmac`: HMAC-SHA256 of exactly the body bytes, keyed by the secret file's content without
  surrounding whitespace, as 64 lowercase hex digits; then one newline byte (0x0A).

The daemon refuses, before any JSON parsing, a payload over MAX_PAYLOAD bytes or whose
hmac is wrong; it then parses the body once. The body binds the signature to the station
(`station` = the MQTT prefix), the camera (`camera` = the topic's camera) and the action;
`ts` (Unix seconds) must be within max_age_s of the station clock and `id` is refused if
seen before within that window (edge/nonces.py), so a captured command can be replayed
neither later, nor at once, nor on another camera or station.

Actions: recalibrate (frames | images, interval_s, bad_images, coreset_ratio, layers), rollback
(version), cancel (stops this camera's running recalibration), threshold (value | scale:
a new version with the new threshold sharing the bank).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
import time
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator

from .backbone import parse_strides
from .errors import ConfigError
from .nobool import NoBoolNumbers

FORMAT = 2
MAX_PAYLOAD = 16 * 1024  # bytes; checked before anything else is done with a payload
MAX_INT_DIGITS = 20
MIN_FRAMES = 3  # a calibration needs 2 images and validation one held-out frame
_HEX = frozenset(b"0123456789abcdef")
_CLAIMED_ID = re.compile(rb'"id"\s*:\s*"([A-Za-z0-9_.:-]{1,64})"')


class CommandError(ValueError):
    """A malformed or unauthorised command; the message goes to the status topic.

    `authenticated`: the refusal came after the hmac verified, so the id it names is the signed
    one (the CLI ends on such a refusal; an unauthenticated one may be anybody's forgery of its
    id). `replay`: the signed id was already used, e.g. a QoS 1 duplicate of a command that is
    running: its sender waits for the first delivery's outcome instead."""

    def __init__(self, message: str, authenticated: bool = False, replay: bool = False):
        super().__init__(message)
        self.authenticated = authenticated
        self.replay = replay


class Command(NoBoolNumbers):  # JSON true is no number: "coreset_ratio": true would keep every patch
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    BOOL_HINT: ClassVar[str] = ""

    v: Literal[2]
    station: str = Field(min_length=1, max_length=256)
    camera: str = Field(min_length=1, max_length=128)
    action: Literal["recalibrate", "rollback", "cancel", "threshold"]
    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
    # numbers must be JSON numbers: strict, so "12.0" (a string) is refused rather than read
    ts: float = Field(strict=True)
    frames: int | None = Field(None, ge=MIN_FRAMES, strict=True)
    interval_s: float = Field(0.0, ge=0, le=3600, strict=True)
    images: Path | None = None
    bad_images: Path | None = None
    coreset_ratio: float | None = Field(None, gt=0, le=1, strict=True)
    layers: str | None = Field(None, pattern=r"^\d{1,2}(,\d{1,2}){0,3}$")  # strides, e.g. "8,16"; calibrate checks them
    version: str | None = Field(None, max_length=32, pattern=r"^v\d{4,}$")  # v0001 ... v10000 ...
    value: float | None = Field(None, gt=0, strict=True)
    scale: float | None = Field(None, gt=0, strict=True)  # bounded against the current threshold: edge/retune.py

    @field_validator("layers")
    @classmethod
    def _strides(cls, v: str | None) -> str | None:
        # checked now, not by the build minutes later (after collecting every frame)
        if v is not None:
            try:
                parse_strides(v)
            except ConfigError as e:
                raise ValueError(str(e)) from None
        return v

    @field_validator("images", "bad_images")
    @classmethod
    def _absolute(cls, v: Path | None) -> Path | None:
        # a relative path would mean the daemon's working directory, which the sender cannot know
        # ("" is that directory itself); `patchcore-edge recalibrate` sends absolute paths
        if v is not None and not v.is_absolute():
            raise ValueError(f"must be an absolute path on the station, got {str(v)[:200]!r}")
        return v

    @model_validator(mode="after")
    def _fields_fit_the_action(self):
        own = {"recalibrate": {"frames", "interval_s", "images", "bad_images", "coreset_ratio", "layers"},
               "rollback": {"version"}, "cancel": set(), "threshold": {"value", "scale"}}[self.action]
        stray = sorted(f for f in self.model_fields_set
                       if f not in own and f not in {"v", "station", "camera", "action", "id", "ts"})
        if stray:
            raise ValueError(f"field(s) {stray} do not belong to action {self.action!r}")
        if self.action == "recalibrate" and (self.frames is None) == (self.images is None):
            raise ValueError("recalibrate needs exactly one of 'frames' (live camera) or 'images' (a folder)")
        if self.action == "threshold" and (self.value is None) == (self.scale is None):
            raise ValueError("threshold needs exactly one of 'value' (a new threshold) or 'scale' (a factor)")
        return self


def rejection(reason: str, ids: dict, authenticated: bool, replay: bool = False) -> dict:
    """The status topic's `rejected` object (README, Live recalibration): reason, the id the
    payload names, whether that id is the signed one, and whether it was a replay."""
    return {"reason": reason, **ids, "authenticated": authenticated, **({"replay": True} if replay else {})}


def sign(body: bytes, secret: bytes) -> str:
    return hmac.new(secret, body, hashlib.sha256).hexdigest()


def encode(fields: dict, secret: bytes, station: str, camera: str) -> bytes:
    """A v2 command ready to publish (used by `patchcore-edge recalibrate`, tests, benchmarks)."""
    body = {"v": FORMAT, "station": station, "camera": camera,
            **{k: v for k, v in fields.items() if v is not None}}
    body.setdefault("ts", time.time())
    raw = json.dumps(body, separators=(",", ":")).encode()
    return sign(raw, secret).encode() + b"\n" + raw


def claimed_id(payload: bytes) -> dict:
    """The id a refused payload claims (a bounded regex, not a parse), so its sender can match
    the refusal; never trusted for anything else."""
    m = _CLAIMED_ID.search(payload[:MAX_PAYLOAD])
    return {"id": m.group(1).decode()} if m else {}


def _reject_constant(name: str):
    raise CommandError(f"command body holds {name}: numbers must be finite")


def _finite_float(text: str) -> float:
    x = float(text)
    if not math.isfinite(x):  # 1e999 parses to inf
        raise CommandError(f"command body holds {text[:20]}: numbers must be finite")
    return x


def authenticate(payload: bytes, secret: bytes) -> bytes:
    """The body of a payload whose size and hmac are right (raw bytes only, nothing parsed)."""
    if len(payload) > MAX_PAYLOAD:
        raise CommandError(f"command is {len(payload)} bytes; the limit is {MAX_PAYLOAD}")
    if payload[:1] == b"{":
        raise CommandError("format v1 (JSON with an 'hmac' field) is no longer accepted: send "
                           "'<hmac hex>\\n<json body>' with \"v\": 2 (README, Live recalibration)")
    sig, sep, body = payload[:64], payload[64:65], payload[65:]
    if len(sig) < 64 or not set(sig) <= _HEX or sep != b"\n":
        raise CommandError("payload must start with the hmac as 64 lowercase hex digits and a newline")
    if not hmac.compare_digest(sig, sign(body, secret).encode()):
        raise CommandError("invalid hmac: command refused (wrong secret, or the body changed after signing)")
    return body


def parse(payload: bytes, secret: bytes | None, station: str, camera: str, max_age_s: float,
          max_frames: int, max_collect_s: float, disabled: str | None = None) -> Command:
    """Authenticate, then parse once and validate; CommandError says why a command is refused.
    Replays (a seen id) are refused by the caller, which owns the id store."""
    if secret is None:
        raise CommandError(disabled or "recalibration is disabled: set recalibration.secret_file in the daemon config")
    body = authenticate(payload, secret)
    try:
        return _validate(body, station, camera, max_age_s, max_frames, max_collect_s)
    except CommandError as e:
        e.authenticated = True
        raise


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    """A JSON object whose keys are unique: with "action" twice, which one a reader keeps is
    the parser's choice, and the signer may have meant the other."""
    out: dict = {}
    for k, v in pairs:
        if k in out:
            raise CommandError(f"command body gives {k[:40]!r} twice; give each field once")
        out[k] = v
    return out


def _bounded_int(text: str) -> int:
    if len(text) > MAX_INT_DIGITS:  # Python refuses > 4300 digits with an unhelpful message
        raise CommandError(f"command body holds a {len(text)}-digit integer; numbers must be at most "
                           f"{MAX_INT_DIGITS} digits")
    return int(text)


def _validate(body: bytes, station: str, camera: str, max_age_s: float, max_frames: int, max_collect_s: float
              ) -> Command:
    try:
        raw = json.loads(body, parse_constant=_reject_constant, parse_float=_finite_float, parse_int=_bounded_int,
                         object_pairs_hook=_unique_keys)
    except CommandError:
        raise
    except RecursionError as e:
        raise CommandError("command body is nested too deeply") from e
    except (ValueError, UnicodeDecodeError) as e:
        raise CommandError(f"command body is not JSON: {e}") from e
    if not isinstance(raw, dict):
        raise CommandError("command body must be a JSON object")
    if raw.get("v") != FORMAT:
        raise CommandError(f"command format v={raw.get('v')!r} is not supported; this station takes \"v\": {FORMAT}")
    try:
        cmd = Command.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(map(str, err["loc"])) or "body"
        raise CommandError(f"bad command field {where}: {err['msg']}") from e
    if cmd.station != station or cmd.camera != camera:
        raise CommandError(f"command is signed for station {cmd.station!r} camera {cmd.camera!r}; "
                           f"this is station {station!r} camera {camera!r}")
    age = time.time() - cmd.ts
    if abs(age) > max_age_s:
        raise CommandError(f"command ts is {age:.0f} s off the station clock (max {max_age_s:.0f} s)")
    if cmd.action == "recalibrate" and cmd.frames is not None:
        if cmd.frames > max_frames:
            raise CommandError(f"frames={cmd.frames} exceeds recalibration.max_frames={max_frames}")
        if cmd.frames * cmd.interval_s > max_collect_s:
            raise CommandError(f"frames x interval_s = {cmd.frames * cmd.interval_s:.0f} s exceeds "
                               f"recalibration.max_collect_s ({max_collect_s:.0f} s)")
    return cmd
