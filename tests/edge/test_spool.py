"""The spool file and the state directory (edge/spool.py, edge/statedir.py) on real files."""

from __future__ import annotations

import json

import pytest

from edge.errors import ConfigError
from edge.spool import SPOOL_FILE, load_spool, write_spool
from edge.statedir import StateDir


def test_spool_file_bounds_and_hostile_content(tmp_path):
    msgs = [("p/c/result", json.dumps({"frame_id": i}).encode(), 1, False) for i in range(10)]
    msgs.append(("p/c/state", b"s9", 1, True))
    kept, dropped = write_spool(tmp_path, msgs, max_messages=5, max_bytes=10**6)
    assert (kept, dropped) == (5, 6)  # the newest five: results 6..9 and the state
    got, before = load_spool(tmp_path, "p", 100)
    assert before == 6 and [m[1] for m in got] == [b'{"frame_id": 6}', b'{"frame_id": 7}', b'{"frame_id": 8}',
                                                    b'{"frame_id": 9}', b"s9"]
    one = len((tmp_path / SPOOL_FILE).read_text().splitlines()[1]) + 1
    assert write_spool(tmp_path, msgs, 100, 3 * one) == (3, 8)  # the byte cap
    assert write_spool(tmp_path, [], 100, 10**6) == (0, 0) and not (tmp_path / SPOOL_FILE).exists()
    # a foreign topic (another prefix, a wildcard) ends the replay there; the file is kept aside
    write_spool(tmp_path, msgs[:2] + [("other/x", b"evil", 1, False)] + msgs[2:4], 100, 10**6)
    got, _ = load_spool(tmp_path, "p", 100)
    assert len(got) == 2 and (tmp_path / "spool.corrupt").is_file() and not (tmp_path / SPOOL_FILE).exists()
    (tmp_path / SPOOL_FILE).write_text("not json\n")
    assert load_spool(tmp_path, "p", 100) == ([], 0)
    # nesting and line length cannot exhaust the stack or memory: the lines before are replayed
    write_spool(tmp_path, msgs[:1], 100, 10**6)
    with open(tmp_path / SPOOL_FILE, "ab") as f:
        f.write(b"[" * 200000 + b"\n" + b"x" * (3 << 20) + b"\n")
    got, _ = load_spool(tmp_path, "p", 100)
    assert len(got) == 1
    write_spool(tmp_path, msgs[:1], 100, 10**6)
    with open(tmp_path / SPOOL_FILE, "ab") as f:
        f.write(b"x" * (3 << 20) + b"\n")
    assert len(load_spool(tmp_path, "p", 100)[0]) == 1


def test_state_dir_run_counter_and_lock(tmp_path):
    a = StateDir(tmp_path / "s")
    assert [a.next_run_id(), a.next_run_id()] == [1, 2]
    with pytest.raises(ConfigError, match="in use by another"):
        StateDir(tmp_path / "s")
    a.close()
    b = StateDir(tmp_path / "s")
    assert b.next_run_id() == 3
    (tmp_path / "s/run_id").write_text("garbage")
    with pytest.raises(ConfigError, match="not a run counter"):
        b.next_run_id()
    b.close()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="cannot be created or written"):
        StateDir(tmp_path / "file" / "s")


def test_inspection_errors_are_counted_with_the_last_one_and_its_age():
    from edge.stats import CameraStats

    s = CameraStats()
    assert (s.snapshot()["errors"], s.snapshot()["last_error"], s.snapshot()["last_error_s"]) == (0, None, None)
    s.error("ValueError: a")
    s.error("ValueError: b")
    snap = s.snapshot()
    assert snap["errors"] == 2 and snap["last_error"] == "ValueError: b" and 0 <= snap["last_error_s"] < 5
