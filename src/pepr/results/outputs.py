"""Can the outputs be written? Checked before the expensive work, reported in one line.

:func:`output_dir_problems` and :func:`free_space_problem` are the checks ``pepr train`` runs
on its ``--out`` folder (and ``--save-model`` file) before any data are loaded;
:func:`write_failure_message` turns an ``OSError`` raised by a write anyway (the disk filled up
during training, a folder made read-only under a running job) into the one-line message the CLI
prints with exit code 2. Stdlib only.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

#: Errors of a write that the user fixes (space, permissions, a read-only mount, a quota).
WRITE_ERRNOS = frozenset(
    {
        errno.ENOSPC,
        errno.EACCES,
        errno.EPERM,
        errno.EROFS,
        errno.EDQUOT,
        errno.EFBIG,
        errno.ENOTDIR,
        errno.EISDIR,
        errno.EEXIST,
    }
)

#: Free space a run folder needs at least before training starts (metrics, history, logs).
MIN_FREE_BYTES = 16 * 2**20


def nearest_existing(path: Path) -> Path:
    """``path`` or its closest existing ancestor (what decides whether ``path`` can be created)."""
    path = Path(path).absolute()
    while not os.path.lexists(path) and path != path.parent:
        path = path.parent
    return path


def output_dir_problems(path: str | os.PathLike, flag: str = "--out") -> list[str]:
    """Problems with an output folder: an existing non-folder, or no write permission on it or on
    the nearest existing ancestor that would create it. Empty list: it can be written."""
    path = Path(path)
    if os.path.lexists(path) and not path.is_dir():
        kind = "a file" if path.is_file() else "not a folder"
        return [f"{flag} {path} is {kind}; give a folder (it is created when missing)"]
    base = nearest_existing(path)
    if not base.is_dir():
        return [f"{flag} {path}: {base} is not a folder, so {path} cannot be created; choose another path"]
    if not os.access(base, os.W_OK | os.X_OK):
        where = "is" if base == path.absolute() else f"cannot be created: {base} is"
        return [
            f"{flag} {path} {where} not writable (permission or read-only file system); choose another folder or fix its permissions"
        ]
    try:
        if os.statvfs(base).f_flag & os.ST_RDONLY:
            return [f"{flag} {path}: {base} is on a read-only file system; choose another folder"]
    except OSError:
        pass
    return []


def free_space_problem(
    path: str | os.PathLike, needed_bytes: int, flag: str = "--out", what: str = "its files"
) -> str | None:
    """One line when the file system of ``path`` has less than ``needed_bytes`` free, else None."""
    base = nearest_existing(Path(path))
    try:
        free = shutil.disk_usage(base).free
    except OSError:
        return None  # not measurable here (e.g. an exotic mount): the write itself is still guarded
    if free < needed_bytes:
        return (
            f"{flag} {path}: only {_size(free)} free on its file system, {what} need about {_size(needed_bytes)}; "
            "free some space or choose another folder"
        )
    return None


def write_failure_message(exc: OSError) -> str | None:
    """The one-line message for a failed write (naming the path), or None for other OSErrors."""
    if exc.errno not in WRITE_ERRNOS:
        return None
    path = exc.filename or "an output file"
    reason = exc.strerror or os.strerror(exc.errno)
    hint = {
        errno.ENOSPC: "free some space (or choose another output folder) and run again",
        errno.EDQUOT: "free some of your quota (or choose another output folder) and run again",
        errno.EROFS: "the file system is read-only; choose another output folder",
    }.get(exc.errno, "fix the permissions or choose another output path, and run again")
    return f"cannot write {path}: {reason}; {hint}"


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


#: Free space a report folder needs before its figures/tables are drawn.
REPORT_MIN_FREE_BYTES = 64 * 2**20


def check_output_folder(path: str | os.PathLike, flag: str, needed_bytes: int = REPORT_MIN_FREE_BYTES) -> None:
    """Raise PeprInputError (one line) when the folder ``path`` cannot be written or lacks space."""
    from pepr.errors import PeprInputError

    problems = output_dir_problems(path, flag)
    if not problems:
        space = free_space_problem(path, needed_bytes, flag, "the files")
        problems = [space] if space else []
    if problems:
        raise PeprInputError("; ".join(problems))


class one_line_errors:  # noqa: N801 - used as a context manager in rule scripts
    """Rule scripts: a PeprInputError or a failed write ends the script with one line on stderr
    and exit code 2, instead of a traceback (``with one_line_errors("report_figures"): ...``)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __enter__(self) -> one_line_errors:
        return self

    def __exit__(self, kind: type | None, exc: BaseException | None, tb: object) -> bool:
        import sys

        from pepr.errors import PeprInputError

        message = None
        if isinstance(exc, PeprInputError):
            message = str(exc)
        elif isinstance(exc, OSError):
            message = write_failure_message(exc)
        if message is None:
            return False
        print(f"pepr {self.name}: error: {message}", file=sys.stderr)
        raise SystemExit(2)
