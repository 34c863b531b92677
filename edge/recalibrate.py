"""Live recalibration of one camera while its old model keeps judging frames.

States on the retained `<prefix>/<camera>/recalibrate/status`: idle, collecting, building,
validating, active, failed, cancelled, disabled (no usable secret; the reason in `message`);
a refused command is reported in `rejected`, leaving the state as it was. The same topic
takes the `rollback`, `cancel` and `threshold` actions (edge/commands.py). The calibration
itself runs in a child process (`patchcore-edge calibrate --no-activate --json-progress`,
started by absolute path with an isolated interpreter; the contract: edge/calibration_child.py),
niced and limited to a few threads, so a crash or out-of-memory there cannot take inspection
down and `edge/` never imports `calibrate/`.
The new version is written beside the old one, validated, and only then made current
(an atomic rename of CURRENT) and swapped into the worker with one attribute assignment:
no frame is ever scored by a half-loaded model, and every result names its version.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import cv2

from .command_inbox import CommandInbox, Refusals
from .calibration_child import DONE, JSON_PROGRESS, NO_ACTIVATE, child_command, percent, read_line
from .command_secret import load_command_secret
from .commands import Command, CommandError, claimed_id, parse, rejection
from .config import RecalibrationConfig
from .errors import ImageError, PatchcoreError
from .geometry import Geometry
from .gpu import open_inspector
from .inspector import Inspector
from .modeldir import ONNX, current_version, list_versions, load_model, prune, remove_stale, set_current, version_number
from .nonces import SeenIds
from .preprocess import list_images, read_image
from .retune import write_threshold_version
from .topics import Topics
from .workdir import WorkDir, WorkInUse

log = logging.getLogger(__name__)



class RecalibrationFailed(Exception):
    pass


class Cancelled(Exception):
    pass


def start_child(args: list[str], env: dict, stderr, nice: int) -> subprocess.Popen:
    """Start a child with stdout piped, then lower its priority by `nice`.

    Never with preexec_fn: that forces a real fork(), whose atfork handlers include
    OpenBLAS's, which joins its worker threads and deadlocks (with the GIL held: the whole
    daemon freezes) when another thread is inside a BLAS call, as the inspection threads
    always are. Without it CPython (>= 3.10) starts the child with vfork, which runs no
    atfork handlers. Seen in full test runs; reproduced by tests/edge/test_spawn.py.
    """
    child = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env)
    if nice:
        try:
            os.setpriority(os.PRIO_PROCESS, child.pid, nice)
        except OSError as e:
            log.warning("cannot lower the calibration's priority: %s", e)
    return child


class ModelDirs:
    """One daemon's cameras by model directory. Cameras may share one (identical stations
    judged by one model): one recalibration per directory at a time, and an activation
    switches every camera on it."""

    def __init__(self):
        self.lock = threading.Lock()
        self.busy: dict[Path, str] = {}  # model directory -> camera recalibrating it
        self.workers: dict[Path, list] = {}
        self.seen: dict[Path, SeenIds] = {}  # command ids used, per model directory


class Recalibrator:
    def __init__(self, worker, link, prefix: str, cfg: RecalibrationConfig, dirs: ModelDirs | None = None,
                 secret: tuple[bytes | None, str | None] | None = None, owner: str | None = None):
        self.worker, self.link, self.cfg, self.prefix = worker, link, cfg, prefix
        self.root = Path(worker.cfg.model).resolve()
        self.dirs = dirs or ModelDirs()
        with self.dirs.lock:
            self.dirs.workers.setdefault(self.root, []).append(worker)
            self.seen = self.dirs.seen.setdefault(self.root, SeenIds(self.root))
        # checked once at start (the daemon passes one result for every camera)
        self.secret, self.disabled = secret if secret is not None else load_command_secret(cfg)
        self.topic = Topics(prefix).command_status(worker.cfg.name)
        self.child: subprocess.Popen | None = None
        self.running: Command | None = None  # the command this camera's thread is carrying out
        self.cancelled = threading.Event()
        self.cancel_lock = threading.Lock()  # cancel vs. the point of activation
        self.cancel_id: str | None = None
        self.activating = False
        self.state: dict = ({"state": "disabled", "message": self.disabled, "version": current_version(self.root)}
                            if self.disabled else {"state": "idle", "version": current_version(self.root)})
        self.work_base = Path(cfg.work_dir) if cfg.work_dir else self.root / "incoming"
        # owner: the daemon's state dir; only folders whose marker names it are ever deleted (workdir.py)
        self.workdir = WorkDir(self.work_base, worker.cfg.name, owner or str(self.root),
                               remove_base=cfg.work_dir is None)
        self.work = self.workdir.path
        self._clear_work()  # frames of an interrupted run
        remove_stale(self.root)  # a version or CURRENT half-written when the daemon was killed
        self.refusals = Refusals(worker.cfg.name)  # refusals logged and answered at a bounded rate
        self.inbox = CommandInbox(worker.cfg.name, self.handle_command, self.refusals)

    # -- status ----------------------------------------------------------------------
    def publish(self, state: str | None = None, **fields) -> None:
        if state is not None:
            self.state = {"state": state, **fields}
        payload = {**self.state, "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        if state is None:
            payload.update(fields)
        self.link.publish(self.topic, json.dumps(payload), qos=1, retain=True, buffer=True)

    # -- commands ----------------------------------------------------------------------
    def _reject(self, reason: str, ids: dict, authenticated: bool = True, replay: bool = False) -> None:
        """Answer a refused command on the status topic. `authenticated`: its hmac verified, so the
        id is the sender's own; `replay`: that signed id was used before (commands.CommandError)."""
        if self.refusals.refused(reason):  # a flood is summarised in the log and counted, not answered each
            self.publish(None, rejected=rejection(reason, ids, authenticated, replay))

    def on_command(self, topic: str, payload: bytes) -> None:
        """paho's network thread: queue it (command_inbox.py); results must not wait for commands."""
        self.inbox.put(topic, payload)

    def handle_command(self, topic: str, payload: bytes) -> None:
        """Every payload gets an outcome on the status topic (at a bounded rate): never a silent drop."""
        name = self.worker.cfg.name
        try:
            cmd = parse(payload, self.secret, self.prefix, name, self.cfg.max_age_s, self.cfg.max_frames,
                        self.cfg.max_collect_s, self.disabled)
            self.seen.claim(cmd.id, cmd.ts, self.cfg.max_age_s)
        except CommandError as e:
            self._reject(str(e), claimed_id(payload), e.authenticated, e.replay)
            return
        except Exception as e:  # a parser bug must still answer the sender
            log.exception("camera %s: command handling crashed", name)
            self._reject(f"internal error reading the command: {type(e).__name__}", claimed_id(payload), False)
            return
        if cmd.action == "cancel":
            self._cancel(cmd)
            return
        with self.dirs.lock:
            holder = self.dirs.busy.get(self.root)
            if holder is not None:
                why = ("another recalibration is running; retry later (or cancel it)" if holder == name else
                       f"camera {holder} is recalibrating the same model directory; retry later")
                self._reject(why, {"id": cmd.id})
                return
            self.dirs.busy[self.root] = name
            self.running = cmd
            self.cancelled.clear()
            self.activating = False
        # at once, for every action: the sender's CLI takes this signed status as "the command is
        # ours and running" (a threshold change may build a TensorRT engine for minutes before
        # `active`, and a bystander can publish an unsigned refusal quoting the id meanwhile)
        self.publish("accepted", id=cmd.id, action=cmd.action, version=current_version(self.root))
        threading.Thread(target=self._run, args=(cmd,), name=f"recal-{self.worker.cfg.name}", daemon=True).start()

    def _cancel(self, cmd: Command) -> None:
        """Stop this camera's running recalibration: collection ends, the build is killed."""
        with self.cancel_lock:
            run = self.running
            if run is None or run.action != "recalibrate":
                self._reject(f"nothing to cancel: no recalibration is running on camera {self.worker.cfg.name}",
                             {"id": cmd.id})
                return
            if self.activating:
                self._reject(f"too late to cancel {run.id}: its new version is being activated; roll back instead",
                             {"id": cmd.id})
                return
            self.cancel_id = cmd.id
            self.cancelled.set()
        log.info("camera %s: recalibration %s cancelled by %s", self.worker.cfg.name, run.id, cmd.id)
        child = self.child
        if child and child.poll() is None:
            child.kill()

    def _check_cancelled(self) -> None:
        if self.cancelled.is_set():
            raise Cancelled()

    def stop(self) -> None:
        self.inbox.stop()
        child = self.child
        if child and child.poll() is None:
            child.terminate()

    def _run(self, cmd: Command) -> None:
        try:
            if cmd.action == "recalibrate":
                self.worker.throttle(self.cfg.inspection_share)
            if cmd.action == "rollback":
                self._rollback(cmd)
            elif cmd.action == "threshold":
                self._threshold(cmd)
            else:
                self._recalibrate(cmd)
        except Cancelled:
            remove_stale(self.root)  # the killed child's temporary version
            self._clear_work()  # before the status: `cancelled` means cleaned up
            log.info("camera %s: recalibration %s cancelled", self.worker.cfg.name, cmd.id)
            self.publish("cancelled", id=cmd.id, action=cmd.action, cancel_id=self.cancel_id,
                         message=f"cancelled by {self.cancel_id}; {current_version(self.root)} stays active",
                         version=current_version(self.root))
        except (RecalibrationFailed, PatchcoreError) as e:  # PatchcoreError: a user-actionable message
            self._failed(cmd, str(e))
        except OSError as e:  # a full or read-only disk while writing frames or switching CURRENT
            self._failed(cmd, f"cannot write {e.filename or 'the model directory'}: {e.strerror} (disk full?)")
        except Exception as e:  # never let a recalibration bug reach the inspection threads
            log.exception("camera %s: recalibration crashed", self.worker.cfg.name)
            self._failed(cmd, f"internal error: {e}")
        finally:
            self.worker.throttle(1.0)
            self._clear_work()
            with self.dirs.lock, self.cancel_lock:
                self.dirs.busy.pop(self.root, None)
                self.running = None

    def _failed(self, cmd: Command, message: str) -> None:
        log.error("camera %s: recalibration %s failed: %s", self.worker.cfg.name, cmd.id, message)
        self._clear_work()  # before the status: whoever sees `failed` sees no leftover frames
        self.publish("failed", id=cmd.id, action=cmd.action, message=message, version=current_version(self.root))

    def _clear_work(self) -> None:
        self.workdir.clear()

    def _make_work(self) -> tuple[Path, Path]:
        try:
            return self.workdir.make()
        except WorkInUse as e:
            raise RecalibrationFailed(str(e)) from None

    @staticmethod
    def _check_folders(cmd: Command) -> None:
        """Refuse folders that would make the attempt meaningless, before any frame is collected."""
        for key in ("images", "bad_images"):
            folder = getattr(cmd, key, None)
            if folder is None:
                continue
            try:
                found = list_images(folder)
            except ImageError:
                raise RecalibrationFailed(f"{key}: {folder} does not exist or is not a folder") from None
            except OSError as e:  # unreadable or a name too long: not the full disk the caller would say
                shown = str(folder) if len(str(folder)) <= 200 else str(folder)[:200] + "..."
                raise RecalibrationFailed(f"{key}: cannot read {shown}: {e.strerror or e}") from None
            if key == "bad_images" and not found:  # "rejects every known-bad image" would pass trivially
                raise RecalibrationFailed(f"bad_images: {folder} holds no images (png, jpg, bmp, ...); point it at "
                                          "images of known defects or leave it out")

    @staticmethod
    def _readable(paths: list[Path], skipped: list[str]):
        """(path, decoded image); an unreadable file is skipped with a warning (as `calibrate` does)."""
        for p in paths:
            try:
                yield p, read_image(p)
            except ImageError as e:
                log.warning("recalibration: skipping %s", e)
                skipped.append(p.name)

    def _activate(self, version: str, inspector: Inspector) -> str | None:
        previous = current_version(self.root)
        set_current(self.root, version)
        self.worker.swap_inspector(inspector)
        for other in self.dirs.workers.get(self.root, []):
            if other is not self.worker:  # its own inspector: backends are not shared between threads
                other.swap_inspector(open_inspector(inspector.model, backend=other.cfg.backend))
        # only now: candidates are written unpruned, so a refused or cancelled one never cost history
        prune(self.root, self.cfg.keep_versions)
        return previous

    def _rollback(self, cmd: Command) -> None:
        cur = current_version(self.root)
        versions = list_versions(self.root)
        older = [v for v in versions if cur and version_number(v) < version_number(cur)]
        target = cmd.version or (older[-1] if older else None)
        if target is None:
            raise RecalibrationFailed(f"no version older than the current {cur} to roll back to (have {versions})")
        if target not in versions:
            raise RecalibrationFailed(f"version {target} does not exist (have {versions}, current {cur})")
        insp = open_inspector(load_model(self.root, version=target), backend=self.worker.cfg.backend)
        prev = self._activate(target, insp)
        self.publish("active", id=cmd.id, action="rollback", version=target, previous_version=prev,
                     message=f"rolled back from {prev} to {target}")

    def _threshold(self, cmd: Command) -> None:
        """A new version with the new threshold and the same bank, active from the next frame."""
        base = self.worker.inspector.model
        try:
            vdir = write_threshold_version(self.root, value=cmd.value, scale=cmd.scale,
                                           origin=f"command {cmd.id}", keep=self.cfg.keep_versions, base=base)
            model = load_model(vdir)
        except PatchcoreError as e:
            raise RecalibrationFailed(str(e)) from e
        prev = self._activate(model.version, open_inspector(model, backend=self.worker.cfg.backend))
        self.publish("active", id=cmd.id, action="threshold", version=model.version, previous_version=prev,
                     threshold=round(model.threshold, 5), previous_threshold=round(base.threshold, 5),
                     message=f"threshold {base.threshold:.5g} -> {model.threshold:.5g} in {model.version}")

    # -- recalibration -------------------------------------------------------------
    def _collect(self, cmd: Command, train: Path, held: Path) -> tuple[int, int]:
        """Write the frames to train/ and every 1/validation_fraction-th one to held/."""
        every = max(2, round(1 / self.cfg.validation_fraction))
        skipped: list[str] = []
        if cmd.images:
            paths = list_images(cmd.images)
            if len(paths) < 3:
                raise RecalibrationFailed(f"{cmd.images} holds {len(paths)} images; at least 3 are needed")
            total = len(paths)
            frames = (img for _, img in self._readable(paths, skipped))
        else:
            total = cmd.frames
            frames = self._live_frames(cmd)
        n_train = n_held = 0
        last = None
        for i, frame in enumerate(frames):
            frame = self.worker.crop(frame)
            dest = held if i % every == every - 1 else train
            # BMP: lossless (calibration sees exactly what inspection sees) and ~10x faster to
            # write than PNG, which kept collection from keeping pace with the camera; the
            # frames (2.4 MB each at 900x900) are deleted when the attempt ends
            if not cv2.imwrite(str(dest / f"{i:05d}.bmp"), frame):
                raise RecalibrationFailed(f"cannot write frames to {dest} (disk full or read-only?)")
            n_held += dest is held
            n_train += dest is train
            last = dest / f"{i:05d}.bmp"
            self._check_cancelled()
            if i % 10 == 0 or i == total - 1:
                self.publish("collecting", id=cmd.id, action="recalibrate", done=i + 1, total=total,
                             percent=round(100 * (i + 1) / total, 1))
        if skipped and n_train + n_held < 3:
            raise RecalibrationFailed(f"only {n_train + n_held} of {total} images in {cmd.images} could be read "
                                      f"(unreadable: {', '.join(skipped[:3])}); at least 3 are needed")
        if n_held == 0 and last is not None and n_train >= 3:
            # fewer frames than 1/validation_fraction: without this the new model went live
            # unvalidated (3 frames activated a 3.6x threshold); hold out the last one
            last.rename(held / last.name)
            n_train, n_held = n_train - 1, 1
        return n_train, n_held

    def _live_frames(self, cmd: Command):
        cap = self.worker.capture
        seq = cap.seq
        for i in range(cmd.frames):
            wait_until = time.monotonic() + max(cap.stall_timeout_s, cmd.interval_s + 2.0)
            got = None
            while got is None and time.monotonic() < wait_until:  # short waits: a cancel is seen at once
                self._check_cancelled()
                got = cap.latest(seq, timeout=min(0.5, max(0.01, wait_until - time.monotonic())))
            self._check_cancelled()
            if got is None:
                if cap.status == "ended":
                    raise RecalibrationFailed(f"the source ended after {i} frames; fewer than the {cmd.frames} "
                                              "asked for are available")
                raise RecalibrationFailed(f"camera lost while collecting ({i} of {cmd.frames} frames)")
            seq, frame, _ = got
            yield frame
            if cmd.interval_s and i < cmd.frames - 1 and self.cancelled.wait(cmd.interval_s):
                raise Cancelled()

    def _recalibrate(self, cmd: Command) -> None:
        t0 = time.monotonic()
        self._check_folders(cmd)
        train, held = self._make_work()
        n_train, n_held = self._collect(cmd, train, held)
        old = self.worker.inspector.model.manifest
        new_dir = self._build(cmd, train, old)
        try:
            self._check_cancelled()
        except Cancelled:
            shutil.rmtree(new_dir, ignore_errors=True)  # built but never activated
            raise
        self.publish("validating", id=cmd.id, action="recalibrate")
        model = load_model(new_dir)
        insp = open_inspector(model, backend=self.worker.cfg.backend)
        rejected = [p.name for p in list_images(held) if insp.inspect(read_image(p)).verdict == "fail"]
        problems = []
        if len(rejected) > self.cfg.max_false_reject * n_held:
            problems.append(f"it rejects {len(rejected)} of {n_held} held-out good frames "
                            f"(allowed: {self.cfg.max_false_reject:.0%})")
        if cmd.bad_images:
            unreadable: list[str] = []
            bad = list(self._readable(list_images(cmd.bad_images), unreadable))
            passed = [p.name for p, img in bad if insp.inspect(img).verdict == "pass"]
            if not bad:
                problems.append(f"none of the known-bad images in {cmd.bad_images} could be read")
            if passed:
                problems.append(f"it passes {len(passed)} of {len(bad)} known-bad images ({', '.join(passed[:3])})")
        if problems:
            shutil.rmtree(new_dir, ignore_errors=True)  # never activated; keep the tree clean
            raise RecalibrationFailed(f"new model not activated: {'; '.join(problems)}")
        with self.cancel_lock:  # from here on a cancel is refused ("roll back instead")
            if self.cancelled.is_set():
                shutil.rmtree(new_dir, ignore_errors=True)
                raise Cancelled()
            self.activating = True
        prev = self._activate(model.version, insp)
        self._clear_work()  # before the status: whoever sees `active` (or stops the daemon) finds no frames left
        self.publish("active", id=cmd.id, action="recalibrate", version=model.version, previous_version=prev,
                     frames=n_train + n_held, seconds=round(time.monotonic() - t0, 1),
                     threshold=round(model.threshold, 5), message=f"{model.version} active")

    def _build(self, cmd: Command, train: Path, old: dict) -> Path:
        bb = old["backbone"]
        args = child_command("calibrate", "--images", str(train), "--output", str(self.root),
                "--force", NO_ACTIVATE, JSON_PROGRESS, "--backbone", bb["name"],
                *Geometry.from_manifest(old).cli_args(),  # same input W x H and tiling as the old model
                "--coreset-ratio", str(cmd.coreset_ratio or old.get("coreset", {}).get("ratio", 0.01)),
                "--seed", str(old.get("coreset", {}).get("seed", 0)))
        spec = self.worker.inspector.model.spec  # the old model's image score and map rule carry over
        args += [f"--score-top-k={int(spec.score_top_k)}", f"--map-fine-weight={float(spec.map_fine[1])!r}"]
        layers = cmd.layers or ",".join(map(str, bb.get("strides", [])))  # default: the old model's stages
        if layers:
            args += ["--layers", layers]
        if bb.get("weights_path"):
            args += ["--weights", bb["weights_path"]]
        if old.get("files", {}).get(ONNX):  # the graph cache must give the graph this model was verified with
            args += ["--expect-onnx-sha256", old["files"][ONNX]]
        args += self._threshold_args(cmd, old)
        n = str(self.cfg.threads)
        env = {**os.environ, "OMP_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n, "NUMBA_NUM_THREADS": n,
               "PATCHCORE_THREADS": n}
        self.publish("building", id=cmd.id, action="recalibrate", stage="starting", percent=0.0)
        # stderr goes to a file: a pipe read only after stdout ends would block a chatty child
        with tempfile.TemporaryFile("w+") as err_file:
            self.child = child = start_child(args, env, err_file, self.cfg.nice)
            if self.cancelled.is_set():  # a cancel that came before self.child was set
                child.kill()
            timed_out = threading.Event()

            def expire() -> None:  # a hung build must not block recalibration until a restart
                timed_out.set()
                child.kill()

            timer = threading.Timer(self.cfg.build_timeout_s, expire)
            timer.start()
            try:
                result = self._follow(cmd, child)
                rc = child.wait()
            finally:
                timer.cancel()
            err_file.seek(0)
            err = err_file.read()
        if self.cancelled.is_set():
            done = Path(result["version_dir"]).resolve() if result is not None else None
            if done is not None and done.parent == self.root / "versions":  # finished before the kill
                shutil.rmtree(done, ignore_errors=True)
            raise Cancelled()
        if rc != 0 or result is None:
            if timed_out.is_set():
                raise RecalibrationFailed(f"calibration did not finish within build_timeout_s "
                                          f"({self.cfg.build_timeout_s:g} s) and was stopped")
            if rc == -signal.SIGKILL:
                raise RecalibrationFailed("calibration was killed (out of memory?)")
            last = [ln for ln in err.strip().splitlines() if ln.strip()][-1:] or [f"exit code {rc}"]
            raise RecalibrationFailed(f"calibration failed: {last[0]}")
        return Path(result["version_dir"])

    def _threshold_args(self, cmd: Command, old: dict) -> list[str]:
        """The operator's threshold rule carries over (a station set to a 5% target stays at 5%), and
        known-bad images go to the build: it places the threshold so that they all fail when the
        tail model allows it within max_false_reject (the same budget validation applies), else it
        fails saying why. `--opt=value` so that a folder name starting with '-' stays a value."""
        fit = old.get("threshold_fit") or {}
        if not isinstance(fit, dict):  # a report, not checked on load: anything else means the default rule
            log.warning("camera %s: the model's threshold_fit is not a mapping (%s); the new model gets the "
                        "default threshold rule", self.worker.cfg.name, type(fit).__name__)
            fit = {}
        args = []
        if fit.get("rule") in ("target", "max3sigma"):
            args.append(f"--threshold-rule={fit['rule']}")
        target = fit.get("target_false_reject")
        if fit.get("rule") == "target" and isinstance(target, (int, float)) and 0 < target < 0.5:
            args.append(f"--target-false-reject={target!r}")
        if cmd.bad_images is not None:
            args.append(f"--bad-images={Path(cmd.bad_images).resolve()}")
            if 0 < self.cfg.max_false_reject < 0.5:  # calibrate's accepted range; 0 = report only, validation decides
                args += ["--reject-all-bad", f"--max-false-reject={self.cfg.max_false_reject!r}"]
        return args

    def _follow(self, cmd: Command, child: subprocess.Popen) -> dict | None:
        """Relay the child's JSON progress lines as `building` status; its final result line."""
        result = None
        for line in child.stdout:
            msg = read_line(line)
            if msg is None:
                continue
            if msg.get("stage") == DONE:
                result = msg
            elif (pct := percent(msg)) is not None:
                self.publish("building", id=cmd.id, action="recalibrate", stage=msg["stage"], done=msg["done"],
                             total=msg["total"], percent=round(pct, 1))
        return result
