"""Issue 11, storage and input hardening: names, work_dir cleanup, keep_versions, manifest and
graph-cache integrity, recalibration folders, and the smaller items (item numbers in names).
Real broker, real images, real models; every test on scratch copies."""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
import stat
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

from edge.config import CameraConfig, RecalibrationConfig, load_config
from edge.errors import ConfigError, ImageError, ModelError
from edge.modeldir import (CURRENT, MANIFEST, MANIFEST_HASH, ONNX, VERSIONS, current_version, list_versions,
                           load_model, set_current, write_version)
from edge.names import inside
from edge.preprocess import read_image

from .mqtt_helpers import Collector, ROOT, new_prefix, recalibration_station, start_daemon, write_config
from .test_recalibrate import SECRET, _send, _states, _why

UNSAFE_NAMES = [".", "..", "...", "-", "-x", ".hidden", "a/b", "..\\x", "$SYS", "a b", "+", "#", "x" * 65, ""]


def _cfg_file(tmp_path, cams: list[dict], **top) -> object:
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump({"cameras": cams, **top}))
    return f


# -- item 1: camera names -----------------------------------------------------------------------
@pytest.mark.parametrize("name", UNSAFE_NAMES)
def test_item1_unsafe_camera_names_are_refused_at_config_load(tmp_path, name):
    f = _cfg_file(tmp_path, [{"name": name, "source": 0, "model": "m"}])
    with pytest.raises(ConfigError, match=r"cameras\.0\.name"):
        load_config(f)


def test_item1_safe_names_still_load(tmp_path):
    f = _cfg_file(tmp_path, [{"name": n, "source": 0, "model": "m"} for n in ("cam1", "line-2.top", "A_b")])
    assert [c.name for c in load_config(f).cameras] == ["cam1", "line-2.top", "A_b"]


def test_item1_paths_built_from_names_stay_under_their_root(tmp_path):
    root = tmp_path / "root"
    (root / "inner").mkdir(parents=True)
    (root / "out").symlink_to(tmp_path)
    assert inside(root, "inner", "cam") == root.resolve() / "inner" / "cam"
    for parts in (("..",), (".",), ("inner", ".."), ("inner", "../../x"), ("/etc",), ("out", "x")):
        with pytest.raises(ConfigError, match="leaves"):
            inside(root, *parts)


def test_item1_recalibrator_never_deletes_the_model_for_a_dotdot_name(small_model, tmp_path):
    """What deleted a whole model directory: a camera `..` whose work folder was <model>/incoming/..
    (validation bypassed here on purpose: the path check must hold on its own)."""
    from edge.recalibrate import Recalibrator

    model = tmp_path / "model"
    shutil.copytree(small_model, model)
    cam = CameraConfig.model_construct(name="..", model=model, backend="onnxruntime")
    worker = SimpleNamespace(cfg=cam)
    # a secret checked at start, where the Recalibrator takes one (issue 11 item 6)
    extra = {"secret": (None, "disabled")} if "secret" in inspect.signature(Recalibrator).parameters else {}
    with pytest.raises(ConfigError, match="leaves"):
        Recalibrator(worker, link=None, prefix="p", cfg=RecalibrationConfig(), **extra)
    assert current_version(model) == "v0001" and load_model(model).version == "v0001"


# -- item 2: work_dir shared with the model directories ------------------------------------------
def test_item2_start_up_cleanup_leaves_the_model_dirs_in_work_dir_alone(small_model, bottle, tmp_path):
    """The README's layout: work_dir = the folder holding the model directories."""
    models = tmp_path / "models"
    shutil.copytree(small_model, models / "cam1")
    shutil.copytree(small_model, models / "cam2")
    from edge.workdir import WorkDir  # the folder names: <camera>-<hash of the owner, the daemon's state dir>

    owner = str((tmp_path / "patchcore-state").resolve())  # the default state dir beside d.yaml
    foreign = WorkDir(models, "cam1", owner, remove_base=False).path  # our folder name, but no marker
    foreign.mkdir(parents=True)
    (foreign / "keep.txt").write_text("not the daemon's")
    leftover = WorkDir(models, "cam2", owner, remove_base=False)  # ours, from a run killed mid-collection
    train, _ = leftover.make()
    (train / "00000.bmp").write_bytes(b"frame")
    leftover = leftover.path
    (tmp_path / "secret").write_bytes(SECRET)
    prefix = new_prefix()
    cams = [{"name": n, "source": str(bottle / "train/good"), "model": str(models / n), "fps": 20, "loop": True,
             "heatmap": {"mode": "off"}} for n in ("cam1", "cam2")]
    cfg = write_config(tmp_path / "d.yaml", prefix, cams,
                       recalibration={"secret_file": str(tmp_path / "secret"), "work_dir": str(models)})
    sub = Collector(prefix)
    p = start_daemon(cfg)
    try:
        assert sub.wait_for(lambda: len(sub.of("cam1/result")) >= 2 and len(sub.of("cam2/result")) >= 2, 60), \
            p.diagnose()
    finally:
        _, err = p.stop()
        sub.close()
    for n in ("cam1", "cam2"):
        assert current_version(models / n) == "v0001" and load_model(models / n).version == "v0001"
    assert (foreign / "keep.txt").read_text() == "not the daemon's"
    assert not leftover.exists()
    assert "not created by this patchcore-edge daemon" in err


# -- items 3, 10 and 13 (undecodable file): one recalibration from a folder ------------------------
def _entry_with_hash(cache, sha: str) -> tuple:
    for onnx in cache.glob("*.onnx"):
        if hashlib.sha256(onnx.read_bytes()).hexdigest() == sha:
            return onnx, onnx.with_suffix(".json")
    raise AssertionError(f"no cached graph with sha256 {sha} in {cache}")


def _poison(onnx_path, info_path) -> None:
    """What an attacker with write access to the cache would do: another graph, hash updated."""
    bad = b"not the graph the model was verified with"
    onnx_path.write_bytes(bad)
    meta = json.loads(info_path.read_text())
    if "onnx_sha256" in meta:
        meta["onnx_sha256"] = hashlib.sha256(bad).hexdigest()
    info_path.write_text(json.dumps(meta))


def test_items3_10_13_folder_recalibration_keeps_n_versions_checks_graph_skips_undecodable(
        small_model, bottle, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(small_model, model)
    v1 = load_model(model)
    onnx_bytes = (v1.path / ONNX).read_bytes()
    for _ in range(2):  # v0002, v0003 (current): a station that has recalibrated before
        write_version(model, {k: v for k, v in v1.manifest.items() if k != "version"}, v1.bank, onnx_bytes, keep=100)
    assert list_versions(model) == ["v0001", "v0002", "v0003"]
    images = tmp_path / "images"
    images.mkdir()
    for p in sorted((bottle / "train/good").glob("*.png"))[20:30]:
        shutil.copy(p, images)
    (images / "zz-broken.png").write_bytes(b"this is not a png")  # undecodable: skipped with a warning
    cache = tmp_path / "cache"
    shutil.copytree(os.environ["PATCHCORE_CACHE"], cache)
    for onnx in cache.glob("*.onnx"):
        _poison(onnx, onnx.with_suffix(".json"))
    (tmp_path / "secret").write_bytes(SECRET)
    prefix = new_prefix()
    cam = {"name": "cam", "source": str(bottle / "train/good"), "model": str(model), "fps": 15, "loop": True,
           "heatmap": {"mode": "off"}}
    cfg = write_config(tmp_path / "d.yaml", prefix, [cam],
                       recalibration={"secret_file": str(tmp_path / "secret"), "threads": 1, "keep_versions": 2})
    sub = Collector(prefix)
    p = start_daemon(cfg, env={"PATCHCORE_CACHE": str(cache)})
    try:
        assert sub.wait_for(lambda: len(sub.of("cam/result")) >= 1, 30)
        _send(sub, prefix, action="recalibrate", images=str(images), id="f1")
        assert sub.wait_for(lambda: _states(sub)[-1:] in (["failed"], ["active"]), 240), _why(sub, p)
        final = sub.json_of("cam/recalibrate/status")[-1]
        assert final["state"] == "active", final
    finally:
        _, err = p.stop()
        sub.close()
    # item 3: keep_versions=2 applied (the daemon prunes after activation; it used to keep 5)
    assert list_versions(model) == ["v0003", "v0004"] and current_version(model) == "v0004"
    # item 10: the poisoned cached graph was not used; the new version has the model's own graph
    v4 = load_model(model)
    assert v4.manifest["files"][ONNX] == v1.manifest["files"][ONNX]
    # item 13: the undecodable file was skipped with a warning, not an internal error
    assert "skipping" in err and "zz-broken.png" in err
    assert "internal error" not in json.dumps(sub.json_of("cam/recalibrate/status"))
    assert not (model / "incoming").exists()  # the work folder went with the attempt


# -- item 13: folders that make a recalibration meaningless ---------------------------------------
def test_item13_empty_bad_images_and_missing_images_are_refused_clearly(small_model, bottle, tmp_path):
    good = tmp_path / "good"
    good.mkdir()
    for p in sorted((bottle / "train/good").glob("*.png"))[20:28]:
        shutil.copy(p, good)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    prefix, model, cfg = recalibration_station(tmp_path, small_model, bottle, SECRET, fps=15)
    sub = Collector(prefix)
    p = start_daemon(cfg)

    def outcome(cid):
        assert sub.wait_for(lambda: any(m.get("id") == cid and m.get("state") in ("failed", "active")
                                        for m in sub.json_of("cam/recalibrate/status")), 240), _why(sub, p)
        return [m for m in sub.json_of("cam/recalibrate/status") if m.get("id") == cid][-1]

    try:
        assert sub.wait_for(lambda: len(sub.of("cam/result")) >= 1, 30)
        _send(sub, prefix, action="recalibrate", images=str(good), bad_images=str(empty), id="e1")
        m = outcome("e1")
        assert m["state"] == "failed" and "holds no images" in m["message"] and str(empty) in m["message"], m
        _send(sub, prefix, action="recalibrate", images=str(tmp_path / "nope"), id="e2")
        m = outcome("e2")
        assert m["state"] == "failed" and "does not exist" in m["message"], m
        assert "internal error" not in m["message"] and "Traceback" not in p.output()[1]
        assert "collecting" not in _states(sub)  # refused before any frame was collected
    finally:
        p.stop()
        sub.close()
    assert list_versions(model) == ["v0001"] and current_version(model) == "v0001"


# -- item 9: manifest integrity and CURRENT confinement --------------------------------------------
def test_item9_one_changed_byte_in_the_manifest_refuses_the_model(small_model, bottle, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(small_model, model)
    v = load_model(model).path
    assert subprocess.run(["sha256sum", "-c", MANIFEST_HASH], cwd=v, capture_output=True).returncode == 0
    text = (v / MANIFEST).read_text()
    thr = json.loads(text)["threshold"]
    edited = text.replace(f'"threshold": {thr}', f'"threshold": {thr + 70}')  # a defect would now pass
    assert edited != text
    (v / MANIFEST).write_text(edited)
    with pytest.raises(ModelError, match="changed after it was written"):
        load_model(model)
    r = subprocess.run([sys.executable, "-m", "patchcore_edge", "infer", "--model", str(model),
                        str(bottle / "test/good/000.png")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip() and " INFO " not in ln and " WARNING " not in ln]
    assert r.returncode != 0 and len(lines) == 1 and "changed after it was written" in lines[0], r.stderr
    (v / MANIFEST).write_text(text)
    (v / MANIFEST_HASH).unlink()
    with pytest.raises(ModelError, match=MANIFEST_HASH):
        load_model(model)


def test_item9_format1_model_without_hash_still_loads(small_model, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(small_model, model)
    v = load_model(model).path
    man = json.loads((v / MANIFEST).read_text())
    man["format_version"] = 1  # what every model written before this change looks like
    (v / MANIFEST).write_text(json.dumps(man))
    (v / MANIFEST_HASH).unlink()
    assert load_model(model).version == "v0001"


@pytest.mark.parametrize("current", ["../../other/versions/v0001", "{abs}", "v0001/../../../other/versions/v0001",
                                     "v1", "latest"])
def test_item9_current_resolves_only_inside_its_own_directory(small_model, tmp_path, current):
    model, other = tmp_path / "a" / "model", tmp_path / "other"
    shutil.copytree(small_model, model)
    shutil.copytree(small_model, other)
    current = current.replace("{abs}", str(other / VERSIONS / "v0001"))
    (model / CURRENT).write_text(current + "\n")
    with pytest.raises(ModelError, match="not a version name"):
        load_model(model)
    with pytest.raises(ModelError, match="not a version name"):
        set_current(model, current)


def test_item9_a_version_symlinked_out_of_the_directory_is_refused(small_model, tmp_path):
    model, other = tmp_path / "model", tmp_path / "other"
    shutil.copytree(small_model, model)
    shutil.copytree(small_model, other)
    (model / VERSIONS / "v0009").symlink_to(other / VERSIONS / "v0001")
    (model / CURRENT).write_text("v0009\n")
    with pytest.raises(ModelError, match="outside"):
        load_model(model)


# -- item 10: the graph cache is checked -----------------------------------------------------------
def test_item10_graph_cache_is_checked_against_the_recorded_hash(small_model, bottle, tmp_path, monkeypatch):
    from calibrate.build import RunOptions, calibrate
    from calibrate.settings import CalibrationSettings

    want = load_model(small_model).manifest["files"][ONNX]
    cache = tmp_path / "cache"
    shutil.copytree(os.environ["PATCHCORE_CACHE"], cache)
    monkeypatch.setenv("PATCHCORE_CACHE", str(cache))
    onnx_path, info_path = _entry_with_hash(cache, want)
    paths = sorted((bottle / "train/good").glob("*.png"))[:4]

    def graph_of_a_new_model(out, **kw) -> str:
        r = calibrate(CalibrationSettings(images=bottle / "train/good", output=tmp_path / out, coreset_ratio=0.02),
                      progress=lambda *a: None, run=RunOptions(image_paths=paths, **kw))
        return load_model(r.version_dir).manifest["files"][ONNX]

    # a damaged entry (its recorded hash not updated) is rebuilt, even without an expected hash
    onnx_path.write_bytes(onnx_path.read_bytes()[:-100])
    assert graph_of_a_new_model("m1") == want
    # a replaced entry with its hash updated: only the hash the model records catches it
    _poison(onnx_path, info_path)
    assert graph_of_a_new_model("m2", expect_onnx_sha256=want) == want
    assert hashlib.sha256(onnx_path.read_bytes()).hexdigest() == want  # and the cache entry is repaired


# -- item 14: the smaller ones ----------------------------------------------------------------------
def test_item14_config_tls_ca_prefix_dollar_and_heatmap_off(tmp_path):
    cam = {"name": "a", "source": 0, "model": "m"}
    f = _cfg_file(tmp_path, [cam], mqtt={"tls": {"ca": "missing-ca.pem"}})
    with pytest.raises(ConfigError, match=r"mqtt\.tls\.ca: file .*missing-ca\.pem does not exist"):
        load_config(f)
    for prefix in ("$SYS/x", "$share"):
        f = _cfg_file(tmp_path, [cam], mqtt={"prefix": prefix})
        with pytest.raises(ConfigError, match=r"mqtt\.prefix.*\$"):
            load_config(f)
    f = tmp_path / "h.yaml"
    f.write_text("cameras: [{name: a, source: 0, model: m, heatmap: {mode: off}}]\n")  # YAML 1.1: off -> false
    assert load_config(f).cameras[0].heatmap.mode == "off"


def test_item14_decoded_pixels_are_capped_and_tiny_images_refused(tmp_path):
    from PIL import Image

    # refused from the header: decoding either would take GBs (1.2 GB for 20000 x 20000 x 3)
    Image.new("1", (9000, 8000)).save(tmp_path / "big.png")  # 72 MP, a few kB on disk
    with pytest.raises(ImageError, match=r"9000x8000 \(72 MP\), more than the 64 MP limit"):
        read_image(tmp_path / "big.png")
    Image.new("1", (20000, 20000)).save(tmp_path / "huge.png")
    with pytest.raises(ImageError, match="more than the 64 MP limit"):
        read_image(tmp_path / "huge.png")
    Image.new("RGB", (1, 1)).save(tmp_path / "dot.png")
    with pytest.raises(ImageError, match=r"only 1x1 px; at least 32 px"):
        read_image(tmp_path / "dot.png")


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's group needs root")
def test_item14_install_service_config_is_readable_by_the_service_user(tmp_path):
    import pwd

    from edge.install import install

    install(tmp_path, "nobody", "/opt/pe/bin/patchcore-edge")
    st = os.stat(tmp_path / "etc/patchcore-edge/config.yaml")
    assert stat.S_IMODE(st.st_mode) == 0o640 and st.st_uid == 0 and st.st_gid == pwd.getpwnam("nobody").pw_gid
    secret = os.stat(tmp_path / "etc/patchcore-edge/recalibration-secret")
    assert stat.S_IMODE(secret.st_mode) == 0o600 and secret.st_gid == 0  # secrets go through LoadCredential=


def test_item14_model_version_file_modes_follow_one_rule(tmp_path):
    os.umask(0o022)
    root = tmp_path / "m"
    man = {"backbone": {"name": "x"}, "input_size": 224, "normalization": {"mean": [0.5] * 3, "std": [0.5] * 3},
           "grid": [28, 28], "threshold": 1.5, "score_stats": {"n": 3}}
    write_version(root, man, np.zeros((3, 4), np.float32), b"onnx")
    modes = {p.relative_to(root).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in root.rglob("*")}
    assert modes == {CURRENT: 0o640, VERSIONS: 0o750, f"{VERSIONS}/v0001": 0o750,
                     **{f"{VERSIONS}/v0001/{f}": 0o640 for f in (MANIFEST, MANIFEST_HASH, ONNX, "coreset.safetensors")}}


def test_item14_clear_text_password_warns_and_merged_triggers_are_counted(small_model, bottle, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(small_model, model)
    prefix = new_prefix()
    cam = {"name": "cam", "source": str(bottle / "train/good"), "model": str(model), "fps": 30,
           "loop": True, "trigger": "mqtt", "heatmap": {"mode": "off"}}
    cfg = write_config(tmp_path / "d.yaml", prefix, [cam])
    raw = yaml.safe_load(cfg.read_text())
    raw["mqtt"].update(username="station", password_env="PC_TEST_PW")  # the test broker allows anonymous
    cfg.write_text(yaml.safe_dump(raw))
    sub = Collector(prefix)
    p = start_daemon(cfg, env={"PC_TEST_PW": "secret-pw"})
    try:
        assert sub.wait_for(lambda: any(m == b"online" for m in sub.of("available")), 30), p.diagnose()
        assert sub.wait_for(lambda: sub.json_of("stats"), 30)
        for _ in range(300):  # a burst: far more triggers than the camera can judge
            sub.c.publish(f"{prefix}/cam/trigger", b"", qos=0)

        def counts():
            s = sub.json_of("stats")[-1]["cameras"]["cam"]
            return s.get("triggers"), s.get("triggers_merged"), s.get("results")

        assert sub.wait_for(lambda: counts()[0] == 300, 60), (counts(), p.diagnose())
        n, merged, _ = counts()
        assert sub.wait_for(lambda: len(sub.of("cam/result")) >= 1, 30)
        assert merged >= 1 and merged + len(sub.of("cam/result")) <= 300, counts()
        assert n == 300
    finally:
        _, err = p.stop()
        sub.close()
    assert "password in clear text" in err
