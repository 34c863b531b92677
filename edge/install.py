"""`patchcore-edge install-service`: lay down unit, config and user for a station, idempotently.

Everything goes under --root (default /), so the same code installs into a temp root for
tests and image builds. Existing config, secrets and models are never overwritten; the unit
is rewritten only when its content changes. `--uninstall` removes the unit (and keeps
config and models, which hold the station's calibration).
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

from .errors import ConfigError
from .files import atomic_write_bytes
from .package_data import data_file

UNIT = "patchcore-edge.service"
TEMPLATE = data_file("systemd", f"{UNIT}.in")
EXAMPLE_CONFIG = data_file("configs", "usb-camera.yaml")


def render_unit(executable: str, config: str, user: str, state: str) -> str:
    if not TEMPLATE.is_file():
        raise ConfigError(f"unit template {TEMPLATE} is missing; reinstall patchcore-edge")
    text = TEMPLATE.read_text()
    for key, value in {"@EXEC@": executable, "@CONFIG@": config, "@USER@": user, "@STATE@": state}.items():
        text = text.replace(key, value)
    return text


def _put(path: Path, data: bytes, mode: int, overwrite: bool) -> str:
    if path.exists() and (not overwrite or path.read_bytes() == data):
        return "kept"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)
    os.chmod(path, mode)
    return "written"


def _service_group(path: Path, user: str) -> None:
    """Give the service user's group read access (the unit runs as that user, not root).

    Secrets stay root:root 0600: systemd's LoadCredential= hands them to the service. A user
    that does not exist yet (an install into an image root) is skipped."""
    import grp
    import pwd

    try:
        gid = pwd.getpwnam(user).pw_gid
    except KeyError:
        try:
            gid = grp.getgrnam(user).gr_gid
        except KeyError:
            return
    if os.stat(path).st_gid != gid:
        os.chown(path, -1, gid)


def install(root: Path, user: str, executable: str, uninstall: bool = False) -> dict[str, str]:
    """Returns what happened to each path ('written', 'kept', 'removed', ...)."""
    etc, state = root / "etc/patchcore-edge", Path("/var/lib/patchcore-edge")
    unit_path = root / "etc/systemd/system" / UNIT
    done: dict[str, str] = {}
    if uninstall:
        if unit_path.exists():
            unit_path.unlink()
            done[str(unit_path)] = "removed"
        return done
    if root == Path("/"):  # first: config.yaml's group is the service user's
        done[f"user {user}"] = _ensure_user(user)
    unit = render_unit(executable, "/etc/patchcore-edge/config.yaml", user, str(state))
    done[str(unit_path)] = _put(unit_path, unit.encode(), 0o644, overwrite=True)
    done[str(etc / "config.yaml")] = _put(etc / "config.yaml", EXAMPLE_CONFIG.read_bytes(), 0o640, overwrite=False)
    _service_group(etc / "config.yaml", user)  # 0640 root:<user>: the service reads it, others do not
    done[str(etc / "mqtt-password")] = _put(etc / "mqtt-password", b"change-me\n", 0o600, overwrite=False)
    done[str(etc / "recalibration-secret")] = _put(etc / "recalibration-secret",
                                                   secrets.token_hex(32).encode() + b"\n", 0o600, overwrite=False)
    (root / state.relative_to("/") / "models").mkdir(parents=True, exist_ok=True)
    return done


def _ensure_user(user: str) -> str:
    import pwd

    try:
        pwd.getpwnam(user)
        return "kept"
    except KeyError:
        pass
    if shutil.which("useradd") is None:
        raise ConfigError(f"cannot create user {user}: useradd is missing; create a system user by hand")
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "--groups", "video",
                    user], check=True)
    return "created"


def installed_command() -> str:
    """The command that runs this installation: its console script beside the interpreter (a
    venv's bin/), else this interpreter with -m. Not a PATH search: PATH may lead to another one."""
    script = Path(sys.executable).with_name("patchcore-edge")
    return str(script) if script.is_file() else f"{sys.executable} -m patchcore_edge"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("install-service", help="install the systemd unit, config and service user",
                       description="Idempotent station install; re-run after upgrades. Needs root for --root /.")
    p.add_argument("--root", type=Path, default=Path("/"), help="install under this root (default /)")
    p.add_argument("--user", default="patchcore", help="service user (created when missing)")
    p.add_argument("--uninstall", action="store_true", help="remove the unit (config and models stay)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    exe = installed_command()
    for path, what in install(args.root, args.user, exe, args.uninstall).items():
        print(f"{what:8s} {path}")
    if args.root == Path("/") and shutil.which("systemctl"):
        subprocess.run(["systemctl", "daemon-reload"], check=False)
        if not args.uninstall:
            print("next: edit /etc/patchcore-edge/config.yaml, then: systemctl enable --now patchcore-edge")
    return 0
