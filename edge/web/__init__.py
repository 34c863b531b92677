"""The station web page: a read-only view of what each camera sees, served by the daemon.

config.py   the `web:` section of the daemon config
state.py    what camera threads hand over (newest frame slot, score history, failure ring)
render.py   the JPEGs people look at (live view with ROI and heatmap, failure images)
server.py   HTTP routes (bottle) on a thread-pooled WSGI server (cheroot), access token
static/     the page itself (HTML, JS, CSS), shipped as package data
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def attach(daemon):
    """Give each camera worker its LiveState and return the (not yet started) WebServer, or
    None when the page is off. bottle and cheroot are imported only when the page is on."""
    cfg = daemon.cfg.web
    if not cfg.enabled:
        return None
    from .server import WebServer
    from .state import LiveState

    for w in daemon.workers.values():
        w.live = LiveState(failures=cfg.failures, history=cfg.history)
    return WebServer(cfg, daemon)


def start(server) -> bool:
    """Start the page; a port that cannot be bound is logged and inspection goes on without it."""
    try:
        server.start()
        return True
    except OSError as e:
        log.error("station page not started: cannot listen on %s:%d (%s); set web.port/web.host. Inspection "
                  "goes on without the page", server.cfg.host, server.cfg.port, e.strerror or e)
        return False
