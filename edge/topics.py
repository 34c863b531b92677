"""The MQTT topics of the JSON contract, built in one place.

Mirrors the README's "MQTT contract" table and the recalibration topics; the station's
`prefix` comes from the config (checked there: no `$`, no wildcards). Sparkplug B has its own
namespace (`spBv1.0/...`, edge/sparkplug.py).

| topic                                   | what                                      |
|-----------------------------------------|-------------------------------------------|
| <prefix>/available                      | online / offline (the daemon's last will) |
| <prefix>/stats                          | JSON health, retained                     |
| <prefix>/<camera>/result                | JSON verdict                              |
| <prefix>/<camera>/state                 | the last verdict, retained                |
| <prefix>/<camera>/heatmap               | JPEG, retained                            |
| <prefix>/<camera>/trigger               | subscribed: inspect the next frame        |
| <prefix>/<camera>/recalibrate           | subscribed: signed station commands       |
| <prefix>/<camera>/recalibrate/status    | recalibration state, retained             |
| <prefix>/cli/<id>/available             | a `recalibrate` CLI session's own will    |
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Topics:
    prefix: str

    @property
    def available(self) -> str:
        return f"{self.prefix}/available"

    @property
    def stats(self) -> str:
        return f"{self.prefix}/stats"

    @property
    def everything(self) -> str:
        return f"{self.prefix}/#"

    def camera(self, camera: str) -> str:
        """The camera's base; its topics are this plus /result, /state, ..."""
        return f"{self.prefix}/{camera}"

    def result(self, camera: str) -> str:
        return f"{self.camera(camera)}/result"

    def state(self, camera: str) -> str:
        return f"{self.camera(camera)}/state"

    def heatmap(self, camera: str) -> str:
        return f"{self.camera(camera)}/heatmap"

    def trigger(self, camera: str) -> str:
        return f"{self.camera(camera)}/trigger"

    def command(self, camera: str) -> str:
        return f"{self.camera(camera)}/recalibrate"

    def command_status(self, camera: str) -> str:
        return f"{self.command(camera)}/status"

    def cli_available(self, session: str) -> str:
        return f"{self.prefix}/cli/{session}/available"
