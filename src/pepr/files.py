"""File-system facts every stage asks, below all of them: what kind a path is (told without
opening it) and a file's SHA-256 (cached by stat). Stdlib only."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path


def file_kind_problem(path: str | os.PathLike, what: str) -> str | None:
    """None when ``path`` is a regular file; otherwise one line saying what it is instead.

    Uses ``os.stat`` (no open): opening a FIFO blocks until a writer comes, a device may stream
    forever. A missing path is reported as not found.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return f"{what} {path} not found"
    except OSError as exc:
        return f"{what} {path} cannot be read ({exc.strerror or exc})"
    if stat.S_ISREG(mode):
        return None
    kind = (
        "a directory"
        if stat.S_ISDIR(mode)
        else "a FIFO (named pipe)"
        if stat.S_ISFIFO(mode)
        else "a device"
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
        else "a socket"
        if stat.S_ISSOCK(mode)
        else "not a regular file"
    )
    return f"{what} {path} is {kind}, not a regular file; give a file"


def file_sha256(path: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> str | None:
    """SHA-256 of a file's content (None when it does not exist).

    With ``cache_dir`` the digest is remembered under a key of the file's path, size, inode,
    mtime and ctime, so planning reads a data file once after it changed (a ``touch`` or ``cp``
    costs one read of the file, then the same digest is found), not once per job.
    """
    path = Path(path)
    try:
        info = path.stat()
    except OSError:
        return None
    cache_file = None
    if cache_dir is not None:
        key = json.dumps([os.path.abspath(path), info.st_size, info.st_ino, info.st_mtime_ns, info.st_ctime_ns])
        cache_file = Path(cache_dir) / f"sha256-{hashlib.sha256(key.encode()).hexdigest()[:32]}.txt"
        try:
            cached = cache_file.read_text(encoding="ascii").strip()
            if len(cached) == 64:
                return cached
        except (OSError, UnicodeDecodeError):
            pass
    with open(path, "rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
    if cache_file is not None:
        try:
            from pepr.results.runs import atomic_write_text

            atomic_write_text(cache_file, digest + "\n")
        except OSError:
            pass  # a read-only .snakemake: digest again next time
    return digest
