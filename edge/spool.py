"""The spool: results the broker never acknowledged, kept on disk across a daemon restart.

At shutdown the daemon writes what is still buffered or unacknowledged (in publish order)
to `<state_dir>/spool.jsonl`; at the next start those messages go out first, before any new
result. The file is written atomically (temp file, fsync, rename, fsync of the folder), so
a crash mid-write leaves the previous spool or the new one, never a torn one. It is bounded
by a message count and a byte size; what does not fit is dropped oldest first, logged and
counted (stats `broker.spool_dropped`). Retained messages (`state`) only keep their last
value per topic: earlier ones would be overwritten at the broker anyway.

Format (JSON lines): a header `{"spool": 1, "dropped": N, "written_at": ISO time}`, then one
`{"topic": str, "qos": 0-2, "retain": bool, "payload": base64}` per message. The file is
treated as hostile on load: a line that does not validate ends the read (the lines before
it are replayed, the file is kept as `spool.corrupt`), and only topics under this daemon's
prefix are replayed.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
from datetime import datetime, timezone
from pathlib import Path

from .files import atomic_write_bytes

log = logging.getLogger(__name__)

SPOOL_FILE = "spool.jsonl"
FORMAT = 1
MAX_PAYLOAD = 1 << 20  # a result is ~300 bytes; anything near this is not ours
MAX_LINE = MAX_PAYLOAD * 4 // 3 + 4096  # base64 payload + topic and keys: memory per line stays bounded

Message = tuple[str, bytes, int, bool]  # topic, payload, qos, retain


def _collapse_retained(msgs: list[Message]) -> list[Message]:
    last = {m[0]: i for i, m in enumerate(msgs) if m[3]}
    return [m for i, m in enumerate(msgs) if not m[3] or last[m[0]] == i]


def write_spool(state_dir: Path, msgs: list[Message], max_messages: int, max_bytes: int) -> tuple[int, int]:
    """Spool `msgs` (oldest first) within the bounds; returns (kept, dropped). No message: no file."""
    path = Path(state_dir) / SPOOL_FILE
    msgs = _collapse_retained(msgs)
    lines = [json.dumps({"topic": t, "qos": q, "retain": r, "payload": base64.b64encode(p).decode()},
                        separators=(",", ":")).encode() + b"\n" for t, p, q, r in msgs]
    keep, size = 0, 0
    for line in reversed(lines):  # newest first: the oldest are dropped, as the memory buffer does
        if keep >= max_messages or size + len(line) > max_bytes:
            break
        keep += 1
        size += len(line)
    dropped = len(lines) - keep
    if not keep:
        path.unlink(missing_ok=True)
        return 0, dropped
    header = json.dumps({"spool": FORMAT, "dropped": dropped,
                         "written_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}).encode() + b"\n"
    atomic_write_bytes(path, header + b"".join(lines[len(lines) - keep:]))
    os.chmod(path, 0o600)
    return keep, dropped


def _message(line: bytes, prefix: str) -> Message:
    d = json.loads(line)
    topic, qos, retain, payload = d["topic"], d["qos"], d["retain"], d["payload"]
    if not (isinstance(topic, str) and topic.startswith(prefix + "/") and not any(c in topic for c in "#+\0")):
        raise ValueError(f"topic {str(topic)[:80]!r} is not under this daemon's prefix {prefix!r}")
    if qos not in (0, 1, 2) or isinstance(qos, bool) or not isinstance(retain, bool) or not isinstance(payload, str):
        raise ValueError("qos, retain or payload has the wrong type")
    if len(payload) > MAX_PAYLOAD * 4 // 3 + 4:
        raise ValueError("payload too large")
    return topic, base64.b64decode(payload, validate=True), qos, retain


def load_spool(state_dir: Path, prefix: str, max_messages: int) -> tuple[list[Message], int]:
    """Messages spooled by the previous run (oldest first) and how many it had to drop.

    The file stays until the caller has delivered them (`remove_spool`)."""
    path = Path(state_dir) / SPOOL_FILE
    if not path.is_file():
        return [], 0
    msgs: list[Message] = []
    dropped = 0
    try:
        with open(path, "rb") as f:
            try:
                header = json.loads(f.readline(4096) or b"null")
            except RecursionError as e:
                raise ValueError("header nested too deeply") from e
            if not isinstance(header, dict) or header.get("spool") != FORMAT:
                raise ValueError(f"not a spool of format {FORMAT}")
            d = header.get("dropped", 0)
            dropped = d if isinstance(d, int) and not isinstance(d, bool) and d > 0 else 0
            n = 1
            while line := f.readline(MAX_LINE):
                n += 1
                if not line.endswith(b"\n") and len(line) == MAX_LINE:
                    raise ValueError(f"line {n}: longer than {MAX_LINE} bytes")
                if len(msgs) >= max_messages:
                    dropped += 1 + sum(c.count(b"\n") for c in iter(lambda: f.read(1 << 20), b""))
                    log.warning("spool %s holds more than mqtt.buffer=%d messages; dropped the rest", path,
                                max_messages)
                    break
                try:
                    msgs.append(_message(line, prefix))
                except (ValueError, KeyError, TypeError, binascii.Error, RecursionError) as e:
                    raise ValueError(f"line {n}: {e}") from e
    except (OSError, ValueError) as e:
        corrupt = path.with_name("spool.corrupt")
        log.warning("spool %s is unreadable (%s): replaying the %d messages before that; the file is kept as %s",
                    path, e, len(msgs), corrupt)
        try:
            os.replace(path, corrupt)
        except OSError:
            pass
    return msgs, dropped


def remove_spool(state_dir: Path) -> None:
    (Path(state_dir) / SPOOL_FILE).unlink(missing_ok=True)
