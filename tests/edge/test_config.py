import pytest

from edge.config import load_config
from edge.errors import ConfigError


def test_unknown_keys_are_rejected_with_their_path(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("cameras:\n  - name: a\n    source: 0\n    model: m\n    heatmap: {mode: every, qualty: 3}\n")
    with pytest.raises(ConfigError, match=r"cameras\.0\.heatmap\.qualty"):
        load_config(f)
    f.write_text("mqtt: {qos: 3}\ncameras: [{name: a, source: 0, model: m}]\n")
    with pytest.raises(ConfigError, match=r"mqtt\.qos"):
        load_config(f)
    f.write_text("cameras: [{name: a, source: 0, model: m}, {name: a, source: 1, model: m}]\n")
    with pytest.raises(ConfigError, match="unique"):
        load_config(f)


def test_relative_paths_and_password_sources(tmp_path, monkeypatch):
    (tmp_path / "pw").write_text("s3cret\n")
    f = tmp_path / "c.yaml"
    f.write_text("mqtt: {password_file: pw}\ncameras: [{name: a, source: imgs, model: m, roi: [0, 0, 40, 32]}]\n")
    cfg = load_config(f)
    assert cfg.cameras[0].model == (tmp_path / "m").resolve()
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert cfg.mqtt.password() == "s3cret"
    f.write_text("mqtt: {password_env: PC_PW}\ncameras: [{name: a, source: 0, model: m}]\n")
    with pytest.raises(ConfigError, match="PC_PW is not set"):
        load_config(f).mqtt.password()
    monkeypatch.setenv("PC_PW", "x")
    assert load_config(f).mqtt.password() == "x"


def _cfg(tmp_path, text):
    f = tmp_path / "c.yaml"
    f.write_text(text)
    return f


def test_roi_smaller_than_the_smallest_judgeable_image_is_refused(tmp_path):
    # a 1x1 crop was upscaled and passed every broken bottle with the same score (red team 4)
    for roi in ("[0, 0, 1, 1]", "[0, 0, 2, 900]", "[0, 0, 31, 32]"):
        with pytest.raises(ConfigError, match=r"cameras\.0\.roi: .*at least 32 px"):
            load_config(_cfg(tmp_path, f"cameras: [{{name: a, source: 0, model: m, roi: {roi}}}]\n"))
    assert load_config(_cfg(tmp_path, "cameras: [{name: a, source: 0, model: m, roi: [5, 5, 32, 32]}]\n"))


@pytest.mark.parametrize("prefix", ['"st\\0x"', '"a b"', '"a//b"', '"/x"', '"x\\u202e"', '"line\\t1"', "x" * 129])
def test_prefix_outside_the_safe_charset_or_too_long_is_refused(tmp_path, prefix):
    with pytest.raises(ConfigError, match=r"mqtt\.prefix"):
        load_config(_cfg(tmp_path, f"mqtt: {{prefix: {prefix}}}\ncameras: [{{name: a, source: 0, model: m}}]\n"))


def test_safe_prefixes_are_accepted(tmp_path):
    for prefix in ("factory/line1", "a.b:c-d_e", "x" * 128):
        f = _cfg(tmp_path, f"mqtt: {{prefix: {prefix}}}\ncameras: [{{name: a, source: 0, model: m}}]\n")
        assert load_config(f).mqtt.prefix == prefix


@pytest.mark.parametrize("field", ["recalibration: {max_age_s: .inf}", "recalibration: {build_timeout_s: .nan}",
                                   "recalibration: {max_collect_s: .inf}", "stats_interval_s: .inf",
                                   "gpu_batch_ms: .nan", "web: {live_fps: .inf}", "mqtt: {spool_max_mb: .nan}",
                                   "recalibration: {max_age_s: 1e12}"])
def test_non_finite_or_absurd_numbers_are_refused(tmp_path, field):
    with pytest.raises(ConfigError):
        load_config(_cfg(tmp_path, f"{field}\ncameras: [{{name: a, source: 0, model: m}}]\n"))


def test_non_finite_camera_number_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"cameras\.0\.stall_timeout_s"):
        load_config(_cfg(tmp_path, "cameras: [{name: a, source: 0, model: m, stall_timeout_s: .inf}]\n"))


@pytest.mark.parametrize("state", ["m", "m/versions", "m/versions/../state"])
def test_state_dir_inside_a_model_directory_is_refused(tmp_path, state):
    with pytest.raises(ConfigError, match="state_dir .* is inside the model directory"):
        load_config(_cfg(tmp_path, f"state_dir: {state}\ncameras: [{{name: a, source: 0, model: m}}]\n"))
    assert load_config(_cfg(tmp_path, "state_dir: st\ncameras: [{name: a, source: 0, model: m}]\n"))


def test_a_config_path_that_cannot_be_read_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match="cannot be read .*point --config at a UTF-8 YAML file"):
        load_config(tmp_path)  # a folder
    f = tmp_path / "latin1.yaml"
    f.write_bytes(b"mqtt: {prefix: caf\xe9}\n")
    with pytest.raises(ConfigError, match="cannot be read"):
        load_config(f)


LINE = "mqtt: {prefix: line}\ncameras: [{name: c, source: 0, model: m}]\n"


def test_max_false_reject_stays_below_one_half(tmp_path):
    with pytest.raises(ConfigError, match="recalibration.max_false_reject"):
        load_config(_cfg(tmp_path, LINE + "recalibration: {max_false_reject: 0.5}\n"))


def test_a_key_given_twice_is_refused_with_its_line(tmp_path):
    f = _cfg(tmp_path, LINE + "recalibration: {max_false_reject: 0.05}\nmqtt: {prefix: other}\n")
    with pytest.raises(ConfigError, match=r"key 'mqtt' is given twice in one mapping \(line 4\)"):
        load_config(f)
    f.write_text("cameras: [{name: c, source: 0, model: m, fps: 5, fps: 50}]\n")
    with pytest.raises(ConfigError, match="'fps' is given twice"):
        load_config(f)


CAM = "cameras: [{name: a, source: 0, model: m}]\n"


@pytest.mark.parametrize(("text", "key"), [
    ("mqtt: {port: yes}\n" + CAM, r"mqtt\.port"),                       # was port 1
    ("mqtt: {qos: true}\n" + CAM, r"mqtt\.qos"),                        # was QoS 1
    ("cameras: [{name: a, source: true, model: m}]\n", r"cameras\.0\.source"),  # was camera device 1
    ("cameras: [{name: a, source: 0, model: m, fps: on}]\n", r"cameras\.0\.fps"),
    ("cameras: [{name: a, source: 0, model: m, roi: [0, 0, 64, true]}]\n", r"cameras\.0\.roi"),
    ("recalibration: {nice: yes}\n" + CAM, r"recalibration\.nice"),
    ("web: {port: true}\n" + CAM, r"web\.port"),
    ("stats_interval_s: true\n" + CAM, "stats_interval_s"),
])
def test_a_bool_for_a_number_is_refused_in_one_line(tmp_path, text, key):
    # pydantic's lax mode read true (YAML 1.1: yes, on) as 1 for an int or float field
    with pytest.raises(ConfigError, match=key + r": .*must be a number.*not true/false") as e:
        load_config(_cfg(tmp_path, text))
    assert "\n" not in str(e.value)


def test_bools_numbers_and_yaml_off_still_read_as_before(tmp_path):
    cfg = load_config(_cfg(tmp_path, "mqtt: {port: 1884, spool_max_mb: 2}\nexit_when_done: yes\ncameras: [{name: a, "
                                     "source: '1', model: m, loop: true, fps: 5, heatmap: {mode: off}}]\n"))
    cam = cfg.cameras[0]
    assert (cfg.mqtt.port, cfg.mqtt.spool_max_mb, cfg.exit_when_done) == (1884, 2.0, True)
    assert (cam.source, cam.loop, cam.fps, cam.heatmap.mode) == ("1", True, 5.0, "off")


@pytest.mark.parametrize("text, key", [
    ('mqtt: {client_id: "a\\0b"}', r"mqtt\.client_id: .*without control characters"),  # the broker dropped every CONNECT
    ('mqtt: {client_id: "tab\\there"}', r"mqtt\.client_id"),
    ('mqtt: {host: "[::1]"}', r"mqtt\.host: .*no brackets"),  # getaddrinfo does not resolve it
    ("mqtt: {client_id: " + "x" * 129 + "}", r"mqtt\.client_id"),
    ('mqtt: {host: "broker\\0.evil"}', r"mqtt\.host: .*host name or an IP"),  # the resolver cut it at the NUL
    ('mqtt: {host: "a b"}', r"mqtt\.host"),
    ('sparkplug: {group_id: g, edge_node_id: n, client_id: "a\\nb"}', r"sparkplug\.client_id"),
])
def test_client_ids_and_hosts_with_control_characters_are_refused(tmp_path, text, key):
    with pytest.raises(ConfigError, match=key):
        load_config(_cfg(tmp_path, f"{text}\ncameras: [{{name: a, source: 0, model: m}}]\n"))


def test_usual_hosts_and_client_ids_are_accepted(tmp_path):
    for host, cid in (("broker.plant.local", "line-1/cam_a"), ("::1", "x" * 128), ("fe80::1%eth0", "a"),
                      ("10.0.0.7", "station Köln 7")):
        cfg = load_config(_cfg(tmp_path, f'mqtt: {{host: "{host}", client_id: "{cid}"}}\n'
                                         "cameras: [{name: a, source: 0, model: m}]\n"))
        assert (cfg.mqtt.host, cfg.mqtt.client_id) == (host, cid)


def test_fps_below_one_frame_a_day_is_refused(tmp_path):
    # 1e-300 frames/s overflowed the capture thread's time arithmetic and killed it silently
    with pytest.raises(ConfigError, match=r"cameras\.0\.fps: .*one frame a day"):
        load_config(_cfg(tmp_path, "cameras: [{name: a, source: 0, model: m, fps: 1.0e-300}]\n"))
    assert load_config(_cfg(tmp_path, "cameras: [{name: a, source: 0, model: m, fps: 0.0001}]\n"))


def test_relative_recalibration_work_dir_is_relative_to_the_file(tmp_path, monkeypatch):
    # it was resolved against the daemon's working directory ('/' under systemd)
    monkeypatch.chdir("/")
    cfg = load_config(_cfg(tmp_path, "recalibration: {work_dir: frames}\ncameras: [{name: a, source: 0, model: m}]\n"))
    assert cfg.recalibration.work_dir == (tmp_path / "frames").resolve()


def test_a_file_that_is_not_a_mapping_or_an_empty_path_is_said_in_plain_words(tmp_path):
    # the messages named pydantic's classes: "instance of CalibrationFile", "<class 'pathlib.Path'>"
    with pytest.raises(ConfigError, match="must be a mapping of settings .*not a list") as e:
        load_config(_cfg(tmp_path, "- a\n- b\n"))
    assert "instance of" not in str(e.value)
    with pytest.raises(ConfigError, match=r"cameras\.0\.model: a path is needed here") as e:
        load_config(_cfg(tmp_path, "cameras:\n  - name: a\n    source: 0\n    model:\n"))
    assert "class" not in str(e.value)
