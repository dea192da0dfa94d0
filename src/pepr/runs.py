"""The run contract: where a run's files live, what they are called, and how they are written.

One owner for what used to be coded in several places (grid, train, aggregate):

* the results layout ``results/runs/{dataset}/{init}/{fraction}/{model}/seed{seed}/`` and
  ``results/pretrain/{source}/{model}/``: the only place that builds (:func:`cell_key`,
  :func:`run_folder`, :func:`pretrain_folder`) or parses (:func:`parse_run_path`,
  :func:`parse_pretrain_path`) a run path, and names the columns that identify a run
  (:data:`IDENTITY_COLUMNS`, :data:`GROUP_COLUMNS`),
* the files of a run folder (:data:`METRICS_FILE`, :data:`HISTORY_FILE`, :data:`RESUME_FILE`,
  :data:`PREVIOUS_DIR`, :data:`LOCK_FILE`),
* the ``history.csv`` columns and the keys every ``metrics.json`` has (:data:`HISTORY_COLUMNS`,
  :data:`RESULT_KEYS`), the record of a run that could not run (:func:`failed_record`),
* atomic writes that leave the file readable as the user's umask allows (:func:`atomic_write_text`,
  :func:`atomic_write_json`, :func:`write_run_outputs`),
* keeping a copy of every finished result (:func:`archive_finished`), so a rerun that Snakemake
  starts by deleting the declared outputs and that then fails loses nothing,
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
import shutil
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pepr.errors import PeprInputError

__all__ = [
    "RUNS_DIR",
    "PRETRAIN_DIR",
    "METRICS_FILE",
    "HISTORY_FILE",
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
    "write_run_outputs",
    "archive_finished",
    "run_lock",
]

#: Where the workflow writes runs and pretraining results (relative to the working directory).
RUNS_DIR = "results/runs"
PRETRAIN_DIR = "results/pretrain"

#: Files of one run folder. Only metrics.json and history.csv are Snakemake outputs; the resume
#: checkpoint, the archive of earlier finished results and the lock live beside them.
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.csv"
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
    "test_accuracy",
    "test_balanced_accuracy",
    "test_auc",
    "test_f1",
    "val_accuracy",
    "best_val_epoch",
    "best_val_accuracy",
    "energy_kwh",
    "cpu_energy_kwh",
    "gpu_energy_kwh",
    "ram_energy_kwh",
    "co2_kg",
    "energy_method",
    "train_time_s",
    "train_loop_time_s",
    "eval_time_s",
    "peak_memory_mb",
    "flops_per_image",
    "inference_ms_per_image",
    "cpu_share",
)

#: Columns naming a run (a cell of the grid), in the order they lead runs.csv and every table
#: keyed by run (the estimate, the comparison).
IDENTITY_COLUMNS: tuple[str, ...] = ("dataset", "init", "fraction", "model", "seed")
#: The experiment cell within which resources are normalised (PePR's min/max).
GROUP_COLUMNS: tuple[str, ...] = ("dataset", "init", "fraction")

#: The identity keys of a run (what a failed record always names).
_IDENTITY_KEYS: tuple[str, ...] = ("model", "dataset", "init", "fraction", "seed", "epochs")


# --------------------------------------------------------------------------------------------
# Layout
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunKey:
    """A cell as the workflow names it in its results path."""

    dataset: str  # short name (pepr.data.dataset_name)
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
    relative = path[len(prefix):] if path.startswith(prefix) else os.path.relpath(path, root)
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
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temporary sibling + rename).

    The file gets the permissions a plain ``open(path, "w")`` would (0666 minus the umask), not
    ``mkstemp``'s 0600: teammates on a shared file system must be able to read results.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_sibling(path)
    try:
        with open(tmp, "x", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


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


def write_run_outputs(out_dir: str | os.PathLike, metrics: Mapping[str, Any], history: Iterable[Mapping[str, Any]]) -> None:
    """Write history.csv then metrics.json (each atomically; metrics.json marks completion)."""
    out_dir = Path(out_dir)
    atomic_write_text(out_dir / HISTORY_FILE, history_csv(history))
    atomic_write_json(out_dir / METRICS_FILE, dict(metrics))


def archive_finished(out_dir: str | os.PathLike) -> Path | None:
    """Keep a copy of a finished run's metrics.json and history.csv in ``previous/<UTC time>/``.

    Snakemake deletes a job's declared outputs before it re-runs the job; with this copy, a
    re-run that then fails (or a retrain that turns out worse) never loses the earlier result.
    Hard links where the file system allows (no extra space), copies otherwise. Returns the
    archive folder, or None when there is no finished metrics.json.
    """
    out_dir = Path(out_dir)
    metrics = out_dir / METRICS_FILE
    if not metrics.is_file():
        return None
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(metrics.stat().st_mtime))
    target = out_dir / PREVIOUS_DIR / stamp
    if (target / METRICS_FILE).is_file():
        return target  # this very result is archived already
    target.mkdir(parents=True, exist_ok=True)
    for name in (METRICS_FILE, HISTORY_FILE):
        source = out_dir / name
        if not source.is_file():
            continue
        destination = target / name
        try:
            os.link(source, destination)
        except OSError:
            shutil.copy2(source, destination)
    return target


@contextlib.contextmanager
def run_lock(out_dir: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on a run folder for the duration of a training.

    A second ``pepr train`` on the same folder fails at once with a PeprInputError instead of
    training it twice and interleaving its files. The lock is an ``flock`` on
    ``out_dir/.pepr-train.lock``: the kernel releases it when the process dies (kill -9,
    SLURM time limit), so a crash never leaves a stale lock behind.
    """
    import fcntl

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    handle = open(out_dir / LOCK_FILE, "a+", encoding="utf-8")
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise PeprInputError(
                f"run folder {out_dir} is being trained by {holder}; wait for it to finish, "
                "or stop that process first"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {os.uname().nodename}\n")
        handle.flush()
        yield
    finally:
        handle.close()
