"""The topics module mirrors the README's MQTT contract; the link owns the will (real Mosquitto)."""

from __future__ import annotations

import re
import time

from edge.config import MqttConfig
from edge.mqtt_link import MqttLink
from edge.topics import Topics

from .mqtt_helpers import ROOT, Collector, new_prefix


def test_the_readme_contract_table_is_what_topics_builds():
    readme = (ROOT / "README.md").read_text()
    table = readme.split("### MQTT contract", 1)[1].split("\n\n", 2)[1]
    documented = set(re.findall(r"^\| `(<prefix>/[^`]+)`", table, re.M))
    t = Topics("<prefix>")
    built = {t.available, t.stats, t.result("<camera>"), t.state("<camera>"), t.heatmap("<camera>"),
             t.trigger("<camera>")}
    assert documented == built
    # the recalibration topics are documented in their own section
    for topic in (t.command("<camera>"), t.command_status("<camera>")):
        assert f"`{topic}`" in readme, topic


def _link(prefix: str, session: str | None = None) -> MqttLink:
    link = MqttLink(MqttConfig(prefix=prefix, client_id=f"{prefix}-{session or 'daemon'}"), session=session)
    link.start()
    assert link.connected.wait(10), "no broker on 127.0.0.1:1883"
    return link


def test_the_daemon_link_leaves_offline_and_a_cli_session_leaves_nothing_retained():
    prefix = new_prefix()
    _link(prefix).stop()
    _link(prefix, session="cli-1").stop()
    sub = Collector(prefix)  # subscribes after both left: sees only what is retained
    try:
        time.sleep(0.5)
        retained = {t: p for t, p, r in sub.msgs if r}
    finally:
        sub.close()
    assert retained == {Topics(prefix).available: b"offline"}
