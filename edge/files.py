"""Files written so that a crash leaves the old content or the new, never a mix; file hashes.

Every file the project writes that must survive a crash (model versions and CURRENT, the spool,
the run counter, used command ids, cached graphs, install-service's files) goes through
`atomic_write_bytes`: a temp file in the same folder, fsync, rename, fsync of the folder.
Modes: files 0640 (owner writes, the service group reads, others nothing), whatever the umask.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from .errors import ConfigError

FILE_MODE = 0o640


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def fsync_dir(path: Path) -> None:
    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes, mode: int = FILE_MODE) -> None:
    """Write a file so that readers see the old or the new content, never a mix."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)  # mkstemp makes 0600; one rule for every file we write
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise naming(e, path) from e
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def naming(e: OSError, path: Path) -> OSError:
    """The same error with the file it concerns (write() on a full disk does not say which)."""
    return e if e.filename else OSError(e.errno, e.strerror, str(path))


def write_synced(path: Path, data: bytes) -> None:
    """Write and fsync a new file (inside a folder that is renamed into place afterwards)."""
    try:
        with open(path, "wb") as f:
            os.fchmod(f.fileno(), FILE_MODE)  # whatever the umask made of it
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise naming(e, path) from e


def _blocking(path: Path) -> str | None:
    """Why nothing can be created at `path`: its nearest existing ancestor is a file, or a folder
    this process may not write in; None when it can be created."""
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                return f"{parent} is a file, not a folder"
            if not os.access(parent, os.W_OK | os.X_OK):
                return f"{parent} is not writable"
            return None
    return None


def check_output_folder(path: str | Path, flag: str) -> None:
    """Refuse up front (ConfigError) an output folder that cannot be one: an existing file, a
    path under a file, or one in a folder this process may not write in."""
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise ConfigError(f"{flag} {path} is a file, not a folder; choose a folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise ConfigError(f"{flag} {path} is not writable; choose another folder")
        return
    why = _blocking(path)
    if why:
        raise ConfigError(f"{flag} {path} cannot be created: {why}")


def check_output_file(path: str | Path, flag: str) -> None:
    """Refuse up front (ConfigError) an output file that cannot be written: a folder, a path
    under a file, or one in a folder this process may not write in."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{flag} {path} is a folder; give a file name")
    if path.exists() and not os.access(path, os.W_OK):
        raise ConfigError(f"{flag} {path} is not writable; choose another file")
    why = _blocking(path)
    if why:
        raise ConfigError(f"{flag} {path} cannot be written: {why}")
