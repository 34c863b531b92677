"""The model directory: versioned, hashed, written atomically.

    MODEL_DIR/
      CURRENT                  text: the active version's name (replaced atomically)
      versions/v0001/          one complete calibration
        manifest.json          format version, backbone, input size, threshold, stats, hashes
        manifest.sha256        sha256 of manifest.json's bytes (`sha256sum -c` format)
        coreset.safetensors    the memory bank (float32, N x D); no pickle anywhere
        backbone.onnx          patch-feature graph (trunk + aggregation)
      versions/v0002/ ...      older versions stay for rollback (the newest `keep` are kept)

A version is written into `versions/.tmp-*`, every file fsynced, then renamed into place,
then CURRENT is switched by writing `CURRENT.tmp`, fsync, rename. A crash at any point
leaves either the old or the new version active, never a half-written one.

Integrity: the manifest holds the sha256 of every other file and manifest.sha256 holds the
manifest's, so one changed byte anywhere refuses the load. CURRENT must hold a version name
(v + 4 or more digits) whose folder lies inside this directory's versions/ (no `..`, no
absolute path, no symlink out). Modes: folders 0750, files 0640 (owner writes, the service
group reads, others nothing), whatever the umask.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from .files import FILE_MODE, atomic_write_bytes, fsync_dir, sha256_file, write_synced
from .names import inside
from .errors import ConfigError, ModelError
from .manifest import Manifest, parse_manifest
from .geometry import Geometry

log = logging.getLogger(__name__)

FORMAT_VERSION = 2  # 2: manifest.sha256 beside the manifest (1: without; still read, with a warning)
READABLE_FORMATS = (1, 2)
MANIFEST = "manifest.json"
MANIFEST_HASH = "manifest.sha256"
VERSION_PATTERN = re.compile(r"v\d{4,}")
DIR_MODE = 0o750  # files: FILE_MODE (edge/files.py)
CORESET = "coreset.safetensors"
ONNX = "backbone.onnx"
CURRENT = "CURRENT"
VERSIONS = "versions"
# what exists to roll back (there is no `patchcore-edge rollback` subcommand)
ROLL_BACK = ("roll back to an earlier version (daemon running: 'patchcore-edge recalibrate --config ... "
             "--camera ... --rollback vNNNN'; stopped: write that version's name into CURRENT)")
_IGNORED_LOGGED: set[str] = set()  # version entries already reported as ignored (logged once each)


@dataclass
class Model:
    """A loaded, verified model version."""

    path: Path  # the version directory
    manifest: dict[str, Any]  # the JSON as written (reports included)
    bank: np.ndarray  # (N, D) float32
    spec: Manifest | None = None  # the typed fields inspection reads (edge/manifest.py)

    def __post_init__(self):
        if self.spec is None:
            self.spec = parse_manifest(self.manifest, str(self.path))

    @property
    def version(self) -> str:
        return self.spec.version

    @property
    def input_size(self) -> int | tuple[int, int]:
        """Network input: S for a square one (older manifests only have these), else (W, H)."""
        w, h = self.geometry.size
        return w if w == h else (w, h)

    @property
    def geometry(self) -> Geometry:
        """Input W x H and tiling (edge/geometry.py)."""
        return Geometry.from_manifest(self.manifest)

    @property
    def threshold(self) -> float:
        return self.spec.threshold

    @property
    def mean(self) -> tuple[float, ...]:
        return self.spec.normalization.mean

    @property
    def std(self) -> tuple[float, ...]:
        return self.spec.normalization.std

    @property
    def onnx_path(self) -> Path:
        return self.path / ONNX


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def list_versions(root: str | Path) -> list[str]:
    """Complete versions in a model directory, oldest first.

    Only real directories count: a symlink or a file named like a version (versions/v0099 ->
    elsewhere) is ignored and logged once, so it can never be the newest, be listed, or make
    pruning delete a real version."""
    vdir = Path(root) / VERSIONS
    if not vdir.is_dir():
        return []
    found = []
    for p in vdir.iterdir():
        if not VERSION_PATTERN.fullmatch(p.name):
            continue
        if p.is_symlink() or not p.is_dir():
            if str(p) not in _IGNORED_LOGGED:
                _IGNORED_LOGGED.add(str(p))
                log.warning("%s is %s, not a version directory: ignored (remove it)", p,
                            "a symlink" if p.is_symlink() else "not a directory")
            continue
        if (p / MANIFEST).is_file():
            found.append(p.name)
    return sorted(found, key=version_number)


def version_number(name: str) -> int:
    """v0042 -> 42: versions are ordered by number (as text, v10000 would sort before v9999)."""
    return int(name[1:])


def check_version_name(name: str, root: str | Path) -> str:
    """`name` if it is a version name (v0001 ...), else ModelError (CURRENT or a command said it)."""
    if not isinstance(name, str) or not VERSION_PATTERN.fullmatch(name):
        raise ModelError(f"model directory {root}: {name!r} is not a version name (v0001, v0002, ...); "
                         f"fix {Path(root) / CURRENT} (write an existing version's name into it)")
    return name


def version_dir(root: str | Path, name: str) -> Path:
    """versions/<name> of this model directory, refusing names or symlinks that lead elsewhere."""
    check_version_name(name, root)
    try:
        path = inside(Path(root) / VERSIONS, name)
    except ConfigError as e:
        raise ModelError(f"model directory {root}: version {name} resolves outside {Path(root) / VERSIONS}; "
                         "refused (a symlink?)") from e
    if path.is_symlink():
        raise ModelError(f"model directory {root}: {path} is a symlink, not a version directory; refused "
                         f"(remove it; versions: {list_versions(root)})")
    return path


def current_version(root: str | Path) -> str | None:
    """The active version's name, or None for a directory without a model; ModelError when
    CURRENT holds anything but a version name (e.g. ../../other/versions/v0004)."""
    cur = Path(root) / CURRENT
    return check_version_name(cur.read_text().strip(), root) if cur.is_file() else None


def is_model_root(root: str | Path) -> bool:
    return (Path(root) / CURRENT).is_file() or bool(list_versions(root))


def remove_stale(root: str | Path) -> None:
    """Delete what a crash mid-write or mid-switch left: `versions/.tmp-*` and `.CURRENT.*`.

    Neither is ever read (a version only counts once renamed into place, CURRENT only once
    replaced), so removing them is always safe; writers and the daemon's start call this."""
    root = Path(root)
    for stale in (root / VERSIONS).glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    for stale in root.glob(f".{CURRENT}.*"):
        stale.unlink(missing_ok=True)


def write_version(root: str | Path, manifest: dict[str, Any], bank: np.ndarray, onnx_bytes: bytes,
                  keep: int = 5, activate: bool = True) -> Path:
    """Write a new version atomically; with activate=True make it current and prune old ones.

    activate=False (a version still to be validated) prunes nothing: a candidate that is then
    refused or cancelled must not have cost a rollback version. Whoever activates it later
    prunes (edge/recalibrate.py)."""
    from safetensors.numpy import save

    root = Path(root)
    vdir = root / VERSIONS
    if not vdir.is_dir():  # only a folder we create: an existing one may belong to another user
        vdir.mkdir(parents=True, exist_ok=True)
        os.chmod(vdir, DIR_MODE)
    remove_stale(root)
    # numbered past every version-named entry, ignored ones too (a stray symlink must not block the rename)
    existing = [p.name for p in vdir.iterdir() if VERSION_PATTERN.fullmatch(p.name)]
    number = 1 + max((version_number(v) for v in existing), default=0)
    name = f"v{number:04d}"
    tmp = Path(tempfile.mkdtemp(dir=vdir, prefix=".tmp-"))
    try:
        bank = np.ascontiguousarray(bank, dtype=np.float32)
        write_synced(tmp / CORESET, save({"coreset": bank}))
        write_synced(tmp / ONNX, onnx_bytes)
        manifest = dict(manifest)
        manifest.update(
            format_version=FORMAT_VERSION,
            version=name,
            created_at=manifest.get("created_at") or utc_now(),
            coreset_size=int(bank.shape[0]),
            feature_dim=int(bank.shape[1]),
            files={CORESET: sha256_file(tmp / CORESET), ONNX: sha256_file(tmp / ONNX)},
        )
        manifest_bytes = json.dumps(manifest, indent=2).encode()
        write_synced(tmp / MANIFEST, manifest_bytes)
        write_synced(tmp / MANIFEST_HASH, manifest_hash_line(manifest_bytes))
        os.chmod(tmp, DIR_MODE)  # mkdtemp makes 0700
        fsync_dir(tmp)
        os.rename(tmp, vdir / name)
        fsync_dir(vdir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if activate:
        set_current(root, name)
        prune(root, keep)
    return vdir / name


def set_current(root: str | Path, version: str) -> None:
    """Atomically make `version` the active one (used for activation and rollback)."""
    root = Path(root)
    if not (version_dir(root, version) / MANIFEST).is_file():
        raise ModelError(f"model directory {root} has no version {version!r}; versions: {list_versions(root)}")
    atomic_write_bytes(root / CURRENT, (version + "\n").encode())


def prune(root: str | Path, keep: int) -> None:
    """Delete the oldest versions (by number) beyond `keep`, never the current one or the newest."""
    cur = current_version(root)
    versions = list_versions(root)
    for old in versions[: max(0, len(versions) - keep)]:
        if old != cur and old != versions[-1]:
            shutil.rmtree(Path(root) / VERSIONS / old, ignore_errors=True)


def resolve_version_dir(path: str | Path, version: str | None = None) -> Path:
    """A model root (uses CURRENT or `version`) or a version directory -> the version directory."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"model directory {path} does not exist; run 'patchcore-edge calibrate --output {path}' first")
    if (path / MANIFEST).is_file() and version is None:
        return path
    name = version or current_version(path)
    if name is None:
        raise ModelError(f"{path} is not a model directory (no {CURRENT} file or {MANIFEST}); "
                         "point at the folder 'patchcore-edge calibrate --output' wrote")
    vpath = version_dir(path, name)
    if not (vpath / MANIFEST).is_file():
        raise ModelError(f"model directory {path}: version {name!r} is missing; "
                         f"available: {list_versions(path)}; {ROLL_BACK}")
    return vpath


REQUIRED_KEYS = ("format_version", "version", "backbone", "input_size", "normalization", "grid", "feature_dim",
                 "coreset_size", "threshold", "score_stats", "files")


def manifest_hash_line(manifest_bytes: bytes) -> bytes:
    """manifest.sha256's content: `sha256sum` format, so `sha256sum -c manifest.sha256` checks it too."""
    return f"{hashlib.sha256(manifest_bytes).hexdigest()}  {MANIFEST}\n".encode()


def _check_manifest_hash(vpath: Path, manifest_bytes: bytes, manifest: dict) -> None:
    """Refuse a manifest changed after it was written (a threshold edited by hand, a flipped bit)."""
    hfile = vpath / MANIFEST_HASH
    if manifest.get("format_version") == 1 and not hfile.exists():
        log.warning("%s predates manifest hashes (format 1): its manifest cannot be checked; recalibrate "
                    "to get a version with %s", vpath, MANIFEST_HASH)
        return
    try:
        recorded = hfile.read_text().split()[0].lower()
    except (OSError, IndexError, UnicodeDecodeError) as e:
        raise ModelError(f"{hfile} is missing or unreadable, so {vpath / MANIFEST} cannot be checked; "
                         "roll back or recalibrate") from e
    if hashlib.sha256(manifest_bytes).hexdigest() != recorded:
        raise ModelError(f"{vpath / MANIFEST} was changed after it was written (its sha256 does not match "
                         f"{MANIFEST_HASH}); refused: roll back or recalibrate")


def _check_identity(vpath: Path, spec: Manifest, geo: Geometry) -> Manifest:
    """What the typed manifest cannot check alone: its version against its folder, its file
    names against its folder, and score_top_k against the patch grid. Returns the spec as
    inspection should use it."""
    where = vpath / MANIFEST
    if not VERSION_PATTERN.fullmatch(spec.version):
        raise ModelError(f"{where}: version {spec.version!r} is not a version name (v0001, ...); recalibrate")
    if VERSION_PATTERN.fullmatch(vpath.name) and spec.version != vpath.name:
        # a version copied under another name (a working practice before this check): the folder
        # is what CURRENT and rollback name, so results carry the folder's name
        log.warning("%s says version %s but lies in folder %s; results carry %s", where, spec.version,
                    vpath.name, vpath.name)
        spec = spec.model_copy(update={"version": vpath.name})
    for fname in spec.files:
        if fname in ("", ".", "..", MANIFEST, MANIFEST_HASH) or Path(fname).name != fname or "\\" in fname \
                or "\0" in fname:
            raise ModelError(f"{where}: files names {fname!r}, which is not a plain file name inside {vpath}; "
                             f"refused: {ROLL_BACK} or recalibrate")
    patches = spec.grid[0] * spec.grid[1] * geo.tiles
    if spec.score_top_k > patches:
        # scoring has always taken the mean of every patch then (calibrate refuses it now); a
        # version written before keeps working, as it did, with the value it really uses
        log.warning("%s: score_top_k %d exceeds the %d patches a frame has (grid %dx%d x %d tile(s)); the "
                    "image score is the mean of all %d", where, spec.score_top_k, patches, spec.grid[0],
                    spec.grid[1], geo.tiles, patches)
        spec = spec.model_copy(update={"score_top_k": patches})
    return spec


def load_model(path: str | Path, version: str | None = None, verify: bool = True) -> Model:
    """Load and verify a model version (format, hashes, shapes); ModelError says what is wrong."""
    from safetensors.numpy import load_file

    vpath = resolve_version_dir(path, version)
    try:
        manifest_bytes = (vpath / MANIFEST).read_bytes()
        manifest = json.loads(manifest_bytes)
    except (OSError, ValueError) as e:
        raise ModelError(f"{vpath / MANIFEST} is unreadable or not JSON ({e}); roll back or recalibrate") from e
    if not isinstance(manifest, dict):
        raise ModelError(f"{vpath / MANIFEST} is not a JSON object; roll back or recalibrate")
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if missing:
        raise ModelError(f"{vpath / MANIFEST} lacks {missing}; it was not written by patchcore-edge, recalibrate")
    if manifest["format_version"] not in READABLE_FORMATS:
        raise ModelError(f"{vpath} has model format {manifest['format_version']}, this build reads "
                         f"{list(READABLE_FORMATS)}; recalibrate with this version or install a matching "
                         "patchcore-edge")
    if verify:
        _check_manifest_hash(vpath, manifest_bytes, manifest)
    geo = Geometry.from_manifest(manifest)  # input size / tiling readable (ModelError otherwise)
    spec = parse_manifest(manifest, str(vpath / MANIFEST))  # every field inspection reads, typed
    spec = _check_identity(vpath, spec, geo)
    if verify:
        unlisted = [f for f in (CORESET, ONNX) if f not in spec.files]
        if unlisted:
            raise ModelError(f"{vpath / MANIFEST}: files does not list {unlisted}, so they cannot be verified; "
                             f"refused: {ROLL_BACK} or recalibrate")
        for fname, digest in spec.files.items():
            f = vpath / fname
            if f.is_symlink():
                raise ModelError(f"{f} is a symlink; a version's files must be plain files inside {vpath}; "
                                 f"refused: {ROLL_BACK} or recalibrate")
            if not f.is_file():
                raise ModelError(f"{f} is missing; the model directory is incomplete, roll back or recalibrate")
            if sha256_file(f) != digest:
                raise ModelError(f"{f} is corrupt (sha256 does not match the manifest); roll back or recalibrate")
    try:
        bank = load_file(str(vpath / CORESET))["coreset"]
    except Exception as e:
        raise ModelError(f"{vpath / CORESET} cannot be read ({e}); roll back or recalibrate") from e
    if bank.ndim != 2 or bank.shape != (spec.coreset_size, spec.feature_dim):
        raise ModelError(f"{vpath / CORESET} has shape {bank.shape}, manifest says "
                         f"({spec.coreset_size}, {spec.feature_dim}); recalibrate")
    finite = np.isfinite(bank).all(axis=1)
    if not finite.all():  # one NaN row made every score NaN, and NaN > 1.0 is False: every frame passed
        rows = np.flatnonzero(~finite)
        raise ModelError(f"{vpath / CORESET}: {rows.size} of {bank.shape[0]} bank vectors hold NaN or "
                         f"infinity (first: row {rows[0]}); this bank cannot judge frames, refused: {ROLL_BACK} "
                         "or recalibrate")
    return Model(path=vpath, manifest=manifest, bank=np.ascontiguousarray(bank, dtype=np.float32), spec=spec)
