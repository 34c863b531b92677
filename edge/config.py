"""Daemon configuration (YAML, validated with pydantic; unknown keys are rejected).

Secrets are read when the config is loaded, never at import: the MQTT password comes from
a file (systemd LoadCredential= puts it in $CREDENTIALS_DIRECTORY) or an environment variable.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError
from .image_size import MIN_SIDE
from .names import check_name
from .nobool import NoBoolNumbers
from .web.config import WebConfig


def credential_path(path: Path) -> Path:
    """A relative secret path is looked up in $CREDENTIALS_DIRECTORY (systemd LoadCredential=)."""
    if not path.is_absolute() and os.environ.get("CREDENTIALS_DIRECTORY"):
        return Path(os.environ["CREDENTIALS_DIRECTORY"]) / path
    return path


class Strict(NoBoolNumbers):
    # inf/nan pass every `gt=0` bound (an infinite max_age_s never expires a command id): refused;
    # a bool for a number (`port: yes`, `source: true` as camera 1) is refused too (edge/nobool.py)
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


# Topic levels of safe characters, no empty level: a NUL or a control character makes the broker drop
# the connection on every publish, and a prefix that is longer than 128 characters would leave
# commands unable to name it (commands.Command.station) and topics too long for some brokers.
PREFIX_MAX = 128
PREFIX_PATTERN = re.compile(r"[A-Za-z0-9_.:-]+(/[A-Za-z0-9_.:-]+)*")


# A client id goes into the CONNECT packet as is: a NUL or control character makes the broker
# drop every connection (a reconnect loop). Any other UTF-8 is valid MQTT; brokers accept ids
# well past MQTT 3.1.1's guaranteed 23 characters, so the length is only a sanity bound.
CLIENT_ID_MAX = 128  # bytes of UTF-8
# A host name or an IPv4/IPv6 literal as getaddrinfo takes it (no brackets: "[::1]" does not
# resolve): no spaces, NUL (the resolver truncates at it) or '/'.
HOST_PATTERN = r"[A-Za-z0-9.:_%-]+"


def check_client_id(v: str) -> str:
    if not v or len(v.encode()) > CLIENT_ID_MAX or any(ord(c) < 32 or ord(c) == 127 for c in v):
        raise ValueError(f"must be 1-{CLIENT_ID_MAX} bytes of UTF-8 without control characters (one makes the "
                         f"broker drop the connection), got {v!r}")
    return v


# One frame a day is the slowest rate that makes sense; below it the capture's time
# arithmetic (a sleep of 1/fps seconds) overflows (edge/capture.py MAX_PACE_S is its inverse).
MIN_FPS = 1.0 / 86400


class TlsConfig(Strict):
    ca: Path = Field(description="CA certificate file (PEM)")
    cert: Path | None = Field(None, description="client certificate (PEM), for mutual TLS")
    key: Path | None = Field(None, description="client key (PEM), for mutual TLS")


class MqttConfig(Strict):
    host: str = Field("127.0.0.1", description="broker host name or address")
    port: int = Field(1883, ge=1, le=65535, description="broker port")
    client_id: str = Field("patchcore-edge", description="MQTT client id")
    prefix: str = Field("patchcore", min_length=1, max_length=PREFIX_MAX, description="topic prefix: levels of "
                        "letters, digits, '_', '.', ':', '-' separated by '/'")
    username: str | None = Field(None, description="broker user name")
    password_file: Path | None = Field(None, description="file holding the password (first line)")
    password_env: str | None = Field(None, description="environment variable holding the password")
    tls: TlsConfig | None = Field(None, description="TLS settings; plain TCP when absent")
    qos: Literal[0, 1, 2] = Field(1, description="QoS of results and state")
    keepalive: int = Field(30, ge=5, le=3600, description="keepalive seconds")
    buffer: int = Field(1000, ge=0, le=1_000_000, description="results kept while the broker is away")
    spool_max_mb: float = Field(16.0, ge=0, le=4096, description="results still undelivered at shutdown are "
                                "spooled to state_dir up to this size (and mqtt.buffer messages); 0: none")

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        if not re.fullmatch(HOST_PATTERN, v) or len(v) > 253:
            raise ValueError(f"must be a host name or an IP address (letters, digits, '.', ':', '-', '%'; no "
                             f"brackets, spaces or control characters), got {v!r}")
        return v

    @field_validator("client_id")
    @classmethod
    def _client_id(cls, v: str) -> str:
        return check_client_id(v)

    @field_validator("prefix")
    @classmethod
    def _no_wildcards(cls, v: str) -> str:
        if any(c in v for c in "#+") or v.endswith("/"):
            raise ValueError("must not contain '#', '+' or end with '/'")
        if v.startswith("$"):  # brokers reserve $-topics ($SYS): nothing published there arrives
            raise ValueError("must not start with '$' (reserved by the broker, e.g. $SYS)")
        if not PREFIX_PATTERN.fullmatch(v):
            raise ValueError("must be topic levels of letters, digits, '_', '.', ':' or '-' separated by single "
                             f"'/' (no spaces, control characters or empty levels), got {v!r}")
        return v

    def password(self) -> str | None:
        """The password from its file or environment variable (read now, not at import)."""
        if self.password_file:
            path = credential_path(self.password_file)
            try:
                return path.read_text().splitlines()[0].strip()
            except (OSError, IndexError) as e:
                raise ConfigError(f"mqtt.password_file {path} cannot be read or is empty") from e
        if self.password_env:
            if self.password_env not in os.environ:
                raise ConfigError(f"mqtt.password_env: environment variable {self.password_env} is not set")
            return os.environ[self.password_env]
        return None


class HeatmapConfig(Strict):
    mode: Literal["every", "fail", "interval", "off"] = Field("every", description="when to publish heatmaps")
    interval_s: float = Field(5.0, gt=0, description="seconds between heatmaps in 'interval' mode")
    jpeg_quality: int = Field(80, ge=10, le=100, description="JPEG quality")
    max_side: int = Field(320, ge=32, le=4096, description="longest side of the heatmap image, px")

    @field_validator("mode", mode="before")
    @classmethod
    def _yaml_off(cls, v):
        return "off" if v is False else v  # YAML 1.1 reads a bare `off` as false


class CameraConfig(Strict):
    name: str = Field(description="camera name, used in topics and folder names (edge/names.py)")
    source: str | int = Field(description="device index, RTSP/HTTP URL, video file or image folder")
    model: Path = Field(description="model directory written by 'patchcore-edge calibrate'")
    roi: tuple[int, int, int, int] | None = Field(None, description="crop x, y, width, height before inference")
    fps: float = Field(10.0, gt=0, le=1000, description="target inspection rate (frames/s)")
    trigger: Literal["continuous", "mqtt"] = Field("continuous", description="inspect every frame or on trigger")
    loop: bool = Field(False, description="replay a video file / image folder forever")
    backend: Literal["auto", "onnxruntime", "tensorrt", "torch"] = Field("auto", description="feature backend")
    stall_timeout_s: float = Field(5.0, gt=0, le=3600, description="reopen the source when no frame came for this long")
    heatmap: HeatmapConfig = Field(default_factory=HeatmapConfig)

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        try:
            return check_name(v, "camera name")
        except ConfigError as e:
            raise ValueError(str(e)) from None

    @field_validator("fps")
    @classmethod
    def _fps(cls, v: float) -> float:
        if v < MIN_FPS:
            raise ValueError(f"must be at least one frame a day ({MIN_FPS:.3g}), got {v!r}")
        return v

    @field_validator("roi")
    @classmethod
    def _roi_positive(cls, v):
        if v is not None and (v[0] < 0 or v[1] < 0 or v[2] <= 0 or v[3] <= 0):
            raise ValueError("x, y must be >= 0 and width, height > 0")
        if v is not None and min(v[2], v[3]) < MIN_SIDE:  # a 1x1 crop is upscaled blur that passes everything
            raise ValueError(f"width and height must be at least {MIN_SIDE} px (the smallest image that gives "
                             f"a meaningful verdict), got {v[2]}x{v[3]}")
        return v


class RecalibrationConfig(Strict):
    secret_file: Path | None = Field(None, description="shared HMAC secret; without it commands are refused")
    max_age_s: float = Field(120.0, gt=0, le=86400, description="reject commands whose ts is older/newer than this")
    max_frames: int = Field(2000, ge=3, description="largest N a command may ask for")
    max_collect_s: float = Field(1800.0, gt=0, le=86400, description="largest frames x interval_s a command may ask for "
                                 "(a camera held for hours by one command is refused)")
    keep_versions: int = Field(5, ge=2, le=100, description="model versions kept (rollback depth)")
    validation_fraction: float = Field(0.1, gt=0, lt=0.5, description="collected frames kept out for validation")
    max_false_reject: float = Field(0.05, ge=0, lt=0.5, description="share of held-out good frames the new "
                                    "model may reject and still be activated")
    inspection_share: float = Field(0.5, gt=0, le=1, description="while recalibrating, inspection runs at least "
                                    "this share of its normal rate and leaves the rest of the CPU to the build")
    nice: int = Field(5, ge=0, le=19, description="CPU niceness of the calibration child process")
    threads: int = Field(2, ge=1, le=64, description="CPU threads the calibration child may use")
    build_timeout_s: float = Field(900.0, gt=0, le=86400, description="stop a calibration that runs longer than this "
                                   "(a hung build would otherwise block recalibration until a restart)")
    work_dir: Path | None = Field(None, description="where collected frames go (default: <model>/incoming)")

    def secret(self) -> bytes | None:
        """The shared secret (read now, not at import)."""
        if self.secret_file is None:
            return None
        path = credential_path(self.secret_file)
        try:
            data = path.read_bytes().strip()
        except OSError as e:
            raise ConfigError(f"recalibration.secret_file {path} cannot be read") from e
        if len(data) < 16:
            raise ConfigError(f"recalibration.secret_file {path} holds fewer than 16 bytes; use a long random secret")
        return data


SPARKPLUG_ID = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"  # a Sparkplug topic level: no '/', '+', '#'


class SparkplugConfig(Strict):
    """Sparkplug B output (edge/sparkplug.py): the station is an edge node, each camera a device."""
    group_id: str = Field(description="Sparkplug group id", pattern=SPARKPLUG_ID)
    edge_node_id: str = Field(description="Sparkplug edge node id of this station", pattern=SPARKPLUG_ID)
    primary_host_id: str | None = Field(None, pattern=SPARKPLUG_ID, description="wait for this host "
                                        "application's STATE online before birthing; re-birth when it returns")
    client_id: str | None = Field(None, description="MQTT client id of the Sparkplug session "
                                  "(default: <mqtt.client_id>-spb); it needs its own session for the NDEATH will")

    @field_validator("client_id")
    @classmethod
    def _client_id(cls, v: str | None) -> str | None:
        return None if v is None else check_client_id(v)


class PrometheusConfig(Strict):
    """Prometheus /metrics endpoint (edge/metrics.py)."""
    port: int = Field(9464, ge=1, le=65535, description="HTTP port of /metrics")
    host: str = Field("127.0.0.1", description="address to bind; 0.0.0.0 exposes it to the network")


class DaemonConfig(Strict):
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    cameras: list[CameraConfig] = Field(min_length=1, description="cameras to inspect")
    stats_interval_s: float = Field(5.0, gt=0, description="seconds between stats messages")
    exit_when_done: bool = Field(False, description="stop when every finite source (file/folder) has ended")
    print_results: bool = Field(False, description="also print each verdict as a JSON line on stdout")
    state_dir: Path | None = Field(None, description="run counter and spooled results (edge/statedir.py); default "
                                   "$STATE_DIRECTORY (systemd), else patchcore-state/ beside the config file")
    recalibration: RecalibrationConfig = Field(default_factory=RecalibrationConfig)
    sparkplug: SparkplugConfig | None = Field(None, description="Sparkplug B output; off when absent")
    prometheus: PrometheusConfig | None = Field(None, description="Prometheus metrics endpoint; off when absent")
    web: WebConfig = Field(default_factory=WebConfig, description="station web page (edge/web/); off by default")
    gpu_batch_ms: float = Field(2.0, ge=0, le=50, description="cameras inspected on a CUDA device that share a "
                                "model version: wait at most this long to batch their frames (0: off; a lone "
                                "camera never waits)")

    def warnings(self) -> list[str]:
        """Risky but valid settings, logged at start."""
        m = self.mqtt
        if m.username and (m.password_file or m.password_env) and m.tls is None:
            return [f"mqtt: user {m.username!r} sends its password in clear text to {m.host}:{m.port} "
                    "(no mqtt.tls); use TLS unless the broker is on this machine"]
        return []

    @model_validator(mode="after")
    def _unique_names(self):
        names = [c.name for c in self.cameras]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"camera names must be unique, repeated: {sorted(dup)}")
        return self


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping: PyYAML keeps the last silently,
    so `threshold: 0.5` further down a long file would quietly override the one a reader sees."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, (str, int, float, bool)):
                continue  # unhashable or odd keys: the model refuses them with its own message
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {str(key)[:64]!r} is given twice in one mapping", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml_model(path: str | Path, model: type[BaseModel]):
    """Read a YAML file into a pydantic model; ConfigError names the file and the key path."""
    path = Path(path)
    try:
        data = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader
    except FileNotFoundError as e:
        raise ConfigError(f"config file {path} does not exist") from e
    except (OSError, UnicodeDecodeError) as e:  # a folder, no permission, not text
        why = e.strerror if isinstance(e, OSError) and e.strerror else type(e).__name__
        raise ConfigError(f"config file {path} cannot be read ({why}); point --config at a UTF-8 YAML file") from e
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"config file {path} is not valid YAML: {str(e).splitlines()[0]}{where}") from e
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path}: the file must be a mapping of settings (key: value lines), "
                          f"not a {type(data).__name__}")
    try:
        return model.model_validate(data or {})
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        raise ConfigError(f"{path}: {where}: {plain_message(err)}") from e


def plain_message(err: dict) -> str:
    """pydantic's message without Python type names an operator cannot act on."""
    if err.get("type") == "path_type":  # "Input is not a valid path for <class 'pathlib.Path'>"
        return "a path is needed here (the value is empty or not text)"
    return err["msg"]


def load_config(path: str | Path, base_dir: Path | None = None) -> DaemonConfig:
    """Read and validate the daemon YAML; relative paths are relative to the file."""
    path = Path(path)
    cfg = load_yaml_model(path, DaemonConfig)
    base = base_dir or path.parent
    if cfg.state_dir is None:
        from .statedir import default_state_dir
        cfg.state_dir = default_state_dir(base.resolve())
    elif not cfg.state_dir.is_absolute():
        cfg.state_dir = (base / cfg.state_dir).resolve()
    rc = cfg.recalibration
    if rc.work_dir is not None and not rc.work_dir.is_absolute():  # the daemon's cwd is / under systemd
        rc.work_dir = (base / rc.work_dir).resolve()
    if rc.secret_file and not rc.secret_file.is_absolute() and not os.environ.get("CREDENTIALS_DIRECTORY"):
        rc.secret_file = (base / rc.secret_file).resolve()
    if cfg.web.token_file and not cfg.web.token_file.is_absolute() and not os.environ.get("CREDENTIALS_DIRECTORY"):
        cfg.web.token_file = (base / cfg.web.token_file).resolve()
    if cfg.mqtt.tls:  # a missing file would otherwise surface as an ssl traceback at connect time
        for key in ("ca", "cert", "key"):
            p = getattr(cfg.mqtt.tls, key)
            if p is None:
                continue
            p = p if p.is_absolute() else (base / p).resolve()
            setattr(cfg.mqtt.tls, key, p)
            if not p.is_file() or not os.access(p, os.R_OK):
                raise ConfigError(f"{path}: mqtt.tls.{key}: file {p} does not exist or is not readable")
    for cam in cfg.cameras:  # relative paths are relative to the config file
        if not cam.model.is_absolute():
            cam.model = (base / cam.model).resolve()
        if cfg.state_dir.resolve().is_relative_to(cam.model.resolve()):  # a rollback or prune would take it
            raise ConfigError(f"{path}: state_dir {cfg.state_dir} is inside the model directory {cam.model} of "
                              f"camera {cam.name}; put it elsewhere (e.g. /var/lib/patchcore-edge)")
        if isinstance(cam.source, str) and not ("://" in cam.source or cam.source.isdigit()):
            src = Path(cam.source)
            cam.source = str(src if src.is_absolute() else (base / src).resolve())
    return cfg
