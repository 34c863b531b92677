"""The edge daemon: cameras -> features -> 1-NN -> verdict -> MQTT, until told to stop.

Wiring only: capture (capture.py), scoring (inspector.py), transport (mqtt_link.py) and
systemd (sdnotify.py) live in their own modules. One capture thread and one inspection
worker per camera; a camera whose model is missing or corrupt is refused with a clear
message while the others run. Frames are not batched across cameras: at batch 1 ONNX
Runtime already uses both cores here, so batching would add waiting without adding
throughput on this class of machine.

Results carry `run_id` (daemon starts, persisted in the state dir) beside `frame_id`, so
ids are unique across restarts. Results the broker has not acknowledged at shutdown are
spooled to the state dir and replayed first at the next start (statedir.py, spool.py).
A frame that cannot be inspected is counted per camera (stats `errors`, `last_error`) and
logged with its traceback once per distinct error; `no_result_s` says how long a camera has
been taking frames without producing a result (what `patchcore-edge status` judges).

Exit codes: 0 stopped by a signal or every finite source ended (exit_when_done);
4 every source ended but a camera judged none of its frames (its roi does not fit them);
2 bad config (or a state dir in use by another daemon); 3 no camera could start.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from datetime import datetime, timezone

from .capture import Capture, make_source
from .command_secret import load_command_secret
from .config import CameraConfig, DaemonConfig
from .errors import ImageError, PatchcoreError
from .gpu import heatmap_jpeg, open_inspector, share_batches
from .image_size import check_size
from .inspector import Inspector
from .modeldir import load_model
from .mqtt_link import MqttLink
from .outputs import attach_outputs
from .recalibrate import ModelDirs, Recalibrator
from .refused_camera import RefusedCamera
from .sdnotify import notify, watchdog_interval
from .spool import load_spool, remove_spool, write_spool
from .statedir import StateDir, default_state_dir
from .stats import CameraStats
from .topics import Topics
from . import web

log = logging.getLogger(__name__)

EXIT_OK, EXIT_CONFIG, EXIT_NO_CAMERA, EXIT_SOURCE_ERROR = 0, 2, 3, 4


class CameraWorker(threading.Thread):
    """Inspects the newest frame of one camera and publishes the verdict."""

    def __init__(self, cfg: CameraConfig, inspector: Inspector, link: MqttLink, prefix: str, qos: int,
                 print_results: bool, run_id: int = 0):
        super().__init__(name=f"inspect-{cfg.name}", daemon=True)
        self.run_id = run_id
        self.error: str | None = None  # a frame the config cannot apply to (ROI outside it)
        self.waiting_since: float | None = None  # first frame taken since the last result (monotonic)
        self._last_logged: str | None = None  # last inspection error logged with its traceback
        self.cfg, self.inspector, self.link = cfg, inspector, link
        topics = Topics(prefix)
        self.result_topic, self.state_topic = topics.result(cfg.name), topics.state(cfg.name)
        self.heatmap_topic = topics.heatmap(cfg.name)
        self.qos, self.print_results = qos, print_results
        source = make_source(cfg.source, cfg.loop)
        self.capture = Capture(cfg.name, source, cfg.fps, cfg.stall_timeout_s,
                               lossless=source.finite and cfg.trigger == "continuous")
        self.stats = CameraStats()
        self.trigger = threading.Event()
        self.stopping = threading.Event()
        self.last_heatmap = 0.0
        self.frame_id = 0
        self.share = 1.0  # < 1 while a recalibration needs the CPU (duty cycle of inspection)
        self.live = None  # edge.web.state.LiveState while the station page is on
        self.listeners: list = []  # per-result hooks (camera, result): Sparkplug B, Prometheus (outputs.py)

    def swap_inspector(self, inspector: Inspector) -> None:
        """Judge from the next frame on with `inspector` (a new model version): one reference
        swap, read once per frame, so no frame is ever scored by a half-loaded model."""
        self.inspector = inspector

    def throttle(self, share: float) -> None:
        """Let inspection use `share` of its normal time (< 1 while a recalibration needs the CPU;
        1.0 restores it)."""
        self.share = share

    def on_trigger(self, topic: str, payload: bytes) -> None:
        # triggers that arrive while one is pending are served by the same frame: count them
        self.stats.trigger(merged=self.trigger.is_set())
        self.trigger.set()

    def stop(self) -> None:
        self.stopping.set()
        self.trigger.set()
        self.capture.stop()

    @property
    def done(self) -> bool:
        return self.capture.status in ("ended", "stopped") and not self.is_alive()

    def run(self) -> None:
        self.capture.start()
        seq = 0
        min_gap = 1.0 / self.cfg.fps
        last = 0.0
        while not self.stopping.is_set():
            if self.cfg.trigger == "mqtt":
                self.trigger.wait()
                if self.stopping.is_set():
                    break
                self.trigger.clear()
                seq = self.capture.seq  # only a frame grabbed after the trigger counts
            got = self.capture.latest(seq, timeout=0.5)
            if got is None:
                if self.capture.status == "ended":
                    break
                continue
            seq, frame, t_frame = got
            if self.waiting_since is None:
                self.waiting_since = time.monotonic()
            if not self.capture.source.finite:  # live sources: honour the target rate
                wait = last + min_gap - time.perf_counter()
                if wait > 0 and self.stopping.wait(wait):
                    break
            last = time.perf_counter()
            try:
                self.process(frame, t_frame)
            except Exception as e:  # one bad frame must not end the camera
                self._failed(e)
            if self.share < 1.0:  # idle long enough that inspection uses `share` of its normal time
                busy = time.perf_counter() - last
                self.stopping.wait(busy * (1.0 / self.share - 1.0))

    def _failed(self, e: Exception) -> None:
        """Count a failed inspection; its traceback is logged once per distinct message, not per frame."""
        msg = (f"{type(e).__name__}: {e}".splitlines() or [""])[0][:300]
        self.stats.error(msg)
        if msg != self._last_logged:
            log.error("camera %s: inspection failed (%s); counted in stats errors, logged again only when the "
                      "error changes", self.cfg.name, msg, exc_info=e)
            self._last_logged = msg

    def crop(self, frame):
        """The part of a frame this camera judges (its ROI; the whole frame without one): the one
        crop for inspection and for the frames a recalibration collects."""
        if not self.cfg.roi:
            return frame
        x, y, w, h = self.cfg.roi
        return frame[y:y + h, x:x + w]

    def _roi_error(self, frame) -> str | None:
        """Why the configured ROI cannot be cut from this frame (None when it can)."""
        x, y, w, h = self.cfg.roi
        fh, fw = frame.shape[:2]
        if x + w > fw or y + h > fh:
            return (f"roi [{x}, {y}, {w}, {h}] (x, y, width, height) does not fit inside the {fw}x{fh} frame; "
                    f"fix roi of camera {self.cfg.name} in the config")
        try:  # the config refuses a small roi; this holds for one built in code, too: a tiny crop passes all
            check_size(w, h, f"roi [{x}, {y}, {w}, {h}] crop")
        except ImageError as e:
            return f"{e}; fix roi of camera {self.cfg.name} in the config"
        return None

    def process(self, frame, t_frame: float) -> None:
        roi = self.cfg.roi
        full = frame  # the station page shows the whole frame with the ROI drawn
        if roi:  # checked on every frame (cheap): a reconnect may change the resolution
            error = self._roi_error(frame)
            if error != self.error:
                if error:
                    log.error("camera %s: %s", self.cfg.name, error)
                else:
                    log.info("camera %s: the roi fits the frame again", self.cfg.name)
                self.error = error
            if error:
                return
            frame = self.crop(frame)
        insp = self.inspector  # read once: a recalibration may swap it while this frame is in flight
        r = insp.inspect(frame)
        self.frame_id += 1
        result = {
            "camera": self.cfg.name, "run_id": self.run_id, "frame_id": self.frame_id,
            "timestamp": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), **r.record(),
        }
        latency = (time.perf_counter() - t_frame) * 1e3
        result["latency_ms"] = round(latency, 2)
        payload = json.dumps(result, separators=(",", ":"))
        self.link.publish(self.result_topic, payload, qos=self.qos, buffer=True)
        self.link.publish(self.state_topic, payload, qos=self.qos, retain=True, buffer=True)
        self.waiting_since = None
        for hook in self.listeners:
            hook(self.cfg.name, result)
        if self.live is not None:  # O(1) hand-over; the page encodes on its own threads
            self.live.record(full, roi, result, r.anomaly_map)
        timings = dict(r.timings_ms, total=latency)
        hm = self.cfg.heatmap
        now = time.monotonic()
        if hm.mode == "every" or (hm.mode == "fail" and r.verdict == "fail") or (
                hm.mode == "interval" and now - self.last_heatmap >= hm.interval_s):
            t = time.perf_counter()
            jpeg = heatmap_jpeg(insp, frame, r, hm.max_side, hm.jpeg_quality)  # by the inspector that made r
            self.link.publish(self.heatmap_topic, jpeg, qos=0, retain=True)
            self.last_heatmap = now
            timings["heatmap"] = (time.perf_counter() - t) * 1e3
        self.stats.add(timings, r.verdict)
        if self.print_results:
            print(payload, flush=True)

    def judged_none_because(self) -> str | None:
        """Why a camera that judged no frame judged none (an roi that never fit, a capture
        failure); None once a frame was judged or when nothing went wrong."""
        return (self.error or self.capture.error) if self.frame_id == 0 else None

    def status(self) -> dict:
        c = self.capture
        camera, error = c.status, c.error
        if self.error and camera == "online":
            camera, error = "error", self.error
        elif camera == "ended" and self.judged_none_because():  # the final stats keep why none was judged
            error = self.judged_none_because()
        waiting = self.waiting_since
        no_result_s = round(time.monotonic() - waiting, 1) if waiting is not None else 0.0
        return {"camera": camera, "camera_error": error, "frames": c.frames, "dropped": c.dropped,
                "no_result_s": no_result_s,
                "reconnects": c.reconnects, "model_version": self.inspector.model.version, "model": "ok",
                "backend": self.inspector.backend.describe(), "search": self.inspector.search.name,
                **self.stats.snapshot()}


class Daemon:
    def __init__(self, cfg: DaemonConfig):
        self.cfg = cfg
        self.stop_event = threading.Event()
        self.workers: dict[str, CameraWorker] = {}
        self.refused: dict[str, str] = {}
        self.recalibrators: dict[str, Recalibrator] = {}
        self.refused_cameras: list[RefusedCamera] = []
        self.started = time.monotonic()
        self.state = StateDir(cfg.state_dir or default_state_dir(None))
        self.run_id = self.state.next_run_id()
        self.link = MqttLink(cfg.mqtt)
        spooled, self.spool_dropped = load_spool(self.state.path, cfg.mqtt.prefix, cfg.mqtt.buffer)
        if spooled or self.spool_dropped:
            log.warning("replaying %d messages (results, state) the broker had not acknowledged when the daemon "
                        "last stopped (%d dropped then: over the spool bounds)", len(spooled), self.spool_dropped)
        self.link.preload(spooled)
        self.replayed = len(spooled)
        log.info("run %d, state dir %s", self.run_id, self.state.path)
        dirs = ModelDirs()
        self.secret = load_command_secret(cfg.recalibration)  # checked once, at start: (secret, why disabled)
        for cam in cfg.cameras:
            try:
                inspector = open_inspector(load_model(cam.model), backend=cam.backend)
            except PatchcoreError as e:
                log.error("camera %s refused: %s", cam.name, e)
                self.refused[cam.name] = str(e)
                # its commands are answered (why it is down), not left without an outcome
                rc = RefusedCamera(cam.name, str(e), self.link, cfg.mqtt.prefix, cfg.recalibration, self.secret)
                self.refused_cameras.append(rc)
                self.link.handlers[self.link.topics.command(cam.name)] = rc.on_command
                continue
            log.info("camera %s: model %s, backend %s, search %s", cam.name, inspector.model.version,
                     inspector.backend.describe(), inspector.search.name)
            w = CameraWorker(cam, inspector, self.link, cfg.mqtt.prefix, cfg.mqtt.qos, cfg.print_results,
                             run_id=self.run_id)
            self.workers[cam.name] = w
            rc = Recalibrator(w, self.link, cfg.mqtt.prefix, cfg.recalibration, dirs, secret=self.secret,
                              owner=str(self.state.path.resolve()))  # its work folders only (workdir.py)
            self.recalibrators[cam.name] = rc
            self.link.handlers[self.link.topics.command(cam.name)] = rc.on_command
            if cam.trigger == "mqtt":
                self.link.handlers[self.link.topics.trigger(cam.name)] = w.on_trigger
        self.outputs = attach_outputs(self)  # Sparkplug B node, Prometheus metrics: each only when configured
        self.batchers = share_batches(self.workers.values(), cfg.gpu_batch_ms / 1e3)  # CUDA-resident only
        self.web = web.attach(self)  # the station page (None when off)

    def stats_payload(self) -> dict:
        cams = {n: w.status() for n, w in self.workers.items()}
        cams.update({n: {"camera": "not started", "model": "error", "model_error": e} for n, e in self.refused.items()})
        return {
            "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "uptime_s": round(time.monotonic() - self.started, 1), "run_id": self.run_id,
            "broker": {"connected": self.link.connected.is_set(), "buffered": len(self.link.buffer),
                       "buffer_dropped": self.link.buffer_dropped, "connects": self.link.connects,
                       "replayed": self.replayed, "spool_dropped": self.spool_dropped},
            "cameras": cams,
            "recalibration": {"enabled": self.secret[0] is not None, "reason": self.secret[1],
                              "commands": {**{n: rc.refusals.snapshot() for n, rc in self.recalibrators.items()},
                                           **{rc.name: rc.refusals.snapshot() for rc in self.refused_cameras}}},
        }

    def publish_stats(self) -> None:
        self.link.publish(self.link.topics.stats, json.dumps(self.stats_payload()), qos=0, retain=True)

    def request_stop(self, *_args) -> None:
        self.stop_event.set()

    def run(self) -> int:
        if not self.workers:
            log.error("no camera could start: %s", "; ".join(f"{k}: {v}" for k, v in self.refused.items()))
            return EXIT_NO_CAMERA
        self.link.start()
        for o in self.outputs:
            o.start()
        for w in self.workers.values():
            w.start()
        if self.web is not None and not web.start(self.web):
            self.web = None
        for rc in self.recalibrators.values():
            rc.publish(rc.state["state"], **{k: v for k, v in rc.state.items() if k != "state"})
        notify("READY=1\nSTATUS=inspecting " + ", ".join(self.workers))
        wd = watchdog_interval()
        next_stats = time.monotonic() + self.cfg.stats_interval_s
        spool_on_disk = bool(self.replayed)
        tick = min(0.5, wd) if wd else 0.5
        while not self.stop_event.wait(tick):
            if wd:
                notify("WATCHDOG=1")
            if spool_on_disk and not self.link.replay_pending():  # all delivered: the spool has served
                remove_spool(self.state.path)
                spool_on_disk = False
            if time.monotonic() >= next_stats:
                self.publish_stats()
                next_stats += self.cfg.stats_interval_s
            if self.cfg.exit_when_done and all(w.done for w in self.workers.values()):
                log.info("every source has ended; stopping")
                # a replay that judged none of its frames must not look like a clean run
                failed = {n: w.judged_none_because() for n, w in self.workers.items() if w.judged_none_because()}
                if failed:
                    log.error("source(s) ended with an error: %s", "; ".join(f"{n}: {e}" for n, e in failed.items()))
                    self.shutdown()
                    return EXIT_SOURCE_ERROR
                break
        return self.shutdown()

    def spool(self, pending: list) -> None:
        """Keep what the broker never acknowledged for the next start (or say what is lost)."""
        m = self.cfg.mqtt
        try:
            kept, dropped = write_spool(self.state.path, pending, m.buffer, int(m.spool_max_mb * 1e6))
        except OSError as e:
            log.error("cannot spool %d undelivered results to %s (%s): they are lost", len(pending),
                      self.state.path, e.strerror)
            return
        if kept:
            log.warning("broker unreachable at stop: spooled %d undelivered messages to %s; they are sent first "
                        "at the next start", kept, self.state.path)
        if dropped:
            log.warning("dropped %d undelivered messages at stop: over the spool bounds (mqtt.buffer=%d, "
                        "mqtt.spool_max_mb=%g)", dropped, m.buffer, m.spool_max_mb)

    def shutdown(self) -> int:
        notify("STOPPING=1")
        if self.web is not None:
            self.web.stop()
        for rc in [*self.recalibrators.values(), *self.refused_cameras]:
            rc.stop()
        for w in self.workers.values():
            w.stop()
        for w in self.workers.values():
            w.join(timeout=5)
            w.capture.join(timeout=5)  # no thread may be inside OpenCV while the interpreter exits
        self.publish_stats()
        deadline = time.monotonic() + 5  # let buffered results out before going offline
        while self.link.buffer and time.monotonic() < deadline and self.link.connected.is_set():
            time.sleep(0.05)
        self.link.stop()
        self.spool(self.link.pending())
        for o in self.outputs:
            o.stop()  # Sparkplug: NDEATH on a clean stop
        return EXIT_OK


def run_daemon(cfg: DaemonConfig) -> int:
    """Run until SIGTERM/SIGINT (or every finite source ended, with exit_when_done)."""
    d = Daemon(cfg)
    signal.signal(signal.SIGTERM, d.request_stop)
    signal.signal(signal.SIGINT, d.request_stop)
    code = d.run()
    sys.stdout.flush()
    return code
