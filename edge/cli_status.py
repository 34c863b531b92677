"""`patchcore-edge status`: one screen per station from the retained MQTT topics.

Exit codes for monitoring scripts: 0 healthy; 1 unhealthy (daemon offline, no or stale
stats, a camera offline or in error, its model refused, inspection errors in the last
`--window` seconds, or frames taken for that long without a result: "blind"); 2 broker
unreachable. Each problem is printed with its reason.
"""

from __future__ import annotations

import argparse
import json
import math
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from .config import load_config
from .errors import ConfigError
from .mqtt_link import make_client
from .topics import Topics


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="health summary of a running station (from retained MQTT topics)")
    p.add_argument("--config", type=Path, required=True, help="the daemon's YAML")
    p.add_argument("--wait", type=float, default=2.0, help="seconds to collect retained messages")
    p.add_argument("--window", type=float, default=30.0,
                   help="unhealthy if a camera had inspection errors, or took frames without producing a result, "
                        "within/for this many seconds (default 30)")
    p.set_defaults(func=run)


def collect(cfg, wait: float) -> dict[str, bytes] | None:
    msgs: dict[str, bytes] = {}
    connected = threading.Event()
    c = make_client(cfg.mqtt, f"{cfg.mqtt.client_id}-status-{time.time_ns()}")

    def on_connect(client, userdata, flags, rc, props):
        if not rc.is_failure:
            client.subscribe(Topics(cfg.mqtt.prefix).everything)
            connected.set()

    c.on_connect = on_connect
    c.on_message = lambda client, userdata, m: msgs.__setitem__(m.topic, m.payload) if m.retain else None
    try:
        c.connect(cfg.mqtt.host, cfg.mqtt.port, keepalive=10)
    except OSError:
        return None
    c.loop_start()
    ok = connected.wait(5)
    time.sleep(wait if ok else 0)
    c.disconnect()
    c.loop_stop()
    return msgs if ok else None


def camera_problems(name: str, s: dict, status: str, window: float) -> list[str]:
    """Why one camera's stats entry is unhealthy (empty list: healthy)."""
    if s.get("model") == "error":
        return [f"camera {name}: model refused: {s.get('model_error', '?')}"]
    out = []
    if status not in ("online", "ended"):
        reason = s.get("camera_error")
        out.append(f"camera {name} {status}" + (f": {reason}" if reason else ""))
    age = s.get("last_error_s")
    if s.get("errors") and age is not None and age <= window:
        out.append(f"camera {name}: {s['errors']} inspection errors, the last {age:.0f} s ago: {s.get('last_error')}")
    if (s.get("no_result_s") or 0) > window:
        out.append(f"camera {name}: frames but no result for {s['no_result_s']:.0f} s (blind)")
    return out


def run(args: argparse.Namespace) -> int:
    for flag, value in (("--wait", args.wait), ("--window", args.window)):
        if not (math.isfinite(value) and value >= 0):
            raise ConfigError(f"{flag} must be a number of seconds >= 0, got {value:g}")
    cfg = load_config(args.config)
    msgs = collect(cfg, args.wait)
    if msgs is None:
        print(f"broker {cfg.mqtt.host}:{cfg.mqtt.port}: unreachable")
        return 2
    p, topics = cfg.mqtt.prefix, Topics(cfg.mqtt.prefix)
    problems = []
    available = msgs.get(topics.available, b"?").decode(errors="replace")
    stats = json.loads(msgs[topics.stats]) if topics.stats in msgs else None
    age = None
    if stats:
        age = (datetime.now(timezone.utc) - datetime.fromisoformat(stats["timestamp"])).total_seconds()
    print(f"station {p}: daemon {available}; stats {'none' if age is None else f'{age:.0f} s old'}")
    if available != "online":
        problems.append("daemon not online")
    if age is None or age > 3 * cfg.stats_interval_s + 5:
        problems.append("no recent stats")
    print(f"{'camera':12s} {'status':9s} {'fps':>6s} {'p50 ms':>7s} {'p99 ms':>7s} {'last':5s} {'score':>6s} "
          f"{'model':6s} recalibration")
    for cam in cfg.cameras:
        s = (stats or {}).get("cameras", {}).get(cam.name, {})
        state = json.loads(msgs.get(topics.state(cam.name), b"{}"))
        recal = json.loads(msgs.get(topics.command_status(cam.name), b"{}"))
        lat = s.get("latency_ms", {}).get("total", {})
        status = s.get("camera", "unknown") if s.get("model") != "error" else "no model"
        print(f"{cam.name:12s} {status:9s} {s.get('fps', 0):6.1f} {lat.get('p50', 0):7.1f} {lat.get('p99', 0):7.1f} "
              f"{state.get('verdict', '-'):5s} {state.get('normalised_score', 0):6.2f} "
              f"{state.get('model_version', s.get('model_version', '-')):6s} {recal.get('state', '-')}")
        problems += camera_problems(cam.name, s, status, args.window)
    if problems:
        print("UNHEALTHY: " + "; ".join(problems))
        return 1
    print("healthy")
    return 0
