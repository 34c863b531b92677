"""A Sparkplug B host application for tests, with a decoder independent of the product.

The product encodes with pysparkplug; this decodes with the `sparkplug_b_pb2` module that
mqtt-spb-wrapper ships (the Eclipse Tahu sparkplug_b.proto compiled by protoc) and plain
protobuf, and checks the session rules itself. Test processes must not import
edge.sparkplug: both modules register the same proto file in protobuf's default pool.
"""

from __future__ import annotations

import json
import threading
import time
import uuid

import paho.mqtt.client as mqtt
from benchmarks.mqtt_collector import wait_until
from mqtt_spb_wrapper.spb_protobuf.sparkplug_b_pb2 import DataType, Payload

NODE_SEQ_KINDS = ("DBIRTH", "DDATA", "DDEATH", "NDATA")  # messages that carry the node's running seq


def decode(raw: bytes) -> Payload:
    p = Payload()
    p.ParseFromString(raw)
    return p


def metrics(p: Payload) -> dict:
    """name -> (datatype name, value or None, is_historical)."""
    out = {}
    for m in p.metrics:
        field = m.WhichOneof("value")
        out[m.name] = (DataType.Name(m.datatype), None if m.is_null or field is None else getattr(m, field),
                       m.is_historical)
    return out


def command(name: str, datatype: int, value) -> bytes:
    """An NCMD/DCMD payload with one metric, built with the independent schema."""
    p = Payload(timestamp=int(time.time() * 1000))
    m = p.metrics.add(name=name, datatype=datatype)
    field = {DataType.Boolean: "boolean_value", DataType.String: "string_value", DataType.Int64: "long_value",
             DataType.Double: "double_value"}[datatype]
    setattr(m, field, value)
    return p.SerializeToString()


class Host:
    """Records every message under spBv1.0/<group>/# in arrival order, decoded."""

    def __init__(self, group: str, node: str, port: int = 1883, host_id: str | None = None):
        """With host_id it behaves as a primary host: STATE offline as its will, STATE online
        (retained, a fresh timestamp) after subscribing on every connect."""
        self.group, self.node, self.host_id = group, node, host_id
        self.msgs: list[tuple[str, str | None, Payload]] = []  # (kind, device, payload)
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"host-{uuid.uuid4().hex[:8]}")
        if host_id:
            self.c.will_set(f"spBv1.0/STATE/{host_id}", json.dumps({"online": False, "timestamp": int(time.time() * 1000)}),
                            qos=1, retain=True)
        self.c.on_connect = lambda c, u, f, rc, p: c.subscribe(f"spBv1.0/{group}/#", qos=1)
        self.c.on_subscribe = self._subscribed
        self.c.on_message = self._on
        self.c.reconnect_delay_set(0.2, 1)
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        assert self.ready.wait(10), "test host could not subscribe"

    def _subscribed(self, *a):
        if self.host_id:
            self.c.publish(f"spBv1.0/STATE/{self.host_id}",
                           json.dumps({"online": True, "timestamp": int(time.time() * 1000)}), qos=1, retain=True)
        self.ready.set()

    def _on(self, c, u, m):
        parts = m.topic.split("/")  # spBv1.0/group/KIND/node[/device]
        if parts[2] in ("NCMD", "DCMD"):
            return
        with self.lock:
            self.msgs.append((parts[2], parts[4] if len(parts) > 4 else None, decode(m.payload)))

    def of(self, kind: str, device: str | None = None) -> list[Payload]:
        with self.lock:
            return [p for k, d, p in self.msgs if k == kind and (device is None or d == device)]

    def wait_for(self, pred, timeout: float = 60.0) -> bool:
        return wait_until(pred, timeout)

    def ncmd(self, payload: bytes) -> None:
        self.c.publish(f"spBv1.0/{self.group}/NCMD/{self.node}", payload, qos=1).wait_for_publish(5)

    def dcmd(self, device: str, payload: bytes) -> None:
        self.c.publish(f"spBv1.0/{self.group}/DCMD/{self.node}/{device}", payload, qos=1).wait_for_publish(5)

    def state(self, host_id: str, online: bool, ts: int) -> None:
        self.c.publish(f"spBv1.0/STATE/{host_id}", json.dumps({"online": online, "timestamp": ts}),
                       qos=1, retain=True).wait_for_publish(5)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()

    def check_session(self) -> None:
        """The rules a Sparkplug host relies on, over everything recorded so far:
        NBIRTH first with seq 0 and a bdSeq; node seq continuous (mod 256) until the next NBIRTH
        or NDEATH; DDATA/DDEATH only for a device born since the last NBIRTH; every DDATA metric
        declared in the device's DBIRTH with the same datatype; NDEATH carries the NBIRTH's bdSeq."""
        with self.lock:
            msgs = list(self.msgs)
        assert msgs and msgs[0][0] == "NBIRTH", [k for k, _, _ in msgs[:5]]
        seq = bd_seq = None
        declared: dict[str, dict] = {}
        for i, (kind, dev, p) in enumerate(msgs):
            where = f"message {i} ({kind} {dev})"
            if kind == "NBIRTH":
                m = metrics(p)
                assert p.seq == 0, where
                assert m["bdSeq"][0] == "Int64" and m["Node Control/Rebirth"][:2] == ("Boolean", False), m
                bd_seq, seq, declared = m["bdSeq"][1], 0, {}
                continue
            if kind == "NDEATH":
                assert bd_seq is not None and metrics(p)["bdSeq"][1] == bd_seq, where
                seq, declared = None, {}
                continue
            assert seq is not None, f"{where} while the node is dead"
            assert p.seq == (seq + 1) % 256, f"{where}: seq {p.seq} after {seq}"
            seq = p.seq
            if kind == "DBIRTH":
                m = metrics(p)
                assert all(t != "Unknown" for t, _, _ in m.values()), m
                declared[dev] = {k: t for k, (t, _, _) in m.items()}
            elif kind == "DDEATH":
                assert declared.pop(dev, None) is not None, f"{where} without a DBIRTH"
            elif kind == "DDATA":
                assert dev in declared, f"{where} before its DBIRTH"
                for k, (t, _, _) in metrics(p).items():
                    assert declared[dev].get(k) == t, f"{where}: {k} is {t}, DBIRTH said {declared[dev].get(k)}"
