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
    f.write_text("mqtt: {password_file: pw}\ncameras: [{name: a, source: imgs, model: m, roi: [0, 0, 10, 10]}]\n")
    cfg = load_config(f)
    assert cfg.cameras[0].model == (tmp_path / "m").resolve()
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert cfg.mqtt.password() == "s3cret"
    f.write_text("mqtt: {password_env: PC_PW}\ncameras: [{name: a, source: 0, model: m}]\n")
    with pytest.raises(ConfigError, match="PC_PW is not set"):
        load_config(f).mqtt.password()
    monkeypatch.setenv("PC_PW", "x")
    assert load_config(f).mqtt.password() == "x"
