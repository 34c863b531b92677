"""Commands for a camera that did not start (its model was refused at start).

No worker, no recalibrator: every command is answered `rejected` on the camera's status
topic, saying why the camera is down and what to do, so a sender (and its CLI) is not left
waiting for an outcome that never comes. The payload is still authenticated, so the
answer says whether its id is the signed one (edge/commands.py), and answers are rate
limited like a running camera's (edge/command_inbox.py).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

from .command_inbox import CommandInbox, Refusals
from .commands import CommandError, claimed_id, parse, rejection
from .config import RecalibrationConfig
from .topics import Topics


class RefusedCamera:
    def __init__(self, name: str, reason: str, link, prefix: str, cfg: RecalibrationConfig,
                 secret: tuple[bytes | None, str | None]):
        self.name, self.reason, self.link, self.prefix, self.cfg = name, reason, link, prefix, cfg
        self.secret, self.disabled = secret
        self.topic = Topics(prefix).command_status(name)
        self.refusals = Refusals(name)
        self.inbox = CommandInbox(name, self.handle_command, self.refusals)

    def on_command(self, topic: str, payload: bytes) -> None:
        self.inbox.put(topic, payload)

    def handle_command(self, topic: str, payload: bytes) -> None:
        try:
            cmd = parse(payload, self.secret, self.prefix, self.name, self.cfg.max_age_s, self.cfg.max_frames,
                        self.cfg.max_collect_s, self.disabled)
        except CommandError as e:
            self._answer(str(e), claimed_id(payload), e.authenticated, e.replay)
            return
        self._answer(f"camera {self.name} is not running: its model was refused at start ({self.reason}); fix or "
                     "recalibrate its model directory with 'patchcore-edge calibrate' and restart the daemon",
                     {"id": cmd.id}, authenticated=True)

    def _answer(self, why: str, ids: dict, authenticated: bool, replay: bool = False) -> None:
        if self.refusals.refused(why):  # rate limited, as a running camera's refusals are
            self.link.publish(self.topic, json.dumps({
                "state": "error", "message": f"camera not started: {self.reason}",
                "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "rejected": rejection(why, ids, authenticated, replay)}), qos=1, retain=True, buffer=True)

    def stop(self) -> None:
        self.inbox.stop()
