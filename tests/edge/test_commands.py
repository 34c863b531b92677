"""Command format v2 (edge/commands.py) and the id store (edge/nonces.py), without a broker."""

from __future__ import annotations

import json
import time

import pytest

from edge.commands import MAX_PAYLOAD, CommandError, encode, parse, sign
from edge.nonces import SeenIds

SECRET = b"0123456789abcdef-test-secret"
LIMITS = {"max_age_s": 120.0, "max_frames": 2000, "max_collect_s": 1800.0}


def _parse(payload: bytes, station="line1", camera="cam", secret=SECRET):
    return parse(payload, secret, station, camera, **LIMITS)


def _signed_body(body: str) -> bytes:
    raw = body.encode()
    return sign(raw, SECRET).encode() + b"\n" + raw


def _why(payload: bytes, **kw) -> str:
    with pytest.raises(CommandError) as e:
        _parse(payload, **kw)
    return str(e.value)


def test_round_trip_and_binding_to_station_camera():
    p = encode({"action": "rollback", "id": "a1"}, SECRET, "line1", "cam")
    cmd = _parse(p)
    assert (cmd.action, cmd.id, cmd.station, cmd.camera) == ("rollback", "a1", "line1", "cam")
    assert "signed for station 'line1' camera 'cam'" in _why(p, camera="twin")
    assert "this is station 'line2'" in _why(p, station="line2")


def test_signature_covers_every_byte_of_the_body():
    p = encode({"action": "threshold", "id": "a2", "scale": 0.9}, SECRET, "line1", "cam")
    assert "invalid hmac" in _why(p.replace(b"0.9", b"9.0"))  # the action's numbers
    assert "invalid hmac" in _why(p.replace(b'"threshold"', b'"rollback" '))  # the action itself
    assert "invalid hmac" in _why(p, secret=b"another-secret-of-16-bytes")


@pytest.mark.parametrize("ts", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_numbers_are_refused(ts):
    body = f'{{"v":2,"station":"line1","camera":"cam","action":"rollback","id":"n","ts":{ts}}}'
    assert "finite" in _why(_signed_body(body))
    body = f'{{"v":2,"station":"line1","camera":"cam","action":"threshold","id":"n","ts":{time.time()},"value":{ts}}}'
    assert "finite" in _why(_signed_body(body))


def test_size_then_hmac_then_one_parse():
    """The order of the checks shows in the reasons: a correctly signed 9 MB command is refused
    for its size (no HMAC over it, no parse), and a body that is not JSON under a wrong hmac
    is refused for the hmac (never parsed)."""
    body = b'{"v":2,"station":"line1","camera":"cam","action":"rollback","id":"big","ts":1,"x":"' + b"a" * 9_000_000 + b'"}'
    assert f"command is {65 + len(body)} bytes; the limit is {MAX_PAYLOAD}" in _why(_signed_body(body.decode()))
    assert "invalid hmac" in _why(b"0" * 64 + b"\n{not json")
    assert "not JSON" in _why(_signed_body("{not json"))


def test_malformed_signatures_get_a_reason():
    body = b'{"v":2,"station":"line1","camera":"cam","action":"rollback","id":"x","ts":1}'
    assert "64 lowercase hex digits" in _why("é".encode() * 32 + b"\n" + body)  # non-ASCII hmac
    assert "64 lowercase hex digits" in _why(sign(body, SECRET).upper().encode() + b"\n" + body)
    assert "64 lowercase hex digits" in _why(b"not json")
    assert "format v1" in _why(json.dumps({"action": "rollback", "id": "x", "ts": 1, "hmac": "00"}).encode())


def test_deep_nesting_and_bad_fields_are_reasons_not_crashes():
    deep = '{"v":2,"station":"line1","camera":"cam","action":"rollback","id":"d","ts":1,"x":' + "[" * 5000 + "]" * 5000 + "}"
    assert "nested too deeply" in _why(_signed_body(deep))
    assert "is not supported" in _why(_signed_body('{"v":1}'))
    assert "must be a JSON object" in _why(_signed_body("[2]"))
    p = encode({"action": "rollback", "id": "f", "frames": 12}, SECRET, "line1", "cam")
    assert "do not belong to action 'rollback'" in _why(p)
    p = encode({"action": "threshold", "id": "f"}, SECRET, "line1", "cam")
    assert "exactly one of 'value'" in _why(p)
    p = encode({"action": "threshold", "id": "f", "value": -1.0}, SECRET, "line1", "cam")
    assert "bad command field value" in _why(p)
    for key, folder in (("images", "frames/good"), ("bad_images", ""), ("bad_images", "../x")):
        fields = {"action": "recalibrate", "id": "p", "frames": 12} if key == "bad_images" else \
            {"action": "recalibrate", "id": "p"}
        p = encode({**fields, key: folder}, SECRET, "line1", "cam")
        assert f"bad command field {key}" in _why(p) and "absolute path" in _why(p), folder
    assert _parse(encode({"action": "recalibrate", "id": "p", "images": "/srv/good"}, SECRET, "line1",
                         "cam")).images.is_absolute()


@pytest.mark.parametrize("action,key", [("recalibrate", "coreset_ratio"), ("recalibrate", "interval_s"),
                                        ("threshold", "value"), ("threshold", "scale")])
def test_true_is_not_a_number(action, key):
    # pydantic's lax mode read true as 1: "coreset_ratio": true would have kept every patch
    base = {"action": action, "id": "b", **({"frames": 12} if action == "recalibrate" else {})}
    why = _why(encode({**base, key: True}, SECRET, "line1", "cam"))
    assert f"bad command field {key}" in why and "must be a number, not true/false" in why
    assert "\n" not in why and "YAML" not in why
    assert getattr(_parse(encode({**base, key: 1}, SECRET, "line1", "cam")), key) == 1.0


def test_stale_ts_and_collection_bound():
    p = encode({"action": "rollback", "id": "s", "ts": time.time() - 500}, SECRET, "line1", "cam")
    assert "off the station clock" in _why(p)
    p = encode({"action": "recalibrate", "id": "c", "frames": 3, "interval_s": 3600}, SECRET, "line1", "cam")
    assert "exceeds recalibration.max_collect_s (1800 s)" in _why(p)
    p = encode({"action": "recalibrate", "id": "c", "frames": 100, "interval_s": 18}, SECRET, "line1", "cam")
    assert _parse(p).frames == 100  # exactly at the bound


def test_ids_are_refused_a_second_time_and_survive_a_restart(tmp_path):
    seen = SeenIds(tmp_path)
    now = time.time()
    seen.claim("op-1", now, 120)
    with pytest.raises(CommandError, match="already used"):
        seen.claim("op-1", now, 120)
    with pytest.raises(CommandError, match="already used"):
        SeenIds(tmp_path).claim("op-1", now, 120)  # a restarted daemon reads the store
    seen.claim("old", now - 500, 120)  # outside this window, yet kept: a larger max_age_s would accept its ts
    seen.claim("old", now - 400, 120)  # the same id reused outside the window: accepted
    with pytest.raises(CommandError, match="already used"):
        SeenIds(tmp_path).claim("old", now - 400, 600)


def test_id_store_is_bounded(tmp_path, monkeypatch):
    import edge.nonces as nonces

    monkeypatch.setattr(nonces, "MAX_IDS", 3)
    seen = SeenIds(tmp_path)
    for i in range(3):
        seen.claim(f"id{i}", time.time(), 120)
    with pytest.raises(CommandError, match="refused until older ids expire"):
        seen.claim("id3", time.time(), 120)


def test_secret_checked_once_with_a_reason(tmp_path, caplog):
    from edge.command_secret import load_command_secret
    from edge.config import RecalibrationConfig

    assert load_command_secret(RecalibrationConfig())[1].endswith("no recalibration.secret_file")
    short = tmp_path / "short"
    short.write_bytes(b"too-short")
    secret, why = load_command_secret(RecalibrationConfig(secret_file=short))
    assert secret is None and "fewer than 16 bytes" in why
    good = tmp_path / "good"
    good.write_bytes(SECRET + b"\n")
    good.chmod(0o600)
    caplog.clear()
    assert load_command_secret(RecalibrationConfig(secret_file=good)) == (SECRET, None)
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    good.chmod(0o640)
    load_command_secret(RecalibrationConfig(secret_file=good))
    assert "mode 0640" in caplog.text and "chmod 600" in caplog.text


def _body(**fields) -> str:
    return json.dumps({"v": 2, "station": "line1", "camera": "cam", "id": "x1", "ts": time.time(), **fields})


def test_a_field_given_twice_is_refused():
    # {"action":"cancel","action":"threshold"} applied the threshold (the parser kept the last)
    body = _body(action="cancel")[:-1] + ', "action": "threshold", "scale": 2}'
    assert "gives 'action' twice" in _why(_signed_body(body))


@pytest.mark.parametrize("field, value", [("scale", '"2.0"'), ("value", '"12"'), ("frames", '"5"'), ("ts", '"1"'),
                                          ("frames", "5.0")])
def test_numbers_must_be_json_numbers_of_the_right_kind(field, value):
    fields = {"action": "threshold", "scale": 2} if field in ("scale", "ts") else \
        {"action": "threshold", "value": 2} if field == "value" else {"action": "recalibrate", "frames": 5}
    body = json.loads(_body(**fields))
    body[field] = "@"
    text = json.dumps(body).replace('"@"', value)
    assert f"bad command field {field}" in _why(_signed_body(text))


def test_a_huge_integer_is_refused_in_plain_words():
    body = _body(action="recalibrate").replace('"action"', '"frames": ' + "9" * 5000 + ', "action"')
    assert "5000-digit integer" in _why(_signed_body(body))


def test_refusals_say_whether_the_id_is_the_signed_one():
    with pytest.raises(CommandError) as e:  # unsigned: the id it quotes may be anybody's
        _parse(b"x" + json.dumps({"id": "x1"}).encode())
    assert e.value.authenticated is False and e.value.replay is False
    with pytest.raises(CommandError) as e:  # signed, but for another camera: the id is the sender's own
        _parse(encode({"action": "rollback", "id": "a1"}, SECRET, "line1", "cam"), camera="twin")
    assert e.value.authenticated is True


def test_a_replayed_id_is_marked_as_a_replay(tmp_path):
    seen = SeenIds(tmp_path)
    seen.claim("r1", time.time(), 120.0)
    with pytest.raises(CommandError) as e:
        seen.claim("r1", time.time(), 120.0)
    assert e.value.authenticated and e.value.replay


@pytest.mark.parametrize("layers", ["99", "16,8", "3", "8,8"])
def test_layers_a_build_would_refuse_are_refused_with_the_command(layers):
    # "99" was refused only by the build, after every frame had been collected
    p = encode({"action": "recalibrate", "id": "l1", "frames": 5, "layers": layers}, SECRET, "line1", "cam")
    assert "bad command field layers" in _why(p) and "strides from 2, 4, 8, 16, 32" in _why(p)
    ok = encode({"action": "recalibrate", "id": "l2", "frames": 5, "layers": "4,8,16"}, SECRET, "line1", "cam")
    assert _parse(ok).layers == "4,8,16"
