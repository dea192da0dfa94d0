"""The run contract: where a run's files live, what they are called, and how they are written.

One owner for what grid, train and aggregate all need:

* the results layout ``results/runs/{dataset}/{init}/{fraction}/{model}/seed{seed}/`` and
  ``results/pretrain/{source}/{model}/``: the only place that builds (:func:`cell_key`,
  :func:`run_folder`, :func:`pretrain_folder`) or parses (:func:`parse_run_path`,
  :func:`parse_pretrain_path`) a run path, and names the columns that identify a run
  (:data:`IDENTITY_COLUMNS`, :data:`GROUP_COLUMNS`),
* the files of a run folder (:data:`METRICS_FILE`, :data:`HISTORY_FILE`, :data:`PREDICTIONS_FILE`, :data:`RESUME_FILE`,
  :data:`PREVIOUS_DIR`, :data:`LOCK_FILE`),
* the ``history.csv`` columns and the keys every ``metrics.json`` has (:data:`HISTORY_COLUMNS`,
  :data:`RESULT_KEYS`), the record of a run that could not run (:func:`failed_record`),
* atomic writes that leave the file readable as the user's umask allows (:func:`atomic_write_text`,
  :func:`atomic_write_json`; a finished run published through :func:`publish_finished`),
* keeping a copy of every finished result in ``previous/<UTC time>/`` (:func:`archive_result`),
  so a rerun that Snakemake starts by deleting the declared outputs and that then fails loses
  nothing, and a finished training is restored instead of redone (:func:`find_finished`),
* a lock so two ``pepr train`` processes never train the same folder (:func:`run_lock`).

Light: standard library only (numpy scalars are handled without importing numpy).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

from pepr.columns import GROUP_COLUMNS, IDENTITY_COLUMNS, PERFORMANCE_COLUMNS, RESOURCE_COLUMNS
from pepr.errors import PeprInputError

__all__ = [
    "RUNS_DIR",
    "PRETRAIN_DIR",
    "METRICS_FILE",
    "HISTORY_FILE",
    "PREDICTIONS_FILE",
    "RESUME_FILE",
    "PREVIOUS_DIR",
    "LOCK_FILE",
    "HISTORY_COLUMNS",
    "RESULT_KEYS",
    "IDENTITY_COLUMNS",
    "GROUP_COLUMNS",
    "RunKey",
    "PretrainKey",
    "format_fraction",
    "cell_key",
    "run_folder",
    "pretrain_key",
    "pretrain_folder",
    "parse_run_path",
    "parse_pretrain_path",
    "failed_record",
    "json_safe",
    "atomic_write_text",
    "atomic_write_json",
    "history_csv",
    "open_new",
    "write_new_then_replace",
    "refuse_links",
    "SUMS_FILE",
    "remove_stale_temporaries",
    "archive_intact",
    "result_damage",
    "place_file",
    "publish_finished",
    "archive_result",
    "mark_finished",
    "keep_in_archive",
    "finished_ok",
    "find_finished",
    "restore_finished",
    "run_lock",
]

#: Where the workflow writes runs and pretraining results (relative to the working directory).
RUNS_DIR = "results/runs"
PRETRAIN_DIR = "results/pretrain"

#: Files of one run folder. Only metrics.json and history.csv are Snakemake outputs; the resume
#: checkpoint, the archive of earlier finished results and the lock live beside them.
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.csv"
#: The final model's per-image test predictions (:mod:`pepr.results.predictions`): written with a
#: finished run, archived and restored with it, but not a Snakemake output (older runs lack it).
PREDICTIONS_FILE = "test_predictions.npz"
RESUME_FILE = "resume.pt"
PREVIOUS_DIR = "previous"
LOCK_FILE = ".pepr-train.lock"

#: Columns of history.csv, in order (one row per epoch).
HISTORY_COLUMNS: tuple[str, ...] = (
    "epoch",
    "segment",
    "train_loss",
    "val_loss",
    "val_accuracy",
    "val_balanced_accuracy",
    "val_auc",
    "val_f1",
    "test_accuracy",
    "test_balanced_accuracy",
    "test_auc",
    "test_f1",
    "epoch_time_s",
    "train_loop_time_s",
    "eval_time_s",
    "cumulative_time_s",
    "train_images_per_s",
    "epoch_energy_kwh",
    "cumulative_energy_kwh",
    "epoch_co2_kg",
    "cumulative_co2_kg",
)

#: Result keys every metrics.json has (null in a failed run's), so every run has the same columns.
RESULT_KEYS: tuple[str, ...] = (
    "params",
    *PERFORMANCE_COLUMNS,
    "val_accuracy",
    "best_val_epoch",
    "best_val_accuracy",
    *RESOURCE_COLUMNS,
    "energy_method",
    "train_loop_time_s",
    "eval_time_s",
    "flops_per_image",
    "inference_ms_per_image",
    "cpu_share",
)

#: The identity keys of a run (what a failed record always names).
_IDENTITY_KEYS: tuple[str, ...] = ("model", "dataset", "init", "fraction", "seed", "epochs")


# --------------------------------------------------------------------------------------------
# Layout
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunKey:
    """A cell as the workflow names it in its results path."""

    dataset: str  # short name (pepr.datasets.core.dataset_name)
    init: str  # workflow strategy: scratch, imagenet, transfer
    fraction: float
    model: str
    seed: int

    @property
    def key(self) -> str:
        """``{dataset}/{init}/{fraction}/{model}/seed{seed}``."""
        return cell_key(self.dataset, self.init, format_fraction(self.fraction), self.model, self.seed)

    def columns(self) -> dict[str, Any]:
        """The :data:`IDENTITY_COLUMNS` of this run (runs.csv's leading columns)."""
        return {name: getattr(self, name) for name in IDENTITY_COLUMNS}


@dataclass(frozen=True)
class PretrainKey:
    """A pretraining run of the ``transfer`` strategy as its results path names it."""

    source: str  # short name of the source dataset
    model: str


def format_fraction(fraction: float) -> str:
    """Canonical text of a data fraction, used in paths and job names (``1.0``, ``0.1``, ``0.25``)."""
    return repr(float(fraction))


def cell_key(dataset_name: str, init: str, fraction: str, model: str, seed: int | str) -> str:
    """``{dataset}/{init}/{fraction}/{model}/seed{seed}`` from the workflow's wildcard values."""
    return f"{dataset_name}/{init}/{fraction}/{model}/seed{seed}"


def run_folder(key: str, root: str = RUNS_DIR) -> str:
    """Folder of one run from its :func:`cell_key` (relative to the working directory)."""
    return f"{root}/{key}"


def pretrain_key(source_name: str, model: str) -> str:
    """``{source}/{model}``: a pretraining run's path below ``results/pretrain``."""
    return f"{source_name}/{model}"


def pretrain_folder(source_name: str, model: str, root: str = PRETRAIN_DIR) -> str:
    """Folder of one pretraining run of the ``transfer`` strategy."""
    return f"{root}/{pretrain_key(source_name, model)}"


def parse_pretrain_path(path: str | os.PathLike) -> PretrainKey:
    """The :class:`PretrainKey` of ``.../{source}/{model}/FILE`` (a pretraining run's file)."""
    parts = Path(path).parts
    if len(parts) < 3:
        raise PeprInputError(f"'{os.fspath(path)}' is not laid out as {PRETRAIN_DIR}/SOURCE/MODEL/{METRICS_FILE}")
    return PretrainKey(source=parts[-3], model=parts[-2])


def parse_run_path(path: str | os.PathLike, root: str | os.PathLike = RUNS_DIR) -> RunKey:
    """The :class:`RunKey` of ``{root}/{dataset}/{init}/{fraction}/{model}/seed{seed}/FILE``.

    Raises PeprInputError naming the path when it is not laid out so.
    """
    path = os.fspath(path)
    prefix = os.fspath(root).rstrip("/") + "/"
    # Paths arrive below root as written: a prefix cut is ~10x cheaper than os.path.relpath.
    relative = path[len(prefix) :] if path.startswith(prefix) else os.path.relpath(path, root)
    parts = relative.replace(os.sep, "/").split("/")
    if len(parts) != 6 or not parts[4].startswith("seed") or parts[0] == "..":
        raise PeprInputError(
            f"'{path}' is not laid out as {os.fspath(root)}/DATASET/INIT/FRACTION/MODEL/seedSEED/{METRICS_FILE}"
        )
    dataset, init, fraction, model, seed_part, _ = parts
    try:
        return RunKey(dataset=dataset, init=init, fraction=float(fraction), model=model, seed=int(seed_part[4:]))
    except ValueError:
        raise PeprInputError(
            f"'{path}': the fraction '{fraction}' or seed '{seed_part}' in its path is not a number"
        ) from None


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------


def failed_record(identity: Mapping[str, Any], reason: str, **extra: Any) -> dict[str, Any]:
    """The metrics.json record of a run that could not run: status "failed", the reason, the
    run's identity (model, dataset, init, fraction, seed, epochs from ``identity``), every
    :data:`RESULT_KEYS` key as null, then ``extra`` (e.g. what was resolved before the failure)."""
    record: dict[str, Any] = {"status": "failed", "reason": reason}
    record.update({key: identity.get(key) for key in _IDENTITY_KEYS})
    record.update(dict.fromkeys(RESULT_KEYS))
    record.update(extra)
    record["status"], record["reason"] = "failed", reason
    return record


def json_safe(value: Any) -> Any:
    """NaN/inf -> null so metrics.json stays strict JSON; numpy scalars -> Python numbers."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        value = value.item()  # numpy / torch scalar
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    return value


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def _temporary_sibling(path: Path) -> Path:
    # Unpredictable (uuid4), so nobody can plant a link under the name before it is created.
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")


#: A temporary file older than this whose writer is gone is a leftover of a killed writer.
STALE_TEMPORARY_S = 60.0


def _process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError, ValueError):
        return False
    return False


def remove_stale_temporaries(path: str | os.PathLike, now: float | None = None) -> list[Path]:
    """Remove the temporary siblings of ``path`` (:func:`_temporary_sibling`'s names) left by a
    writer that was killed (kill -9, a time limit) before it renamed them into place: those whose
    process is gone and that are older than :data:`STALE_TEMPORARY_S` (a writer on another
    machine of a shared file system is not seen by the pid check; the age keeps its file safe
    while it writes). Called before every atomic write, so the next run of a stage cleans up.
    Returns the removed paths."""
    path = Path(path)
    prefix = f".{path.name}."
    now = time.time() if now is None else now
    removed = []
    try:
        names = [name for name in os.listdir(path.parent) if name.startswith(prefix) and name.endswith(".tmp")]
    except OSError:
        return removed
    for name in names:
        # ".NAME.PID.HEX.tmp" (pepr's atomic writes) or ".NAME.PID.tmp" (figures)
        middle = name[len(prefix) : -len(".tmp")].split(".")
        if (
            not middle[0].isdigit()
            or len(middle) > 2
            or (len(middle) == 2 and not re.fullmatch(r"[0-9a-f]+", middle[1]))
        ):
            continue
        candidate = path.parent / name
        try:
            info = os.stat(candidate, follow_symlinks=False)
        except OSError:
            continue
        if now - info.st_mtime < STALE_TEMPORARY_S or not _process_gone(int(middle[0])):
            continue
        with contextlib.suppress(OSError):
            candidate.unlink()
            removed.append(candidate)
    return removed


#: Flags of every file pepr creates in a run folder: a new file only (O_EXCL: an existing name,
#: a planted symbolic link included, is an error, never opened) and never through a link.
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def open_new(path: str | os.PathLike, binary: bool = False) -> Any:
    """Open a NEW file for writing (``O_CREAT|O_EXCL|O_NOFOLLOW``, mode 0666 minus the umask).

    Fails with FileExistsError when anything (a file, a directory, a symbolic link planted by
    someone who can write the folder) has the name: a write never follows a link.
    """
    fd = os.open(path, _CREATE_FLAGS, 0o666)
    return os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"}))


def write_new_then_replace(path: str | os.PathLike, write: Any, binary: bool = True) -> None:
    """Create ``path`` atomically: ``write(handle)`` into a new, unpredictably named sibling
    (:func:`open_new`), then ``os.replace`` it onto ``path`` (which replaces a link at ``path``
    itself, never the file it points to)."""
    path = Path(path)
    remove_stale_temporaries(path)
    tmp = _temporary_sibling(path)
    try:
        with open_new(tmp, binary=binary) as handle:
            write(handle)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (new unpredictable sibling + rename).

    The file gets the permissions a plain ``open(path, "w")`` would (0666 minus the umask), not
    ``mkstemp``'s 0600: teammates on a shared file system must be able to read results. A
    symbolic link at ``path`` is replaced, never written through.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_new_then_replace(path, lambda handle: handle.write(text), binary=False)


def atomic_write_json(path: str | os.PathLike, payload: Any, indent: int | None = 2) -> None:
    """Write ``payload`` as strict JSON (see :func:`json_safe`) atomically."""
    atomic_write_text(path, json.dumps(json_safe(payload), indent=indent) + "\n")


def history_csv(history: Iterable[Mapping[str, Any]]) -> str:
    """history.csv text: :data:`HISTORY_COLUMNS` in order, other keys dropped, None as empty."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=HISTORY_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return buffer.getvalue()


#: The link names pepr checks in a run folder before it writes anything there.
_WRITTEN_NAMES: tuple[str, ...] = (METRICS_FILE, HISTORY_FILE, PREDICTIONS_FILE, RESUME_FILE, LOCK_FILE, PREVIOUS_DIR)


def refuse_links(out_dir: str | os.PathLike, extra: Iterable[str | os.PathLike] = ()) -> None:
    """Raise PeprInputError (one line, naming it) when a file pepr writes in ``out_dir`` (or
    ``out_dir`` itself, or one of ``extra``, e.g. the ``--save-model`` path) is a symbolic link.

    Someone who can write a run folder could plant ``metrics.json -> ~owner/.bashrc``; pepr's
    writes never follow links anyway (:func:`open_new`, ``os.replace``), but a planted link is
    reported and nothing is trained or written.
    """
    out_dir = Path(out_dir)
    candidates = [out_dir, *(out_dir / name for name in _WRITTEN_NAMES), *(Path(p) for p in extra)]
    for path in candidates:
        if path.is_symlink():
            raise PeprInputError(
                f"{path} is a symbolic link (to {os.readlink(path)}); pepr never writes through links "
                f"in a run folder: remove it (rm {path}) and run again"
            )


def _new_archive_folder(out_dir: Path, when: float) -> Path:
    """A NEW ``previous/<UTC time>[-N]/`` folder (mkdir: never an existing name or a link)."""
    previous = out_dir / PREVIOUS_DIR
    if previous.is_symlink():
        raise PeprInputError(
            f"{previous} is a symbolic link (to {os.readlink(previous)}); pepr keeps finished results "
            f"there and never writes through links: remove it (rm {previous}) and run again"
        )
    previous.mkdir(exist_ok=True)
    if previous.is_symlink() or not previous.is_dir():  # swapped in between: refuse
        raise PeprInputError(f"{previous} is not a folder; remove it and run again")
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(when))
    for attempt in range(1000):
        target = previous / (stamp if attempt == 0 else f"{stamp}-{attempt}")
        try:
            target.mkdir()
            return target
        except FileExistsError:
            continue
    raise OSError(f"cannot create a new folder in {previous}")


#: Linux's FICLONE ioctl: a copy-on-write clone (reflink) on file systems that have them
#: (Btrfs, XFS, bcachefs, ZFS 2.2+): a copy that costs no space until either file changes.
_FICLONE = 0x40049409


def _clone_or_copy(source: Path, destination: Path) -> None:
    """Write a NEW file ``destination`` with ``source``'s content (a reflink where the file
    system has them, else a copy) and its modification time, so the two compare equal by stat."""
    with open(source, "rb") as reader, open_new(destination, binary=True) as writer:
        try:
            import fcntl

            fcntl.ioctl(writer.fileno(), _FICLONE, reader.fileno())
        except (OSError, ImportError):
            shutil.copyfileobj(reader, writer)
        info = os.fstat(reader.fileno())
    os.utime(destination, ns=(info.st_atime_ns, info.st_mtime_ns), follow_symlinks=False)


def place_file(source: Path, destination: Path, link: bool = False) -> None:
    """Put ``source``'s content at ``destination`` atomically: an independent copy (a reflink
    where supported; see :func:`_clone_or_copy`), or with ``link`` a hard link (no extra space:
    the saved weights, which pepr only ever replaces, never edits), under a new unpredictable
    name beside it, then ``os.replace``. Never writes through a link at ``destination``."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_sibling(destination)
    try:
        linked = False
        if link:
            try:
                os.link(source, tmp, follow_symlinks=False)
                linked = True
            except OSError:
                pass
        if not linked:
            _clone_or_copy(source, tmp)
        os.replace(tmp, destination)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


#: In each ``previous/<time>/``: the SHA-256 of its metrics.json and history.csv, in
#: ``sha256sum`` format (``sha256sum -c SHA256SUMS`` checks it by hand).
SUMS_FILE = "SHA256SUMS"


def _sha256(path: Path) -> str:
    import hashlib

    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _archived_sums(archive: Path) -> dict[str, str] | None:
    """name -> SHA-256 recorded in an archive's :data:`SUMS_FILE` (None: none recorded, an
    archive of an earlier pepr)."""
    path = archive / SUMS_FILE
    if path.is_symlink() or not path.is_file() or path.stat().st_size > 4096:
        return None
    sums = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        digest, _, name = line.partition("  ")
        if len(digest) == 64 and name:
            sums[name] = digest
    return sums


def archive_intact(archive: Path) -> bool:
    """Whether an archive's result files still have the content recorded when it was written
    (an archive of an earlier pepr, with no record, counts as intact)."""
    sums = _archived_sums(archive)
    if sums is None:
        return True
    try:
        return all(_sha256(archive / name) == digest for name, digest in sums.items())
    except OSError:
        return False


def _archives(out_dir: Path) -> list[Path]:
    """The ``previous/<time>/`` folders of a run folder, newest first (links ignored)."""
    previous = out_dir / PREVIOUS_DIR
    if previous.is_symlink() or not previous.is_dir():
        return []
    return [
        p for p in sorted(previous.iterdir(), key=lambda p: p.name, reverse=True) if not p.is_symlink() and p.is_dir()
    ]


def _same_stat(a: os.stat_result, b: os.stat_result) -> bool:
    return a.st_size == b.st_size and a.st_mtime_ns == b.st_mtime_ns


def result_damage(out_dir: str | os.PathLike) -> str | None:
    """Why a run folder's finished result needs its job run again, or None.

    "lost": metrics.json or history.csv is gone while ``previous/`` keeps a result;
    "edited": both are there, but their content is no archived result's (``: > metrics.json``,
    an editor writing in place). Cheap for an intact folder: the files compare equal by size
    and modification time to an archive's copies (:func:`place_file` keeps the time); only a
    mismatch reads them. A folder without an archive (pending, or finished by an earlier pepr
    that kept none) is damaged only when one of its two declared outputs is gone."""
    out_dir = Path(out_dir)
    names = (METRICS_FILE, HISTORY_FILE)
    archives = [a for a in _archives(out_dir) if (a / METRICS_FILE).is_file()]
    if not archives:  # one declared output without the other: half a result, also lost
        present = [os.path.lexists(out_dir / name) for name in names]
        return "lost" if any(present) and not all(present) else None
    try:
        current = [os.stat(out_dir / name, follow_symlinks=False) for name in names]
    except OSError:
        return "lost"
    for archive in archives:
        try:
            if all(_same_stat(now, os.stat(archive / name)) for now, name in zip(current, names)):
                return None
        except OSError:
            continue
    try:
        digests = {name: _sha256(out_dir / name) for name in names}
    except OSError:
        return "lost"
    for archive in archives:
        sums = _archived_sums(archive)
        try:
            known = sums if sums is not None else {name: _sha256(archive / name) for name in names}
        except OSError:
            continue
        if all(known.get(name) == digest for name, digest in digests.items()):
            return None
    return "edited"


def publish_finished(
    out_dir: str | os.PathLike, metrics: Mapping[str, Any], history: Iterable[Mapping[str, Any]]
) -> Path:
    """Write a finished run's results: first into a new ``previous/<UTC time>/`` archive
    (:func:`archive_result`), then into ``out_dir`` (:func:`mark_finished`: history.csv, then
    metrics.json, which marks completion). Returns the archive folder.

    Archive first, so whenever ``out_dir/metrics.json`` exists its archived copy exists too: a
    kill right after the run finished, before Snakemake recorded the job, leaves the result in
    ``previous/``, and the rerun :func:`find_finished` / :func:`restore_finished` it instead of
    training again. The out_dir files are independent copies of the archived ones (reflinks where
    the file system has them), so an edit in place never reaches the archive.
    """
    archive = archive_result(out_dir, metrics, history)
    mark_finished(archive, out_dir)
    return archive


def archive_result(
    out_dir: str | os.PathLike,
    metrics: Mapping[str, Any],
    history: Iterable[Mapping[str, Any]],
    predictions: bytes | None = None,
) -> Path:
    """Write a finished run's history.csv, test_predictions.npz (``predictions``, when given) and
    metrics.json into a new ``previous/<UTC time>/`` of ``out_dir`` (not yet into ``out_dir``:
    see :func:`mark_finished`); returns that folder."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    archive = _new_archive_folder(out_dir, time.time())
    atomic_write_text(archive / HISTORY_FILE, history_csv(history))
    if predictions is not None:
        write_new_then_replace(archive / PREDICTIONS_FILE, lambda handle: handle.write(predictions))
    atomic_write_json(archive / METRICS_FILE, dict(metrics))
    sums = "".join(f"{_sha256(archive / name)}  {name}\n" for name in (METRICS_FILE, HISTORY_FILE))
    atomic_write_text(archive / SUMS_FILE, sums)
    return archive


def mark_finished(archive: Path, out_dir: str | os.PathLike) -> None:
    """Place an archived result into ``out_dir``: history.csv, then metrics.json last, as it
    is what marks the run finished (for Snakemake and for the transfer cells reading it). Whatever
    else the finished run owes (its saved weights) must be in place before this."""
    out_dir = Path(out_dir)
    place_file(archive / HISTORY_FILE, out_dir / HISTORY_FILE)
    _place_predictions(archive, out_dir)
    place_file(archive / METRICS_FILE, out_dir / METRICS_FILE)


def _place_predictions(archive: Path, out_dir: Path) -> None:
    """Put the archived test predictions into ``out_dir`` when the archive has them (results
    archived before pepr wrote them have none); a stale copy of another result is removed."""
    source = archive / PREDICTIONS_FILE
    if source.is_file() and not source.is_symlink():
        place_file(source, out_dir / PREDICTIONS_FILE)
    else:
        (out_dir / PREDICTIONS_FILE).unlink(missing_ok=True)


def keep_in_archive(archive: Path, weights: Path) -> None:
    """Keep the saved weights beside their archived result (a hard link, as pepr replaces the
    weights file and never edits it; skipped where the file system has none: the weights can be
    large), so a lost ``model.pt`` can be restored."""
    with contextlib.suppress(OSError):
        os.link(weights, archive / weights.name, follow_symlinks=False)


def _read_archived(path: Path) -> dict[str, Any] | None:
    if path.is_symlink() or not path.is_file() or path.stat().st_size > 16 * 2**20:
        return None
    try:
        with open(path, "rb") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def finished_ok(path: str | os.PathLike) -> bool:
    """Whether the metrics.json at ``path`` records a successful run (``status`` "ok"); False for
    a failed run, a missing, unreadable or oversized file, or a link."""
    record = _read_archived(Path(path))
    return record is not None and record.get("status") == "ok"


def find_finished(
    out_dir: str | os.PathLike, identity: Mapping[str, Any], weights_name: str | None = None
) -> Path | None:
    """The newest ``previous/<stamp>/`` of ``out_dir`` holding a successful result of a training
    with exactly this ``identity`` (its ``training_identity``: resolved settings and data
    fingerprints), with its weights file ``weights_name`` when one is needed; else None.
    A ``previous/`` or an entry that is a link is ignored."""
    previous = Path(out_dir) / PREVIOUS_DIR
    if previous.is_symlink() or not previous.is_dir():
        return None
    wanted = json.loads(json.dumps(json_safe(dict(identity)), sort_keys=True))
    for folder in sorted(previous.iterdir(), key=lambda p: p.name, reverse=True):
        if folder.is_symlink() or not folder.is_dir():
            continue
        record = _read_archived(folder / METRICS_FILE)
        if record is None or record.get("status") != "ok" or record.get("training_identity") != wanted:
            continue
        history = folder / HISTORY_FILE
        if history.is_symlink() or not history.is_file() or not archive_intact(folder):
            continue
        if weights_name is not None:
            weights = folder / weights_name
            if weights.is_symlink() or not weights.is_file():
                continue
        return folder
    return None


def restore_finished(archive: Path, out_dir: str | os.PathLike, weights: Path | None = None) -> dict[str, Any]:
    """Put an archived result back into ``out_dir`` (history.csv, weights, then metrics.json);
    returns its metrics."""
    out_dir = Path(out_dir)
    if weights is not None:
        place_file(archive / weights.name, weights, link=True)
    place_file(archive / HISTORY_FILE, out_dir / HISTORY_FILE)
    _place_predictions(archive, out_dir)
    place_file(archive / METRICS_FILE, out_dir / METRICS_FILE)
    return _read_archived(out_dir / METRICS_FILE) or {}


@contextlib.contextmanager
def run_lock(out_dir: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on a run folder for the duration of a training.

    A second ``pepr train`` on the same folder fails at once with a PeprInputError instead of
    training it twice and interleaving its files. The lock is an ``flock`` on
    ``out_dir/.pepr-train.lock``: the kernel releases it when the process dies (kill -9,
    SLURM time limit), so a crash never leaves a stale lock behind. The file is opened with
    ``O_NOFOLLOW`` and must be a plain file with one link: a planted symbolic or hard link is
    refused (one line naming it), never truncated. The file is removed when the lock is
    released (and the run folder too when this call made it and nothing was written there), so
    a training rejected inside the lock leaves nothing behind.
    """
    import fcntl
    import stat as stat_module

    out_dir = Path(out_dir)
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / LOCK_FILE
    flags = (
        os.O_RDWR
        | os.O_CREAT
        | getattr(os, "O_NOFOLLOW", 0)
        | getattr(os, "O_CLOEXEC", 0)
        | getattr(os, "O_NONBLOCK", 0)
    )
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as exc:
        if path.is_symlink():
            raise PeprInputError(
                f"{path} is a symbolic link (to {os.readlink(path)}); pepr never writes through links "
                f"in a run folder: remove it (rm {path}) and run again"
            ) from None
        raise PeprInputError(f"cannot open the run lock {path}: {exc.strerror}") from None
    info = os.fstat(fd)
    if not stat_module.S_ISREG(info.st_mode) or info.st_nlink != 1:
        os.close(fd)
        raise PeprInputError(
            f"{path} is not a plain file of its own ({'hard-linked ' + str(info.st_nlink) + ' times' if stat_module.S_ISREG(info.st_mode) else 'not a regular file'}); "
            f"remove it (rm {path}) and run again"
        )
    handle = os.fdopen(fd, "r+", encoding="utf-8")
    locked = False
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read(200).strip() or "another process"
            raise PeprInputError(
                f"run folder {out_dir} is being trained by {holder}; wait for it to finish, or stop that process first"
            ) from None
        try:
            same = os.stat(path, follow_symlinks=False).st_ino == os.fstat(handle.fileno()).st_ino
        except OSError:
            same = False
        if not same:  # the holder before us removed the file after we opened it: a new one is the lock now
            raise PeprInputError(f"run folder {out_dir} was just trained by another process; run again")
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {os.uname().nodename}\n")
        handle.flush()
        locked = True
        yield
    finally:
        if locked:
            # Released by removing it while still held, so nothing of a rejected or finished
            # training stays behind; a waiter that opened the old file sees it gone (above).
            with contextlib.suppress(OSError):
                path.unlink()
            if created:
                with contextlib.suppress(OSError):
                    out_dir.rmdir()  # only when the training left nothing in the folder it made
        handle.close()


#: The run statuses of the metrics.json contract ("stopped": an adaptive sweep stopped the run at
#: a rung; like "failed" it is never scored as a finished run).
STATUSES: tuple[str, ...] = ("ok", "failed", "stopped")


def normalise_status(
    status: pd.Series,
    labels: Sequence[str] | Callable[[], Sequence[str]] | None = None,
    where: str = "the runs table",
) -> pd.Series:
    """Statuses as the contract spells them: "ok", "failed" or "stopped".

    Rule: case and surrounding spaces are ignored ("OK", " Ok " count as "ok"; "FAILED" as
    "failed"), so a hand-edited or foreign record is never dropped for its spelling; a missing
    status counts as "failed" (the run did not finish). Any other value (e.g. "running") raises
    PeprInputError naming the runs (``labels``, one per row, or a function returning them, only
    called then; else the row numbers) and values.
    """
    canonical = status.astype("object").where(status.notna(), "failed").map(lambda value: str(value).strip().lower())
    unknown = ~canonical.isin(STATUSES)
    if unknown.any():
        names = (
            list(labels() if callable(labels) else labels)
            if labels is not None
            else [f"row {i}" for i in range(len(status))]
        )
        bad = [f"{names[i]} ({status.iloc[i]!r})" for i in range(len(status)) if unknown.iloc[i]]
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise PeprInputError(
            f"{where}: unknown run status in {', '.join(bad[:5])}{more}; a status must be "
            "'ok', 'failed' or 'stopped' (any case)"
        )
    return canonical
