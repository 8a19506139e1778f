"""Where fetched data lives, and atomic file writes shared by every writer."""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from mdctr.errors import InputError

TMP_SUFFIX = ".tmp"


def cache_dir() -> Path:
    """The data cache: ``$MDCTR_CACHE`` or ``~/.cache/mdctr``."""
    root = os.environ.get("MDCTR_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "mdctr"


def first_existing(path: Path) -> Path:
    """``path``, or its nearest ancestor that exists: where creating ``path`` would start."""
    return next(p for p in [path, *path.parents] if p.exists())


def _unwritable(path: Path, err: OSError) -> InputError:
    """The one-line error for a write the disk or the file system refused."""
    blocker = first_existing(path)
    if blocker != path and not blocker.is_dir():
        return InputError(f"cannot write {path}: {blocker} is a file, not a folder; choose another path")
    reason = err.strerror or type(err).__name__
    full = err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
    fix = "free disk space or choose another folder" if full else "choose a folder you can write"
    return InputError(f"cannot write {path}: {reason}; {fix}")


def make_dir(path: str | Path, target: str | Path | None = None) -> Path:
    """``mkdir -p``; a path that cannot be a folder (a file in the way, no permission, a full or
    read-only disk) is an InputError naming ``target`` (default: the folder)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _unwritable(Path(target or path), err) from None
    return path


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, flush it to disk, then rename it
    over ``path``.

    An interrupted write (a killed process, a full disk) leaves ``path`` as it was: never
    half-written; the disk errors are an InputError naming ``path``.
    """
    path = Path(path)
    make_dir(path.parent, target=path)
    tmp_path = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        write(tmp_path)
        with open(tmp_path, "rb+") as handle:
            os.fsync(handle.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    except OSError as err:
        raise _unwritable(path, err) from None
    finally:
        if tmp_path is not None:
            tmp_path.unlink(missing_ok=True)
    return path


def remove_partial_writes(folder: str | Path) -> int:
    """Delete the temporary files a killed ``atomic_write`` left in ``folder``; how many."""
    stale = list(Path(folder).glob(f".*{TMP_SUFFIX}"))
    for tmp in stale:
        tmp.unlink(missing_ok=True)
    return len(stale)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write bytes to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write text to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text))
