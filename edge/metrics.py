"""Prometheus metrics of the daemon (prometheus-client), served on /metrics when configured.

Results and latency are counted as they happen (the per-result hook); everything that
already lives elsewhere (capture counters, broker link, model, recalibration) is read at
scrape time by a custom collector, so there is one source of truth and nothing to keep in
sync. A private registry keeps the process's default collectors (GC, platform) out of the
station's metrics unless asked for. The port binds to 127.0.0.1 unless the config says
otherwise: the metrics name cameras and model versions.
"""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from .config import PrometheusConfig

log = logging.getLogger(__name__)

# frame-to-verdict latency, seconds: a CPU station runs at tens of ms, a GPU one at a few
LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


class _StateCollector(Collector):
    """Scrape-time view of the daemon: cameras, broker link, model and recalibration."""

    def __init__(self, daemon):
        self.d = daemon

    def collect(self):
        d = self.d
        up = GaugeMetricFamily("patchcore_camera_up", "1 while the camera delivers frames", labels=["camera"])
        frames = CounterMetricFamily("patchcore_frames", "frames captured", labels=["camera"])
        dropped = CounterMetricFamily("patchcore_frames_dropped", "frames replaced by a newer one before inspection",
                                      labels=["camera"])
        reconnects = CounterMetricFamily("patchcore_camera_reconnects", "camera source reopens", labels=["camera"])
        model = InfoMetricFamily("patchcore_model", "active model version and backend per camera",
                                 labels=["camera"])
        recal = GaugeMetricFamily("patchcore_recalibration_state", "1 for the current recalibration state",
                                  labels=["camera", "state"])
        for name, w in list(d.workers.items()):
            c = w.capture
            up.add_metric([name], 1.0 if c.status == "online" else 0.0)
            frames.add_metric([name], c.frames)
            dropped.add_metric([name], c.dropped)
            reconnects.add_metric([name], c.reconnects)
            model.add_metric([name], {"version": str(w.inspector.model.version),
                                      "backend": w.inspector.backend.describe()})
            rc = d.recalibrators.get(name)
            if rc is not None:
                recal.add_metric([name, str(rc.state.get("state"))], 1.0)
        link = d.link
        yield from (up, frames, dropped, reconnects, model, recal)
        yield GaugeMetricFamily("patchcore_broker_connected", "1 while the MQTT broker is connected",
                                value=1.0 if link.connected.is_set() else 0.0)
        yield GaugeMetricFamily("patchcore_buffered_messages", "results waiting for the broker",
                                value=len(link.buffer))
        yield CounterMetricFamily("patchcore_buffer_dropped", "buffered results dropped because the buffer was full",
                                  value=link.buffer_dropped)
        sp = getattr(d, "sparkplug", None)
        if sp is not None:
            yield GaugeMetricFamily("patchcore_sparkplug_online", "1 while the Sparkplug node is born",
                                    value=1.0 if sp.born else 0.0)
            yield CounterMetricFamily("patchcore_sparkplug_births", "Sparkplug NBIRTHs sent", value=sp.births)
            yield GaugeMetricFamily("patchcore_sparkplug_buffered", "results kept for the next Sparkplug birth",
                                    value=len(sp.buffer))
            yield CounterMetricFamily("patchcore_sparkplug_buffer_dropped", "kept results dropped (mqtt.buffer full)",
                                      value=sp.buffer_dropped)


class PromMetrics:
    def __init__(self, cfg: PrometheusConfig, daemon):
        self.cfg = cfg
        self.registry = CollectorRegistry()
        self.results = Counter("patchcore_results", "inspection results by verdict", ["camera", "verdict"],
                               registry=self.registry)
        self.latency = Histogram("patchcore_latency_seconds", "frame-to-verdict latency", ["camera"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        for name in daemon.workers:  # every series exists from the start (rate() needs a zero)
            for verdict in ("pass", "fail"):
                self.results.labels(name, verdict)
            self.latency.labels(name)
        self.registry.register(_StateCollector(daemon))
        self.server = None

    def on_result(self, camera: str, result: dict) -> None:
        self.results.labels(camera, result["verdict"]).inc()
        self.latency.labels(camera).observe(result["latency_ms"] / 1e3)

    def start(self) -> None:
        try:
            self.server, _ = start_http_server(self.cfg.port, addr=self.cfg.host, registry=self.registry)
        except OSError as e:  # inspection goes on without metrics
            log.error("prometheus: cannot listen on %s:%s (%s); choose another prometheus.port. "
                      "Running without /metrics", self.cfg.host, self.cfg.port, e.strerror or e)
            return
        log.info("prometheus: /metrics on http://%s:%s/metrics", self.cfg.host, self.server.server_port)

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
