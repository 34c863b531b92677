import socket

from .mqtt_helpers import Collector, new_prefix, start_daemon, write_config


def test_daemon_sends_ready_and_watchdog_to_notify_socket(small_model, bottle, tmp_path):
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(30)
    prefix = new_prefix()
    sub = Collector(prefix)
    cam = {"name": "c", "source": str(bottle / "test/good"), "model": str(small_model), "fps": 5, "loop": True}
    p = start_daemon(write_config(tmp_path / "d.yaml", prefix, [cam]),
                     env={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "400000"})
    got = []
    try:
        while not (any(m.startswith("READY=1") for m in got) and got.count("WATCHDOG=1") >= 2):
            got.append(sock.recv(4096).decode())
    finally:
        _, err = p.stop()
        sock.close()
        sub.close()
    assert got[0].startswith("READY=1") and "STATUS=inspecting c" in got[0]
    assert p.returncode == 0, err
