"""`patchcore-edge recalibrate`: send a signed command (format v2, edge/commands.py) to a
running daemon and follow it: recalibrate, roll back, cancel, or change the threshold."""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import threading
import time
import uuid
from pathlib import Path

from .commands import MIN_FRAMES, encode
from .config import load_config
from .errors import ConfigError, PatchcoreError
from .mqtt_link import MqttLink
from .topics import Topics

TERMINAL = ("active", "failed", "cancelled")
# How long an unauthenticated refusal of our id waits for a signed answer before it counts: the
# daemon answers a command it took within milliseconds (a status naming its id).
UNAUTHENTICATED_GRACE_S = 10.0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("recalibrate", help="relearn 'good' on a running daemon (or roll back, cancel, "
                                           "change the threshold)",
                       description="Publishes a signed command on <prefix>/<camera>/recalibrate and prints the "
                                   "status updates until the new model is active or the attempt failed "
                                   "or was cancelled.")
    p.add_argument("--config", type=Path, required=True, help="the daemon's YAML (broker and secret)")
    p.add_argument("--camera", required=True)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--frames", type=int, help="collect N live frames from the camera")
    src.add_argument("--images", type=Path, help="use an image folder on the station instead")
    src.add_argument("--rollback", nargs="?", const="", metavar="VERSION",
                     help="roll back to VERSION (default: the one before the current)")
    src.add_argument("--cancel", action="store_true", help="stop the camera's running recalibration")
    src.add_argument("--threshold", type=float, metavar="VALUE",
                     help="a new version with this threshold and the same bank, active from the next frame")
    src.add_argument("--threshold-scale", type=float, metavar="FACTOR",
                     help="as --threshold, the current threshold times FACTOR (0.9 = 10%% stricter)")
    p.add_argument("--interval", type=float, default=0.0, help="seconds between collected frames")
    p.add_argument("--bad-images", type=Path, help="known-bad images the new model must reject")
    p.add_argument("--coreset-ratio", type=float)
    p.add_argument("--layers", help="feature stages by stride, e.g. 8,16 or 4,8,16 (default: the current model's)")
    p.add_argument("--timeout", type=float, default=600, help="seconds to wait for the outcome")
    p.set_defaults(func=run)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()  # only it may set signal handlers


def _wait(done: threading.Event, timeout: float, forged: dict, outcome: dict, lock: threading.Lock) -> bool:
    """Wait for our outcome; an unauthenticated refusal of our id becomes the outcome only when
    nothing signed about our command came within UNAUTHENTICATED_GRACE_S of it, or by the
    timeout (a wrong secret gets its "invalid hmac" said, not "the daemon may be down")."""
    end = time.monotonic() + timeout
    while not done.wait(min(0.2, max(0.0, end - time.monotonic()))):
        now = time.monotonic()
        with lock:  # against on_status taking a signed terminal status at the same moment
            if done.is_set():
                return True
            if "at" in forged and not outcome.get("heard") \
                    and (now - forged["at"] >= UNAUTHENTICATED_GRACE_S or now >= end):
                print(json.dumps(forged["msg"]), flush=True)
                outcome.update(forged["msg"])
                done.set()
                return True
        if now >= end:
            return False
    return True


def _check_numbers(args: argparse.Namespace) -> None:
    """Refuse values the daemon would refuse (or that make no sense) before anything is sent."""
    if not (math.isfinite(args.timeout) and args.timeout > 0):
        raise ConfigError(f"--timeout must be a number of seconds > 0, got {args.timeout:g}")
    if args.frames is not None and args.frames < MIN_FRAMES:
        raise ConfigError(f"--frames must be at least {MIN_FRAMES}, got {args.frames}")
    if not (math.isfinite(args.interval) and args.interval >= 0):
        raise ConfigError(f"--interval must be a number of seconds >= 0, got {args.interval:g}")


class _Stopped(Exception):
    """SIGTERM while we wait (SIGINT is KeyboardInterrupt)."""


def _on_sigterm(signum, frame) -> None:
    raise _Stopped()


def run(args: argparse.Namespace) -> int:
    _check_numbers(args)
    cfg = load_config(args.config)
    if args.camera not in {c.name for c in cfg.cameras}:
        raise ConfigError(f"camera {args.camera!r} is not in {args.config}")
    secret = cfg.recalibration.secret()
    if secret is None:
        raise ConfigError("the config has no recalibration.secret_file; the daemon would refuse the command")
    cmd_id = f"cli-{uuid.uuid4().hex[:8]}"
    if args.rollback is not None:
        fields = {"action": "rollback", "id": cmd_id, "version": args.rollback or None}
    elif args.cancel:
        fields = {"action": "cancel", "id": cmd_id}
    elif args.threshold is not None or args.threshold_scale is not None:
        fields = {"action": "threshold", "id": cmd_id, "value": args.threshold, "scale": args.threshold_scale}
    elif args.frames or args.images:
        fields = {"action": "recalibrate", "id": cmd_id, "frames": args.frames,
                  "images": str(args.images.resolve()) if args.images else None,
                  "interval_s": args.interval or None,
                  "bad_images": str(args.bad_images.resolve()) if args.bad_images else None,
                  "coreset_ratio": args.coreset_ratio, "layers": args.layers}
    else:
        raise ConfigError("say what to do: --frames N, --images DIR, --rollback [VERSION], --cancel, "
                          "--threshold VALUE or --threshold-scale FACTOR")
    topics = Topics(cfg.mqtt.prefix)
    done = threading.Event()
    outcome: dict = {}
    forged: dict = {}  # an unauthenticated refusal naming our id: anybody could have sent it
    lock = threading.Lock()

    def on_status(topic: str, payload: bytes) -> None:
        if not outcome.get("sent"):
            return  # the retained status from before our command
        try:
            msg = json.loads(payload)
        except ValueError:
            return
        if not isinstance(msg, dict):
            return
        with lock:
            _take(msg)

    def _take(msg: dict) -> None:
        if done.is_set():
            return  # decided (a terminal status, or the unauthenticated refusal after its grace)
        rejected = msg.get("rejected")
        # Only a refusal naming our id is ours. One without an id (anyone may publish garbage on
        # the command topic) or another sender's is dropped from what we print and keep, and we
        # go on waiting: our command may be running, and a retry would apply it twice.
        if isinstance(rejected, dict) and rejected.get("id") == cmd_id:
            if rejected.get("replay"):
                return  # a second delivery of ours (QoS 1) or a copy: the first one's outcome counts
            if rejected.get("authenticated") is not True:
                # a payload that failed the hmac but quotes our id: ours if signed with a wrong
                # secret, or a bystander's forgery; decided after UNAUTHENTICATED_GRACE_S
                forged.setdefault("msg", msg)
                forged.setdefault("at", time.monotonic())
                return
            print(json.dumps(msg), flush=True)
            outcome.update(msg)
            done.set()
            return
        msg.pop("rejected", None)
        if cmd_id in (msg.get("id"), msg.get("cancel_id")):
            outcome["heard"] = True  # the daemon took our signed command: a forged refusal is moot
            print(json.dumps(msg), flush=True)
            if msg.get("state") in TERMINAL or msg.get("cancel_id") == cmd_id:
                outcome.update(msg)
                done.set()

    mqtt_cfg = cfg.mqtt.model_copy(update={"client_id": f"{cfg.mqtt.client_id}-cli-{cmd_id}"})
    link = MqttLink(mqtt_cfg, {topics.command_status(args.camera): on_status}, session=cmd_id)
    # Interrupted (Ctrl-C, SIGTERM) the link still stops cleanly: it clears our retained
    # <prefix>/cli/<id>/available `online` (the will, `gone`, is not retained), else it stays forever.
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if _main_thread() else None
    try:
        link.start()
        if not link.connected.wait(10):
            raise PatchcoreError(f"cannot reach the MQTT broker {cfg.mqtt.host}:{cfg.mqtt.port}")
        time.sleep(0.3)  # the retained status arrives first; ours follow
        outcome["sent"] = True
        link.client.publish(topics.command(args.camera), encode(fields, secret, cfg.mqtt.prefix, args.camera), qos=1)
        ok = _wait(done, args.timeout, forged, outcome, lock)
    except (KeyboardInterrupt, _Stopped) as e:
        why = "SIGTERM" if isinstance(e, _Stopped) else "Ctrl-C (SIGINT)"
        sent = (f"the command {cmd_id} was sent and may still run on the daemon; check with patchcore-edge status"
                if outcome.get("sent") else "nothing was sent")
        raise PatchcoreError(f"interrupted by {why} while waiting: {sent}") from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        link.stop()
    if not ok:
        print(f"no outcome within {args.timeout:.0f} s; the daemon may be down", file=sys.stderr)
        return 1
    if "rejected" in outcome:
        return 1
    wanted = "cancelled" if args.cancel else "active"
    return 0 if outcome.get("state") == wanted else 1
