"""A real network camera for tests: an HTTP MJPEG stream of real images that OpenCV's FFmpeg reads.

`stop()` closes every connection and the listening socket, as a camera that loses power or
network does; `start()` brings it back on the same port.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2


class MjpegCamera:
    def __init__(self, images: list[Path], fps: float = 20.0):
        self.jpegs = [cv2.imencode(".jpg", cv2.imread(str(p)))[1].tobytes() for p in images]
        self.period, self.port = 1.0 / fps, 0
        self.server: ThreadingHTTPServer | None = None
        self.alive = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/stream.mjpg"

    def start(self) -> MjpegCamera:
        cam = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                i = 0
                try:
                    while cam.alive.is_set():
                        jpg = cam.jpegs[i % len(cam.jpegs)]
                        i += 1
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n%s\r\n"
                                         % (len(jpg), jpg))
                        time.sleep(cam.period)
                except OSError:
                    pass  # the client went away

            def log_message(self, *args):
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.alive.set()
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __enter__(self) -> MjpegCamera:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self.alive.clear()  # handlers return and their connections close
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
