"""systemd notification (sd_notify): READY=1, WATCHDOG=1, STATUS=... over $NOTIFY_SOCKET.

A no-op without NOTIFY_SOCKET (not started by systemd). The protocol is one datagram on a
unix socket; abstract socket names start with '@'.
"""

from __future__ import annotations

import os
import socket


def notify(state: str) -> bool:
    """Send one notification; returns whether a socket was there to send to."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
        s.connect(addr)
        s.sendall(state.encode())
    return True


def watchdog_interval() -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WatchdogSec), or None when not enabled."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and int(pid) != os.getpid()):
        return None
    return int(usec) / 2e6
