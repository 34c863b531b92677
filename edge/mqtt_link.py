"""MQTT transport behind a small interface: publish, subscribe, stop.

- The link owns the station's topics (`topics`, edge/topics.py) and its will: the daemon's
  (`<prefix>/available` = `offline`, retained) is set before connecting and `online` is
  published on every (re)connect; a CLI session (`session=ID`) has its own available topic
  (will `gone`, not retained) that it clears at stop, so it never touches the daemon's. A
  refused connection is logged and never counted as connected.
- paho-mqtt reconnects on its own. While the broker is away, messages marked `buffer=True`
  (results, state) go into a bounded queue that is flushed in order on reconnect; what
  overflowed is counted, reported in the stats and logged (once per outage). A buffered
  QoS>0 message handed to paho is also kept until the broker acknowledges it (PUBACK): one
  sent into a connection that died before the loss was noticed is sent again after the
  reconnect (at least once).
- At stop, what is still buffered or unacknowledged is handed back (`pending()`) for the
  daemon to spool to disk (spool.py); `preload()` puts a spool in front of the buffer at the
  next start, and `replay_pending()` says when all of it has been acknowledged.
- Subscriptions are one dict from topic to handler, built once; a handler that raises
  (malformed payload) is logged and ignored, never a crash.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable

import paho.mqtt.client as mqtt

from .config import MqttConfig
from .topics import Topics

log = logging.getLogger(__name__)

Handler = Callable[[str, bytes], None]


def make_client(cfg: MqttConfig, client_id: str) -> mqtt.Client:
    """A paho client with the config's credentials and TLS (CA, optional client cert/key)."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
    if cfg.username:
        client.username_pw_set(cfg.username, cfg.password())
    if cfg.tls:
        client.tls_set(ca_certs=str(cfg.tls.ca), certfile=str(cfg.tls.cert) if cfg.tls.cert else None,
                       keyfile=str(cfg.tls.key) if cfg.tls.key else None, cert_reqs=ssl.CERT_REQUIRED)
    return client


class MqttLink:
    def __init__(self, cfg: MqttConfig, handlers: dict[str, Handler] | None = None, session: str | None = None):
        self.cfg = cfg
        self.topics = Topics(cfg.prefix)
        self.session = session
        self.available_topic = self.topics.cli_available(session) if session else self.topics.available
        self.handlers: dict[str, Handler] = dict(handlers or {})
        self.connected = threading.Event()
        self.lock = threading.Lock()
        self.buffer: deque[tuple[str, bytes, int, bool]] = deque()
        self.unacked: dict[int, tuple[str, bytes, int, bool]] = {}  # mid -> message, until PUBACK
        self._early_acks: set[int] = set()  # PUBACKs that beat the bookkeeping in _send
        self.buffer_dropped = 0
        self._dropped_logged = 0  # buffer_dropped when the last overflow line was logged
        self._replayed: list[tuple[str, bytes, int, bool]] = []  # spooled by the last run, kept alive for id()
        self._replayed_ids: set[int] = set()
        self.published = 0
        self.connects = 0
        self.stopping = False
        client = make_client(cfg, cfg.client_id)
        if session:
            client.will_set(self.available_topic, "gone", qos=0, retain=False)
        else:
            client.will_set(self.available_topic, "offline", qos=1, retain=True)
        client.reconnect_delay_set(min_delay=1, max_delay=10)
        client.max_inflight_messages_set(100)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        self.client = client

    def start(self) -> None:
        """Connect in the background; keeps retrying until stop()."""
        self.client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive)
        self.client.loop_start()

    def preload(self, msgs: list[tuple[str, bytes, int, bool]]) -> None:
        """Messages a previous run spooled: sent first, in order, before anything published now."""
        with self.lock:
            self._replayed = list(msgs)
            self._replayed_ids = {id(m) for m in self._replayed}
            self.buffer.extendleft(reversed(self._replayed))

    def replay_pending(self) -> bool:
        """True while a preloaded message is still waiting or unacknowledged."""
        if not self._replayed_ids:
            return False
        with self.lock:
            left = any(id(m) in self._replayed_ids for m in (*self.buffer, *self.unacked.values()))
            if not left:
                self._replayed, self._replayed_ids = [], set()
            return left

    def pending(self) -> list[tuple[str, bytes, int, bool]]:
        """What the broker has not acknowledged (oldest first); call after stop()."""
        with self.lock:
            return list(self.unacked.values()) + list(self.buffer)

    def stop(self, timeout: float = 3.0) -> None:
        """Give in-flight messages up to `timeout` to be acknowledged, publish `offline`
        (retained), then disconnect cleanly."""
        self.stopping = True
        end = time.monotonic() + timeout
        while self.connected.is_set() and (self.buffer or self.unacked) and time.monotonic() < end:
            time.sleep(0.02)
        if self.connected.is_set():
            # a CLI session clears its retained `online`; the daemon says `offline`
            info = self.client.publish(self.available_topic, b"" if self.session else "offline", qos=1, retain=True)
            try:
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError):
                pass
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("MQTT broker %s:%s refused the connection: %s", self.cfg.host, self.cfg.port, reason_code)
            return
        self.connects += 1
        log.info("MQTT connected to %s:%s", self.cfg.host, self.cfg.port)
        if self.buffer_dropped > self._dropped_logged:
            log.warning("MQTT: %d results were dropped while the broker was away (buffer of %d full; "
                        "mqtt.buffer raises it)", self.buffer_dropped - self._dropped_logged, self.cfg.buffer)
            self._dropped_logged = self.buffer_dropped
        client.publish(self.available_topic, "online", qos=1, retain=True)
        for topic in self.handlers:
            client.subscribe(topic, qos=1)
        with self.lock:
            # first what was sent but never acknowledged, then what waited, all in order
            # (insertion order is send order; sorting mids would not be after they wrap at 65535)
            resend = list(self.unacked.values()) + list(self.buffer)
            self.unacked.clear()
            self.buffer.clear()
            for msg in resend:
                self._send(msg)
            self.connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected.clear()
        if not self.stopping:
            log.warning("MQTT disconnected (%s); reconnecting", reason_code)

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        # No self.lock here: paho calls this with its own mutex held (and, for QoS 0, from
        # inside publish() while we hold self.lock), so locking would deadlock. dict/set
        # operations are atomic in CPython.
        if self.unacked.pop(mid, None) is None:
            if len(self._early_acks) > 10000:  # QoS 0 acks land here too; keep it bounded
                self._early_acks.clear()
            self._early_acks.add(mid)

    def _send(self, msg: tuple[str, bytes, int, bool]) -> bool:
        """Hand to paho (caller holds the lock); QoS>0 messages are tracked until acknowledged."""
        topic, data, qos, retain = msg
        info = self.client.publish(topic, data, qos=qos, retain=retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            return False
        if qos > 0:
            if info.mid in self._early_acks:
                self._early_acks.discard(info.mid)
            else:
                if len(self.unacked) >= max(self.cfg.buffer, 1):
                    self.unacked.pop(next(iter(self.unacked)))  # the oldest
                    self.buffer_dropped += 1
                self.unacked[info.mid] = msg
        self.published += 1
        return True

    def _on_message(self, client, userdata, msg) -> None:
        handler = self.handlers.get(msg.topic)
        if handler is None:
            return
        try:
            handler(msg.topic, msg.payload)
        except Exception as e:  # a bad message must never take the daemon down
            log.warning("ignored message on %s: %s", msg.topic, e)

    def publish(self, topic: str, payload: bytes | str, qos: int = 0, retain: bool = False,
                buffer: bool = False) -> None:
        """Publish now; while disconnected, keep it (bounded) when buffer=True, else drop it."""
        data = payload.encode() if isinstance(payload, str) else payload
        with self.lock:
            if self.connected.is_set() and not self.buffer:
                if buffer:
                    if self._send((topic, data, qos, retain)):
                        return
                else:
                    self.client.publish(topic, data, qos=qos, retain=retain)
                    return
            if not buffer:
                return
            if len(self.buffer) >= self.cfg.buffer:
                if self.buffer:
                    self.buffer.popleft()
                self.buffer_dropped += 1
                if self.buffer_dropped == self._dropped_logged + 1:  # the first loss of this outage
                    log.warning("MQTT buffer full (mqtt.buffer=%d) while the broker is away: dropping the oldest "
                                "results (counted in stats broker.buffer_dropped)", self.cfg.buffer)
                if not self.cfg.buffer:
                    return
            self.buffer.append((topic, data, qos, retain))
