"""HTTP side of the station page: bottle routes on cheroot's thread-pooled WSGI server.

Why these two: the daemon is threaded, not asyncio, so a WSGI server with its own bounded
worker pool fits beside the camera threads without an event loop. cheroot (CherryPy's
server) is pure Python, production-grade, keeps idle keep-alive connections off its worker
threads, times out a client that stops reading (`timeout`) and stops cleanly from another
thread. bottle is one module with no dependencies that gives routing, safe static files and
JSON. The stdlib http.server starts an unbounded thread per connection and calls itself
unfit for production; Flask would bring five packages for the same routes.

Read-only: GET/HEAD only, nothing here changes the daemon (recalibration and rollback stay
signed MQTT/CLI commands). Camera names in URLs are looked up, never used as paths.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
import time
from http.cookies import CookieError, SimpleCookie
from pathlib import Path
from urllib.parse import parse_qs

import bottle
from cheroot.wsgi import Server

from ..modeldir import MANIFEST, current_version, list_versions
from . import deadline, render
from .config import WebConfig

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
COOKIE = "patchcore_token"
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "SAMEORIGIN",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; "
                               "script-src 'self'; connect-src 'self'; frame-ancestors 'self'",
}


class TokenGate:
    """WSGI wrapper: every request needs the token as `Authorization: Bearer`, `?token=` (which
    also sets an HttpOnly cookie so the page's own requests carry it) or that cookie; 401 otherwise."""

    def __init__(self, app, token: str | None):
        self.app, self.token = app, token.encode() if token else None

    def _given(self, environ) -> tuple[bytes | None, bool]:
        scheme, _, credentials = environ.get("HTTP_AUTHORIZATION", "").strip().partition(" ")
        if scheme.lower() == "bearer":  # RFC 7235: the scheme is case-insensitive
            return credentials.strip().encode("latin-1", "replace"), False
        q = parse_qs(environ.get("QUERY_STRING", "")).get("token")
        if q:
            return q[0].encode("utf-8", "replace"), True
        try:
            c = SimpleCookie(environ.get("HTTP_COOKIE", "")).get(COOKIE)
        except CookieError:
            c = None
        return (c.value.encode("utf-8", "replace") if c else None), False

    def __call__(self, environ, start_response):
        if self.token is None:
            return self.app(environ, start_response)
        given, from_query = self._given(environ)
        if given is None or not hmac.compare_digest(given, self.token):
            start_response("401 Unauthorized", [("Content-Type", "text/plain; charset=utf-8"),
                                                ("WWW-Authenticate", 'Bearer realm="patchcore-edge"'),
                                                ("Cache-Control", "no-store")])
            return [b"401: this page needs its access token: open it once as /?token=<token> "
                    b"or send Authorization: Bearer <token>\n"]
        if not from_query:
            return self.app(environ, start_response)

        def with_cookie(status, headers, exc_info=None):
            headers = list(headers) + [("Set-Cookie", f"{COOKIE}={self.token.decode()}; HttpOnly; "
                                                      "SameSite=Strict; Path=/")]
            return start_response(status, headers, exc_info)
        return self.app(environ, with_cookie)


class Stream:
    """An MJPEG response body; releases its stream slot when the server closes it."""

    def __init__(self, frames, release):
        self.frames, self.release = frames, release

    def __iter__(self):
        return self.frames

    def close(self):
        self.frames.close()
        release, self.release = self.release, None
        if release:
            release()


class StationApp:
    """Routes over a running Daemon (its workers, recalibrators, link and stats)."""

    def __init__(self, cfg: WebConfig, daemon):
        self.cfg, self.daemon = cfg, daemon
        self.stopping = threading.Event()
        self.streams = threading.BoundedSemaphore(cfg.max_streams)
        self._stats_lock = threading.Lock()
        self._stats: tuple[float, dict] = (0.0, {})
        self.app = app = bottle.Bottle(autojson=True)
        app.add_hook("after_request", self._headers)
        app.default_error_handler = self._error
        app.route("/", callback=lambda: self._page("station.html"))
        app.route("/camera/<name>", callback=lambda name: self._page("camera.html"))
        app.route("/static/<path:path>", callback=self._static)
        app.route("/api/station", callback=self.station)
        app.route("/api/cameras/<name>", callback=self.camera)
        app.route("/api/cameras/<name>/history", callback=self.history)
        app.route("/api/cameras/<name>/failures", callback=self.failures)
        app.route("/api/cameras/<name>/failures/<fid:int>.jpg", callback=self.failure_image)
        app.route("/api/cameras/<name>/versions", callback=self.versions)
        app.route("/api/cameras/<name>/snapshot.jpg", callback=self.snapshot)
        app.route("/api/cameras/<name>/stream.mjpg", callback=self.stream)

    # -- plumbing ----------------------------------------------------------------------
    @staticmethod
    def _headers():
        for k, v in SECURITY_HEADERS.items():
            bottle.response.set_header(k, v)
        if bottle.request.path.startswith("/api/") and "Cache-Control" not in bottle.response.headers:
            bottle.response.set_header("Cache-Control", "no-store")

    @staticmethod
    def _error(res: bottle.HTTPError) -> str:
        """Errors as one JSON line (no HTML, never a traceback)."""
        bottle.response.content_type = "application/json"
        body = res.body if isinstance(res.body, str) and res.status_code < 500 else "internal error (see the daemon log)"
        return json.dumps({"error": body, "status": res.status_code})

    @staticmethod
    def _page(name: str):
        return bottle.static_file(name, root=str(STATIC), mimetype="text/html", charset="utf-8")

    @staticmethod
    def _static(path: str):
        return bottle.static_file(path, root=str(STATIC))

    def _worker(self, name: str):
        w = self.daemon.workers.get(name)
        if w is None or w.live is None:
            bottle.abort(404, "no camera of that name")
        return w

    def _stats_payload(self) -> dict:
        """The daemon's stats at most once a second, however many viewers poll."""
        with self._stats_lock:
            t, payload = self._stats
            if time.monotonic() - t > 1.0:
                payload = self.daemon.stats_payload()
                self._stats = (time.monotonic(), payload)
            return payload

    @staticmethod
    def _heatmap_wanted() -> bool:
        return bottle.request.query.get("heatmap", "0") in ("1", "true", "yes")

    # -- JSON --------------------------------------------------------------------------
    def station(self):
        stats = self._stats_payload()
        cams = {}
        for name, st in stats["cameras"].items():
            w = self.daemon.workers.get(name)
            latest = w.live.latest if w is not None and w.live is not None else None
            cams[name] = {"status": st, "result": latest.result if latest else None,
                          "fail_rates": w.live.fail_rates() if w is not None and w.live is not None else None,
                          "recalibration": self._recal(name)}
        return {"timestamp": stats["timestamp"], "uptime_s": stats["uptime_s"], "broker": stats["broker"],
                "live_fps": self.cfg.live_fps, "cameras": cams}

    def _recal(self, name: str) -> dict | None:
        rc = self.daemon.recalibrators.get(name)
        return dict(rc.state) if rc is not None else None

    def camera(self, name):
        w = self._worker(name)
        latest = w.live.latest
        return {
            "name": name, "result": latest.result if latest else None,
            "frame": {"width": latest.frame.shape[1], "height": latest.frame.shape[0]} if latest else None,
            "roi": list(w.cfg.roi) if w.cfg.roi else None,
            "status": self._stats_payload()["cameras"].get(name, {}),
            "fail_rates": w.live.fail_rates(),
            "threshold": w.inspector.model.threshold,
            "recalibration": self._recal(name),
            "broker": self._stats_payload()["broker"],
            "failures_kept": w.live.failures.maxlen,
        }

    def history(self, name):
        w = self._worker(name)
        pts = list(w.live.history)
        try:
            since = float(bottle.request.query.get("since", "0"))
        except ValueError:
            bottle.abort(400, "since must be a unix time in seconds")
        return {"threshold": 1.0, "points": [[round(t, 3), s, f] for t, s, f in pts if t > since]}

    def failures(self, name):
        w = self._worker(name)
        base = f"/api/cameras/{name}/failures"
        listed = w.live.listed_failures(lambda f, s: render.failure_jpeg(f, s, self.cfg.jpeg_quality))
        items = [{"id": f.id, "timestamp": f.result["timestamp"], "frame_id": f.result["frame_id"],
                  "score": f.result["score"], "normalised_score": f.result["normalised_score"],
                  "model_version": f.result["model_version"],
                  "thumb": f"{base}/{f.id}.jpg?size=thumb", "image": f"{base}/{f.id}.jpg?size=large"}
                 for f in listed]
        return {"kept": w.live.failures.maxlen, "failures": items}

    def failure_image(self, name, fid):
        w = self._worker(name)
        size = bottle.request.query.get("size", "large")
        if size not in ("thumb", "large"):
            bottle.abort(400, "size must be thumb or large")
        data = w.live.failure_jpeg(fid, size, lambda f, s: render.failure_jpeg(f, s, self.cfg.jpeg_quality))
        if data is None:
            bottle.abort(404, "no such failure is kept (list them with /failures first)")
        bottle.response.content_type = "image/jpeg"
        bottle.response.set_header("Cache-Control", "private, max-age=60")
        return data

    def versions(self, name):
        w = self._worker(name)
        root = Path(w.cfg.model)
        active = w.inspector.model.version
        names = list_versions(root) or [active]
        out = []
        for v in reversed(names):
            m = {}
            try:
                m = json.loads((root / "versions" / v / MANIFEST).read_text())
            except (OSError, ValueError):
                pass  # a version dir given directly, or one being pruned right now
            bb, training = m.get("backbone") or {}, m.get("training") or {}
            out.append({"version": v, "active": v == active, "created": m.get("created_at"),
                        "backbone": bb.get("name") if isinstance(bb, dict) else bb, "threshold": m.get("threshold"),
                        "coreset_size": m.get("coreset_size"), "images": training.get("images")})
        return {"active": active, "current_file": current_version(root), "versions": out}

    # -- images ------------------------------------------------------------------------
    def _live(self, w, latest, heatmap: bool) -> bytes:
        return w.live.encoded(latest, ("live", heatmap), lambda lt: render.live_jpeg(
            lt, heatmap, self.cfg.live_max_side, self.cfg.jpeg_quality))

    def snapshot(self, name):
        w = self._worker(name)
        latest = w.live.latest
        if latest is None:  # 204, not an error: the page simply asks again
            return bottle.HTTPResponse(status=204)
        data = self._live(w, latest, self._heatmap_wanted())
        r = latest.result
        resp = bottle.response
        resp.content_type = "image/jpeg"
        # the verdict of exactly this frame, for clients that show both (the page does)
        resp.set_header("X-Frame-Id", str(r["frame_id"]))
        resp.set_header("X-Verdict", r["verdict"])
        resp.set_header("X-Score", str(r["score"]))
        resp.set_header("X-Normalised-Score", str(r["normalised_score"]))
        resp.set_header("X-Timestamp", r["timestamp"])
        return data

    def stream(self, name):
        w = self._worker(name)
        heatmap = self._heatmap_wanted()
        if not self.streams.acquire(blocking=False):
            bottle.abort(503, f"{self.cfg.max_streams} streams are already served (web.max_streams); "
                         "use snapshot.jpg or try later")
        bottle.response.content_type = "multipart/x-mixed-replace; boundary=frame"
        return Stream(self._frames(w, heatmap), self.streams.release)

    def _frames(self, w, heatmap: bool):
        period, sent = 1.0 / self.cfg.live_fps, -1
        while not self.stopping.is_set():
            latest = w.live.latest
            if latest is not None and latest.seq != sent:
                sent = latest.seq
                data = self._live(w, latest, heatmap)
                yield (b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: " + str(len(data)).encode()
                       + b"\r\n\r\n" + data + b"\r\n")
            self.stopping.wait(period)


class WebServer:
    """The station page on its own threads; `start` raises OSError when the port cannot be bound."""

    def __init__(self, cfg: WebConfig, daemon):
        self.cfg = cfg
        self.routes = StationApp(cfg, daemon)
        app = TokenGate(self.routes.app, cfg.token())
        self.server = Server((cfg.host, cfg.port), app, numthreads=cfg.threads, server_name="patchcore-edge",
                             timeout=10, shutdown_timeout=2)
        self.watchdog = deadline.install(self.server, cfg.header_timeout_s)
        self.thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self.server.bind_addr[1]

    def start(self) -> None:
        self.server.prepare()  # binds now, so a port in use is reported here
        self.watchdog.start()
        self.thread = threading.Thread(target=self.server.serve, name="web", daemon=True)
        self.thread.start()
        log.info("station page on http://%s:%d/", self.cfg.host, self.port)

    def stop(self) -> None:
        self.routes.stopping.set()
        self.watchdog.stop()
        self.server.stop()
        if self.thread:
            self.thread.join(timeout=5)
