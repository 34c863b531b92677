"""Credentials out of what is shown: `rtsp://user:pass@host/...` becomes `rtsp://***@host/...`.

A camera URL often carries its login (`rtsp://admin:secret@10.0.0.5/stream1`); the source
string goes into log lines and into `camera_error`, which is published over MQTT (stats) and
served by the station page (/api/station), so the userinfo is replaced wherever a source (or a
message that may quote one) is put into text. The userinfo ends at the last `@` before the
first `/`, `?` or `#` of the authority, as FFmpeg reads it, so a password holding an `@` is
hidden whole.
"""

from __future__ import annotations

import re

_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^\s/?#]*@")


def redact(text: object) -> str:
    """`text` (a URL, a device index or a message quoting URLs) with each URL's userinfo as `***`."""
    return _USERINFO.sub(r"\g<scheme>***@", str(text))
