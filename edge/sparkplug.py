"""Sparkplug B output: the station is a Sparkplug edge node, each camera one of its devices.

Runs beside the JSON contract (which is unchanged) on its own MQTT session, because a
session has exactly one last will and Sparkplug needs it for the NDEATH certificate.

Payloads come from pysparkplug (typed Metric and NBirth/DBirth/DData/NCmd/DCmd classes over
the Eclipse Tahu protobuf schema). Its EdgeNode/Client classes are not used: they need
paho-mqtt < 2, set the NDEATH will at QoS 0 (the spec wants 1), keep seq/bdSeq counters at
class level (shared by every node in a process), know no primary host and drop data while
the broker is away. The session logic below is small and follows Sparkplug 3.0:

- bdSeq: the NDEATH will carries it and the NBIRTH repeats it; it goes up by one for each
  new connection (will re-set in on_disconnect, before paho reconnects). A rebirth on the
  same connection keeps it, because the will the broker holds has not changed. It is kept
  in the state dir, so a restarted daemon continues from the last value: a host must not
  mistake the late will of the killed process for the death of the new session.
- seq: NBIRTH has 0; every later DBIRTH/DDATA/DDEATH of the node takes the next value, 255
  wraps to 0.
- NBIRTH, then a DBIRTH per live camera, before any DDATA. Results produced while the broker
  (or the primary host) is away are kept (bounded by mqtt.buffer) and sent after the births,
  in order, flagged is_historical so a host files them as history, not as the live value.
- DDEATH when a camera's capture goes offline or ends, DBIRTH when it is back (a watcher
  thread polls the capture status: a few lines here instead of hooks in capture.py); status,
  model and recalibration changes go out as DDATA from it too. Dropped frames ride with the
  results (frames are only dropped while results flow), so a busy camera does not add a
  DDATA per poll.
- Commands: NCMD `Node Control/Rebirth` = true -> fresh births; DCMD `Device Control/Trigger`
  = true on a `trigger: mqtt` camera -> one frame. Anything else (not protobuf, unknown
  metric, wrong type, unknown device) is logged and ignored.
- Primary host (optional): births wait for `spBv1.0/STATE/<host>` {"online": true}; when it
  reports offline the node publishes NDEATH and keeps results until the host is back, then
  births again. Older STATE messages (by timestamp) are ignored, as the spec asks.

Data messages use QoS 0 and no retain, as the spec requires (births, DDATA, DDEATH); the
NDEATH will and the NDEATH sent on a clean stop use QoS 1.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from pathlib import Path

import paho.mqtt.client as mqtt

try:
    from pysparkplug import DataType, DBirth, DCmd, DData, DDeath, Metric, NBirth, NCmd, NDeath
except ImportError as e:  # pragma: no cover - depends on the install
    from .errors import ConfigError

    raise ConfigError("sparkplug: the pysparkplug package is missing; install it with "
                      "'pip install --no-deps pysparkplug==0.6.1' (see README, Sparkplug B)") from e

from .config import MqttConfig, SparkplugConfig
from .files import atomic_write_bytes
from .mqtt_link import make_client

# how far ahead of the station's clock a host's STATE timestamp may be (clock skew, not years)
STATE_MAX_AHEAD_MS = 86_400_000

log = logging.getLogger(__name__)

NAMESPACE = "spBv1.0"
DEAD = ("offline", "ended", "stopped")  # capture states in which a camera is not a live device
BDSEQ_FILE = "sparkplug_bdseq"
REBIRTH = "Node Control/Rebirth"
TRIGGER = "Device Control/Trigger"

# Every device metric and its Sparkplug type: the one place the DBIRTH declaration comes from.
DEVICE_METRICS: dict[str, DataType] = {
    "Inspection/Fail": DataType.BOOLEAN,
    "Inspection/Score": DataType.DOUBLE,
    "Inspection/Normalised Score": DataType.DOUBLE,
    "Inspection/Threshold": DataType.DOUBLE,
    "Inspection/Frame Id": DataType.UINT64,
    "Inspection/Latency ms": DataType.DOUBLE,
    "Model/Version": DataType.STRING,
    "Camera/Status": DataType.STRING,
    "Counters/Inspected": DataType.UINT64,
    "Counters/Failed": DataType.UINT64,
    "Counters/Dropped": DataType.UINT64,
    "Recalibration/State": DataType.STRING,
}
PER_RESULT = ("Inspection/Fail", "Inspection/Score", "Inspection/Normalised Score", "Inspection/Frame Id",
              "Inspection/Latency ms", "Counters/Inspected")  # sent with every result, changed or not


def now_ms() -> int:
    return int(time.time() * 1000)


class SparkplugNode:
    """One Sparkplug edge node session. `workers` maps camera name -> CameraWorker and
    `recalibrators` camera name -> Recalibrator (read-only here, except a DCMD trigger)."""

    def __init__(self, cfg: SparkplugConfig, mqtt_cfg: MqttConfig, workers: dict, recalibrators: dict,
                 state_dir: Path | None = None, poll_s: float = 0.2):
        self.cfg, self.workers, self.recalibrators, self.poll_s = cfg, workers, recalibrators, poll_s
        self.bd_seq_file = Path(state_dir) / BDSEQ_FILE if state_dir else None
        self.max_buffer = mqtt_cfg.buffer
        base = f"{NAMESPACE}/{cfg.group_id}"
        self.topics = {kind: f"{base}/{kind}/{cfg.edge_node_id}" for kind in ("NBIRTH", "NDEATH", "NCMD")}
        self.device_topic = {kind: f"{base}/{kind}/{cfg.edge_node_id}/" for kind in ("DBIRTH", "DDATA", "DDEATH",
                                                                                         "DCMD")}
        self.state_topic = f"{NAMESPACE}/STATE/{cfg.primary_host_id}" if cfg.primary_host_id else None
        self.lock = threading.RLock()  # seq order = publish order, across camera, watcher and paho threads
        self.bd_seq = self._next_bd_seq()
        self.seq = 0
        self.connected = False
        self.host_online = self.state_topic is None
        self.host_ts = -1  # newest STATE timestamp seen
        self.born = False
        self.devices: set[str] = set()  # cameras with a DBIRTH on this birth
        self.counts = {n: {"inspected": 0, "failed": 0} for n in workers}
        self.last: dict[str, dict] = {n: dict.fromkeys(DEVICE_METRICS) for n in workers}
        for n in workers:
            self._refresh(n, dropped=True)
        self.buffer: deque[tuple[str, int, list[tuple[str, object]]]] = deque()
        self.buffer_dropped = 0
        self.births = 0
        self.stopping = threading.Event()
        client = make_client(mqtt_cfg, cfg.client_id or f"{mqtt_cfg.client_id}-spb")
        client.reconnect_delay_set(min_delay=1, max_delay=10)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self.client = client
        self.host, self.port, self.keepalive = mqtt_cfg.host, mqtt_cfg.port, mqtt_cfg.keepalive
        self._set_will()
        self.watcher = threading.Thread(target=self._watch, name="sparkplug-watch", daemon=True)

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        self.client.connect_async(self.host, self.port, keepalive=self.keepalive)
        self.client.loop_start()
        self.watcher.start()

    def stop(self, timeout: float = 3.0) -> None:
        """Clean stop: NDEATH (QoS 1, the bdSeq of the will) then disconnect, so no will follows."""
        self.stopping.set()
        with self.lock:
            info = None
            if self.connected:
                info = self.client.publish(self.topics["NDEATH"], self._ndeath(), qos=1)
            self.born = False
        if info is not None:
            try:
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError):
                pass
        self.client.disconnect()
        self.client.loop_stop()
        if self.watcher.is_alive():
            self.watcher.join(timeout=2)

    def _next_bd_seq(self) -> int:
        """The last bdSeq of the previous run + 1 (0 on a first start), saved for the next one."""
        last = -1
        if self.bd_seq_file is not None and self.bd_seq_file.exists():
            try:
                text = self.bd_seq_file.read_text(errors="replace").strip()
            except OSError as e:
                text = f"(unreadable: {e.strerror})"
            if text.isdigit() and int(text) < 256:
                last = int(text)
            else:
                log.warning("Sparkplug: %s holds %r, not a bdSeq (0-255); starting at 0", self.bd_seq_file, text[:20])
        bd_seq = (last + 1) % 256
        self._save_bd_seq(bd_seq)
        return bd_seq

    def _save_bd_seq(self, bd_seq: int) -> None:
        if self.bd_seq_file is None:
            return
        try:
            atomic_write_bytes(self.bd_seq_file, b"%d\n" % bd_seq)
        except OSError as e:  # inspection goes on; only a restart may then repeat a bdSeq
            log.warning("Sparkplug: cannot save bdSeq to %s (%s)", self.bd_seq_file, e.strerror)

    def _ndeath(self) -> bytes:
        return NDeath(timestamp=now_ms(), bd_seq_metric=Metric(
            timestamp=now_ms(), name="bdSeq", datatype=DataType.INT64, value=self.bd_seq)).encode()

    def _set_will(self) -> None:
        self.client.will_set(self.topics["NDEATH"], self._ndeath(), qos=1, retain=False)

    # -- paho callbacks (network thread) ---------------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("Sparkplug: broker %s:%s refused the connection: %s", self.host, self.port, reason_code)
            return
        # subscriptions go out before the births on the same connection, so commands are never missed
        client.subscribe(self.topics["NCMD"], qos=1)
        client.subscribe(self.device_topic["DCMD"] + "+", qos=1)
        if self.state_topic:
            client.subscribe(self.state_topic, qos=1)
        with self.lock:
            self.connected = True
            if self.host_online:
                self._birth()
            else:
                log.info("Sparkplug: connected; waiting for primary host %s to be online", self.cfg.primary_host_id)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        with self.lock:
            was = self.connected
            self.connected = self.born = False
            self.devices.clear()
            if self.state_topic:  # a new session waits for the host's STATE again (retained or fresh)
                self.host_online = False
            if was and not self.stopping.is_set():
                # the next connection is a new session: the will and the next NBIRTH carry bdSeq + 1
                self.bd_seq = (self.bd_seq + 1) % 256
                self._save_bd_seq(self.bd_seq)
                self._set_will()
        if not self.stopping.is_set():
            log.warning("Sparkplug: disconnected (%s); reconnecting", reason_code)

    def _on_message(self, client, userdata, msg) -> None:
        try:
            if msg.topic == self.state_topic:
                self._on_state(msg.payload)
            elif msg.topic == self.topics["NCMD"]:
                self._on_ncmd(msg.payload)
            elif msg.topic.startswith(self.device_topic["DCMD"]):
                self._on_dcmd(msg.topic[len(self.device_topic["DCMD"]):], msg.payload)
        except Exception as e:  # a hostile or broken command must never take the node down
            log.warning("Sparkplug: ignored message on %s: %s", msg.topic, e)

    def _on_state(self, payload: bytes) -> None:
        try:
            state = json.loads(payload)
            online, ts = state["online"], state.get("timestamp", 0)
            if not isinstance(online, bool) or not isinstance(ts, int) or isinstance(ts, bool):
                raise ValueError
        except (ValueError, KeyError, TypeError):
            log.warning("Sparkplug: ignored STATE from %s: expected JSON {\"online\": true|false, \"timestamp\": ms}",
                        self.cfg.primary_host_id)
            return
        if ts > now_ms() + STATE_MAX_AHEAD_MS:
            # "older than the newest seen" is how STATE is ordered: one far-future timestamp
            # would make every real STATE after it look old, until a restart
            log.warning("Sparkplug: ignored STATE from %s: its timestamp %d is more than a day ahead of this "
                        "station's clock", self.cfg.primary_host_id, ts)
            return
        with self.lock:
            if ts < self.host_ts:
                return  # an older state than one already seen (spec: ignore it)
            self.host_ts = ts
            was, self.host_online = self.host_online, online
            if online and not self.born and self.connected:
                log.info("Sparkplug: primary host %s online; birthing", self.cfg.primary_host_id)
                self._birth()
            elif not online and was and self.born:
                log.info("Sparkplug: primary host %s offline; NDEATH, results kept until it returns",
                         self.cfg.primary_host_id)
                self.client.publish(self.topics["NDEATH"], self._ndeath(), qos=1)
                self.born = False
                self.devices.clear()

    def _command_metrics(self, kind, payload: bytes, allowed: dict[str, DataType]):
        """(name, value) of each well-formed metric of an NCMD/DCMD; the rest is logged."""
        try:
            metrics = kind.decode(payload).metrics
        except Exception as e:  # protobuf DecodeError, unknown datatype enum, ...
            raise ValueError(f"not a Sparkplug B payload ({type(e).__name__})") from None
        good = []
        for m in metrics:
            if m.name not in allowed:
                log.warning("Sparkplug: ignored command metric %r: not writable (writable: %s)",
                            m.name, ", ".join(allowed) or "none")
            elif m.datatype != allowed[m.name] or m.value is None:
                log.warning("Sparkplug: ignored command metric %r: expected a %s value", m.name, allowed[m.name].name)
            else:
                good.append((m.name, m.value))
        return good

    def _on_ncmd(self, payload: bytes) -> None:
        for name, value in self._command_metrics(NCmd, payload, {REBIRTH: DataType.BOOLEAN}):
            if name == REBIRTH and value is True:
                with self.lock:
                    if self.connected and self.host_online:
                        log.info("Sparkplug: rebirth requested")
                        self._birth()

    def _on_dcmd(self, device: str, payload: bytes) -> None:
        w = self.workers.get(device)
        if w is None:
            raise ValueError(f"no camera named {device[:64]!r}")
        allowed = {TRIGGER: DataType.BOOLEAN} if w.cfg.trigger == "mqtt" else {}
        for name, value in self._command_metrics(DCmd, payload, allowed):
            if name == TRIGGER and value is True:
                w.trigger.set()

    # -- publishing (callers hold self.lock) -------------------------------------------
    def _next_seq(self) -> int:
        s = self.seq
        self.seq = (self.seq + 1) % 256
        return s

    @staticmethod
    def _metrics(values, ts: int, historical: bool = False, types=DEVICE_METRICS) -> tuple[Metric, ...]:
        return tuple(Metric(timestamp=ts, name=k, datatype=types[k], value=v, is_historical=historical)
                     for k, v in values)

    def _send(self, topic: str, payload: bytes) -> bool:
        info = self.client.publish(topic, payload, qos=0)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            log.debug("Sparkplug: publish on %s failed (rc %s); the reconnect re-births", topic, info.rc)
            return False
        return True

    def _lost(self) -> None:
        """paho refused a publish (connection gone): keep results until the births of the next session."""
        self.born = False
        self.devices.clear()

    def _birth(self) -> None:
        """NBIRTH (seq 0), a DBIRTH per live camera, then what was buffered, in order."""
        self.seq = 0
        ts = now_ms()
        node = (Metric(timestamp=ts, name="bdSeq", datatype=DataType.INT64, value=self.bd_seq),
                Metric(timestamp=ts, name=REBIRTH, datatype=DataType.BOOLEAN, value=False))
        self._send(self.topics["NBIRTH"], NBirth(timestamp=ts, seq=self._next_seq(), metrics=node).encode(
            include_dtypes=True))
        self.born = True
        self.births += 1
        self.devices.clear()
        for name in self.workers:
            self._refresh(name, dropped=True)
        pending = {name for name, _, _ in self.buffer}
        for name in self.workers:
            if self._alive(name) or name in pending:
                self._dbirth(name)
        while self.buffer:
            name, t, values = self.buffer[0]
            if not self._ddata(name, values, t, historical=True):
                self._lost()
                return
            self.buffer.popleft()
        for name in list(self.devices):  # born only to carry its buffered results
            if not self._alive(name):
                self._ddeath(name)

    def _dbirth(self, name: str) -> None:
        ts = now_ms()
        metrics = self._metrics(self.last[name].items(), ts)
        if self.workers[name].cfg.trigger == "mqtt":
            metrics += (Metric(timestamp=ts, name=TRIGGER, datatype=DataType.BOOLEAN, value=False),)
        self._send(self.device_topic["DBIRTH"] + name,
                   DBirth(timestamp=ts, seq=self._next_seq(), metrics=metrics).encode(include_dtypes=True))
        self.devices.add(name)

    def _ddata(self, name: str, values: list, ts: int, historical: bool = False) -> bool:
        payload = DData(timestamp=ts, seq=self._next_seq(), metrics=self._metrics(values, ts, historical))
        return self._send(self.device_topic["DDATA"] + name, payload.encode(include_dtypes=True))

    def _ddeath(self, name: str) -> None:
        self._send(self.device_topic["DDEATH"] + name, DDeath(timestamp=now_ms(), seq=self._next_seq()).encode())
        self.devices.discard(name)

    # -- inputs ---------------------------------------------------------------------------
    def _refresh(self, name: str, dropped: bool = False) -> list[tuple[str, object]]:
        """Read camera status, model version, recalibration state (and dropped frames); the changed ones."""
        w, last = self.workers[name], self.last[name]
        rc = self.recalibrators.get(name)
        now = {"Camera/Status": w.capture.status, "Model/Version": w.inspector.model.version,
               "Recalibration/State": rc.state.get("state") if rc is not None else None}
        if dropped:
            now["Counters/Dropped"] = w.capture.dropped
        changed = [(k, v) for k, v in now.items() if last[k] != v]
        last.update(now)
        return changed

    def _alive(self, name: str) -> bool:
        """A live device: its capture runs; an ended replay stays alive until its last frame is judged."""
        status = self.last[name]["Camera/Status"]
        if status == "ended":
            return self.workers[name].is_alive()
        return status not in DEAD

    def on_result(self, camera: str, result: dict) -> None:
        """Per-result hook (camera worker thread): DDATA now, or kept until the next birth."""
        ts = now_ms()
        c = self.counts[camera]
        c["inspected"] += 1
        c["failed"] += result["verdict"] == "fail"
        now = {"Inspection/Fail": result["verdict"] == "fail", "Inspection/Score": result["score"],
               "Inspection/Normalised Score": result["normalised_score"], "Inspection/Frame Id": result["frame_id"],
               "Inspection/Latency ms": result["latency_ms"], "Counters/Inspected": c["inspected"],
               "Inspection/Threshold": result["threshold"], "Model/Version": result["model_version"],
               "Counters/Failed": c["failed"], "Counters/Dropped": self.workers[camera].capture.dropped}
        with self.lock:
            last = self.last[camera]
            values = [(k, v) for k, v in now.items() if k in PER_RESULT or last[k] != v]
            last.update(now)
            if self.born and not self.buffer:
                if camera not in self.devices:  # the watcher has not seen it come back yet
                    self._refresh(camera, dropped=True)
                    self._dbirth(camera)
                    return  # the DBIRTH carries this result
                if self._ddata(camera, values, ts):
                    return
                self._lost()
            if not self.max_buffer:
                self.buffer_dropped += 1
                return
            if len(self.buffer) >= self.max_buffer:
                self.buffer.popleft()
                self.buffer_dropped += 1
            self.buffer.append((camera, ts, values))

    def _watch(self) -> None:
        """Camera up/down -> DBIRTH/DDEATH; status, model and recalibration changes -> DDATA."""
        while not self.stopping.wait(self.poll_s):
            with self.lock:
                for name in self.workers:
                    changed = self._refresh(name)
                    if not self.born:
                        continue
                    alive = self._alive(name)
                    if alive and name not in self.devices:
                        self._dbirth(name)
                    elif not alive and name in self.devices:
                        self._ddeath(name)
                    elif alive and changed:
                        self._ddata(name, changed, now_ms())
