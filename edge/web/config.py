"""The `web:` section of the daemon config (pydantic, unknown keys rejected)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import ConfigDict, Field, model_validator

from ..errors import ConfigError
from ..nobool import NoBoolNumbers


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name other than localhost: assume it is reachable from elsewhere
        return False


class WebConfig(NoBoolNumbers):  # `port: yes` is not port 1
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # live_fps: .inf must not pass gt=0

    enabled: bool = Field(False, description="serve the station page from the daemon")
    host: str = Field("127.0.0.1", min_length=1, description="address to bind; anything but loopback needs "
                      "token_file")
    port: int = Field(8080, ge=1, le=65535, description="TCP port of the page")
    token_file: Path | None = Field(None, description="file holding the access token (first line); without it "
                                    "the page is open to anyone who can reach host:port")
    live_fps: float = Field(4.0, gt=0, le=30, description="most live frames/s sent to one viewer")
    live_max_side: int = Field(640, ge=64, le=4096, description="longest side of the live image, px")
    jpeg_quality: int = Field(75, ge=10, le=100, description="JPEG quality of page images")
    failures: int = Field(12, ge=1, le=200, description="recent failures kept per camera (each holds its frame "
                          "in memory until shown)")
    history: int = Field(3000, ge=10, le=100_000, description="score points kept per camera for the chart")
    max_streams: int = Field(4, ge=1, le=64, description="MJPEG streams served at once (each holds a thread)")
    threads: int = Field(12, ge=4, le=128, description="HTTP worker threads")
    header_timeout_s: float = Field(3.0, gt=0, le=60, description="a client must send its request line and "
                                    "headers within this time or is disconnected (half-open connections would "
                                    "otherwise hold the worker threads)")

    @model_validator(mode="after")
    def _token_beyond_localhost(self):
        if self.enabled and not is_loopback(self.host) and self.token_file is None:
            raise ValueError(f"host {self.host} is reachable from other machines: set token_file (an access "
                             "token) or bind 127.0.0.1")
        return self

    def token(self) -> str | None:
        """The access token (read now, not at import)."""
        if self.token_file is None:
            return None
        from ..config import credential_path  # the config module imports this one

        path = credential_path(self.token_file)
        try:
            token = path.read_text().splitlines()[0].strip()
        except (OSError, IndexError, UnicodeDecodeError) as e:
            raise ConfigError(f"web.token_file {path} cannot be read or is empty") from e
        if len(token) < 16:
            raise ConfigError(f"web.token_file {path} holds fewer than 16 characters; use a long random token "
                              "(e.g. openssl rand -hex 24)")
        return token
