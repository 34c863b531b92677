"""A deadline on reading a request's line and headers (against slowloris).

cheroot hands a connection to a worker thread as soon as its first bytes arrive, and its
`timeout` applies to each socket read: a client that sends half a request and then nothing
(or a byte every few seconds) holds a worker thread for 10 s (or forever). A few dozen such
sockets held every worker and the token check, which runs only after the headers are read,
never got to refuse them. Here a watchdog shuts the socket of any request whose headers are
not complete within `header_timeout_s`: the blocked read returns end-of-file, cheroot drops
the connection and the worker is free again. As in nginx (client_header_timeout), the first
request's time counts from the connection's accept, so sockets that waited in the queue
behind busy workers are cut as soon as one picks them up, not after another full timeout.
"""

from __future__ import annotations

import socket
import threading
import time

from cheroot.server import HTTPConnection, HTTPRequest


class HeaderWatchdog:
    """Sockets reading headers, with their deadlines; a thread shuts those that pass it."""

    def __init__(self, timeout_s: float):
        self.timeout_s = timeout_s
        self.pending: dict[socket.socket, float] = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.dropped = 0  # connections cut for slow headers
        self.thread = threading.Thread(target=self._run, name="web-header-deadline", daemon=True)

    def arm(self, sock, since: float) -> None:
        with self.lock:
            self.pending[sock] = since + self.timeout_s

    def disarm(self, sock) -> None:
        with self.lock:
            self.pending.pop(sock, None)

    def _run(self) -> None:
        period = min(0.25, self.timeout_s / 4)
        while not self.stopping.wait(period):
            now = time.monotonic()
            with self.lock:
                late = [s for s, t in self.pending.items() if t <= now]
                for s in late:
                    del self.pending[s]
            for s in late:
                self.dropped += 1
                try:
                    s.shutdown(socket.SHUT_RDWR)  # wakes the worker blocked in recv with end-of-file
                except OSError:
                    pass  # already closed by the client

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()


class _DeadlineRequest(HTTPRequest):
    def parse_request(self):
        watchdog = self.server.header_watchdog
        since, self.conn.accepted = self.conn.accepted or time.monotonic(), None  # later requests: from now
        watchdog.arm(self.conn.socket, since)
        try:
            super().parse_request()
        finally:
            watchdog.disarm(self.conn.socket)


class DeadlineConnection(HTTPConnection):
    """cheroot connection whose requests must deliver their headers within the watchdog's time."""
    RequestHandlerClass = _DeadlineRequest

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.accepted: float | None = time.monotonic()


def install(server, timeout_s: float) -> HeaderWatchdog:
    """Give a cheroot server a header deadline; the returned watchdog is started and stopped with it."""
    server.header_watchdog = HeaderWatchdog(timeout_s)
    server.ConnectionClass = DeadlineConnection
    return server.header_watchdog
