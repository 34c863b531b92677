"""A flood of unsigned commands (anyone who may publish on +/recalibrate can send one) against
a running daemon and the real Mosquitto: results keep flowing, the log stays small, refusals
are counted in the stats, and a signed command sent after the flood is still carried out."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest

from edge.modeldir import current_version

from .mqtt_helpers import Collector, recalibration_station, start_daemon
from .test_recalibrate import SECRET, _send, _why

FLOODS, PER_FLOOD = 3, 20000


@pytest.mark.skipif(shutil.which("mosquitto_pub") is None, reason="needs mosquitto_pub (mosquitto-clients)")
def test_unsigned_flood_does_not_stop_results_or_fill_the_log(small_model, bottle, tmp_path):
    prefix, model, cfg = recalibration_station(tmp_path, small_model, bottle, SECRET, fps=4)
    sub = Collector(prefix)
    p = start_daemon(cfg)
    try:
        assert sub.wait_for(lambda: len(sub.of("cam/result")) >= 3, 60), p.diagnose()
        garbage = "".join(f"garbage-{i}\n" for i in range(PER_FLOOD)).encode()
        start, counts = time.monotonic(), []
        for _ in range(FLOODS):  # each burst takes the broker well under a second to deliver
            subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-t", f"{prefix}/cam/recalibrate", "-l", "-q", "0"],
                           input=garbage, check=True, timeout=60)
            end = time.monotonic() + 1.0
            while time.monotonic() < end:
                counts.append((time.monotonic(), len(sub.of("cam/result"))))
                time.sleep(0.1)
        end = time.monotonic() + 6.0  # and the seconds right after, when the old code was still stalled
        while time.monotonic() < end:
            counts.append((time.monotonic(), len(sub.of("cam/result"))))
            time.sleep(0.1)
        during = counts[-1][1] - counts[0][1]
        gaps, last = [], counts[0]
        for t, n in counts:  # longest time without a new result
            if n > last[1]:
                gaps.append(t - last[0])
                last = (t, n)
        gaps.append(counts[-1][0] - last[0])
        took = time.monotonic() - start
        print(f"{FLOODS}x{PER_FLOOD} unsigned commands: {during} results in {took:.1f} s at fps 4, "
              f"longest gap {max(gaps):.1f} s")
        # 4 fps for ~10 s would be 40 (measured 40, longest gap 1.1 s; 7 and 3.4 s on a machine at load 13);
        # the old handling on paho's network thread: 1 result, longest gap 10.1 s
        assert during >= 5 and max(gaps) < 6, (during, max(gaps))

        stats = {}
        assert sub.wait_for(lambda: stats.update(sub.json_of("stats")[-1]) or
                            stats["recalibration"]["commands"]["cam"]["refused"] >= FLOODS * PER_FLOOD // 2, 60), stats
        # the signed command after the flood is still carried out (the queue drained, nothing stuck)
        _send(sub, prefix, action="threshold", scale=1.5, id="after-flood")
        assert sub.wait_for(lambda: any(m.get("id") == "after-flood" and m.get("state") == "active"
                                        for m in sub.json_of("cam/recalibrate/status")), 60), _why(sub, p)
        assert current_version(model) == "v0002"
        # the flood's tail is summarised in one line with its count once the 10 s window has passed
        assert sub.wait_for(lambda: "more commands refused" in p.output()[1], 30), p.output()[1][-3000:]
    finally:
        _, err = p.stop()
        sub.close()
    refused_lines = [line for line in err.splitlines() if "command refused" in line]
    print(f"{len(refused_lines)} log lines, {len(err)} bytes of log; stats {stats['recalibration']['commands']}")
    assert len(refused_lines) <= 10 and len(err) < 50_000, err[-3000:]  # was one 150-byte line per message
    answered = sum("rejected" in m for m in sub.json_of("cam/recalibrate/status"))
    assert answered <= 200, answered  # rate-limited answers, not one retained publish per forged message
    assert stats["recalibration"]["commands"]["cam"]["refused_unanswered"] > FLOODS * PER_FLOOD // 2
