"""Where a sweep stands: every cell finished, failed, running or pending, its cost so far, an ETA.

Read-only and light (standard library only; no pandas, no torch): it reads

* the grid of the config (:func:`pepr.plan.grid.build_grid` without validation: no timm, no data),
* each cell's ``metrics.json`` (a finished cell: status ok, or failed with the reason),
* Snakemake's own state in ``.snakemake/``: ``incomplete/`` markers (a job started and did not
  finish; they hold the SLURM job id) and ``locks/`` (a Snakemake process holds the folder),
* the run folder's ``.pepr-train.lock`` (``pid N on HOST``: a training process on this machine),
* the training log of a cell without metrics (a crash: the last line of its traceback),
* optionally ``squeue`` (one call, a short timeout) for the SLURM jobs of running cells,
* ``results/estimate.csv`` (``pepr estimate -o`` / ``snakemake estimate_cost``) for the estimate.

Finished cells' figures are remembered in ``.snakemake/pepr/status-cache.json``, keyed by each
metrics.json's size and modification time, so a second call on a large sweep reads only what
changed (a ``stat`` per cell).
"""

from __future__ import annotations

import base64
import csv
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from pepr.columns import IDENTITY_COLUMNS, RESOURCE_COLUMNS
from pepr.results.runs import LOCK_FILE, METRICS_FILE, PREVIOUS_DIR, RESUME_FILE

__all__ = ["CellState", "SweepStatus", "STATES", "collect_status", "format_status", "write_status_table"]

#: Cell states, in the order they are reported.
STATES: tuple[str, ...] = ("finished", "stopped", "failed", "running", "pending")

_CACHE_VERSION = 1
#: How much of a log's end is read to find a crash's last line.
_LOG_TAIL_BYTES = 8192
#: What to do about a result that cannot be read (the workflow's repair: pepr.plan.rules).
_REPAIR_ADVICE = (
    "remove it (rm) and run the same snakemake command: the copy kept in the run folder's previous/ is "
    "restored (a readable edit is restored without the rm), or the cell is trained when none is kept"
)


@dataclass
class CellState:
    """One training job of the sweep (a cell, or a pretraining run of the transfer init)."""

    key: str  # results path below the results folder, e.g. runs/d/scratch/1.0/m/seed0
    kind: str  # "cell" or "pretrain"
    model: str
    state: str  # one of STATES
    reason: str = ""  # why it failed; for pending: "interrupted (resumes from its checkpoint)" etc.
    energy_kwh: float | None = None
    co2_kg: float | None = None
    train_time_s: float | None = None
    finished_at: float | None = None  # metrics.json's modification time
    slurm_job: str | None = None
    log: str | None = field(default=None, repr=False)  # the job's log (results/logs/<rule>/...)


#: Figures kept per finished cell (top-level scalars of metrics.json): the resources a CellState holds.
_FIGURES: tuple[str, ...] = tuple(f.name for f in fields(CellState) if f.name in RESOURCE_COLUMNS)


def _mark_crashed(cell: CellState) -> bool:
    """Set ``cell`` failed ("crashed: <last traceback line>") when its log ends in a traceback
    (a job Snakemake kept as incomplete, e.g. with keep-incomplete on SLURM); True if so."""
    reason = crash_reason(cell.log) if cell.log is not None else None
    if reason is None:
        return False
    cell.state, cell.reason = "failed", f"crashed: {reason} (log: {cell.log})"
    return True


@dataclass
class SweepStatus:
    """The state of every job of a sweep and its totals."""

    cells: list[CellState]
    results_dir: str
    snakemake_running: bool  # Snakemake's locks are present (a run holds the folder, or a stale lock)
    estimate: dict[str, float] | None = None  # est_energy_kwh, est_co2_kg, est_device_hours totals
    estimated_times: dict[str, float] = field(default_factory=dict)  # job key -> est_time_s
    estimate_source: str = ""
    parallel: int = 1
    notes: list[str] = field(default_factory=list)
    adaptive: list[str] = field(default_factory=list)  # per rung of an adaptive sweep (pepr.results.adaptive)

    def count(self, state: str) -> int:
        """Number of jobs in ``state``."""
        counts = self.__dict__.get("_counts")
        if counts is None or counts[0] != len(self.cells):
            tally = dict.fromkeys(STATES, 0)
            for cell in self.cells:
                tally[cell.state] = tally.get(cell.state, 0) + 1
            counts = self.__dict__["_counts"] = (len(self.cells), tally)
        return counts[1].get(state, 0)

    def spent(self) -> dict[str, float]:
        """Energy (kWh), CO2 (kg) and device-hours of the jobs that have a metrics.json."""
        totals = dict.fromkeys(("energy_kwh", "co2_kg", "device_hours"), 0.0)
        for cell in self.cells:
            totals["energy_kwh"] += cell.energy_kwh or 0.0
            totals["co2_kg"] += cell.co2_kg or 0.0
            totals["device_hours"] += (cell.train_time_s or 0.0) / 3600.0
        return totals

    def eta(self) -> tuple[float, str] | None:
        """Remaining time and how it was reckoned, or None (nothing finished yet, or nothing left).

        With the estimate's per-job times (results/estimate.csv): the estimated times of the jobs
        left, scaled by measured / estimated time of the finished jobs that have both (so a model
        that is 10x slower still counts 10x); otherwise the mean training time of the finished
        jobs x the jobs left. Either divided by the jobs in parallel.
        """
        finished = [c for c in self.cells if c.state == "finished" and c.train_time_s]
        left = [c for c in self.cells if c.state in ("running", "pending")]
        if not finished or not left:
            return None
        parallel = max(self.parallel, self.count("running"), 1)
        mean = sum(c.train_time_s for c in finished) / len(finished)
        paired = [(c.train_time_s, self.estimated_times[c.key]) for c in finished if self.estimated_times.get(c.key)]
        if paired and all(c.key in self.estimated_times for c in left):
            scale = sum(m for m, _ in paired) / sum(e for _, e in paired)
            total = sum(self.estimated_times[c.key] for c in left) * scale
            return total / parallel, (
                f"the estimate's time per job left x {scale:.2f} (measured / estimated "
                f"over {len(paired)} finished jobs)"
            )
        return mean * len(left) / parallel, "mean training time of the finished jobs"

    def eta_seconds(self) -> float | None:
        """Remaining seconds (see :meth:`eta`), or None."""
        found = self.eta()
        return None if found is None else found[0]


# --------------------------------------------------------------------------------------------
# Snakemake's state
# --------------------------------------------------------------------------------------------


def open_regular(path: str | os.PathLike) -> Any:
    """Open ``path`` for binary reading only when it is a regular file: a FIFO, a device or a
    socket planted at a result's name would block a read or never end, so it raises OSError
    (ENOENT's sibling, "not a regular file") without waiting. Links are followed as open() does."""
    import stat as stat_module

    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    if not stat_module.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(f"{path} is not a regular file")
    return os.fdopen(fd, "rb")


def incomplete_marker(snakemake_dir: str | os.PathLike, output: str) -> Path:
    """Snakemake's ``incomplete/`` marker of an output path (its file persistence backend:
    the URL-safe base64 of the path, split into name-sized pieces as Snakemake splits it)."""
    root = Path(snakemake_dir) / "incomplete"
    b64 = base64.urlsafe_b64encode(output.encode()).decode()
    max_len = 255
    pieces = [b64[i : i + max_len - 1] for i in range(0, len(b64), max_len - 1)]
    pieces = ["@" + p for p in pieces[:-1]] + [pieces[-1]]
    return root.joinpath(*pieces)


def _incomplete_markers(snakemake_dir: Path) -> dict[str, str | None]:
    """Every output Snakemake marked as started and not finished -> its external (SLURM) job id."""
    root = snakemake_dir / "incomplete"
    found: dict[str, str | None] = {}
    if not root.is_dir():
        return found
    for folder, _dirs, files in os.walk(root):
        for name in files:
            if name == "migration_underway":
                continue
            path = Path(folder) / name
            parts = path.relative_to(root).parts
            encoded = "".join(p[1:] if p.startswith("@") else p for p in parts)
            try:
                output = base64.urlsafe_b64decode(encoded.encode()).decode()
            except (ValueError, UnicodeDecodeError):
                continue
            jobid = None
            try:
                with open_regular(path) as handle:
                    jobid = (json.loads(handle.read(65536)) or {}).get("external_jobid")
            except (OSError, ValueError, AttributeError):
                pass
            found[output] = str(jobid) if jobid else None
    return found


def _snakemake_locked(snakemake_dir: Path) -> bool:
    locks = snakemake_dir / "locks"
    return locks.is_dir() and any(name.endswith(".lock") for name in os.listdir(locks))


def squeue_jobs(timeout_s: float = 5.0) -> dict[str, str] | None:
    """This user's SLURM jobs (job id -> state) from one ``squeue`` call, or None when squeue is
    not installed, fails or takes longer than ``timeout_s`` (a busy controller must not hang status)."""
    if shutil.which("squeue") is None:
        return None
    try:
        done = subprocess.run(
            ["squeue", "--me", "--noheader", "--format=%i %T"],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    jobs = {}
    for line in done.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2:
            jobs[parts[0].split("_")[0]] = parts[1]
    return jobs


def _training_process_alive(run_dir: str) -> bool:
    """True when the run folder's lock names a live process on this machine (pepr.results.runs.run_lock).

    The lock file stays after the process ends, so its pid is checked; a pid on another host
    (a SLURM node) is not decided here (None from the caller's view: squeue decides)."""
    try:
        with open_regular(os.path.join(run_dir, LOCK_FILE)) as handle:
            words = handle.read(200).decode("utf-8", "replace").split()
    except OSError:
        return False
    # "pid N on HOST"
    if len(words) < 4 or words[0] != "pid" or words[2] != "on" or words[3] != socket.gethostname():
        return False
    try:
        os.kill(int(words[1]), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True  # exists, another user's
    return True


def crash_reason(log_path: str | os.PathLike) -> str | None:
    """The last line of a Python traceback at the end of a job's log, or None (no crash there)."""
    try:
        with open_regular(log_path) as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - _LOG_TAIL_BYTES))
            tail = handle.read().decode("utf-8", "replace")
    except OSError:
        return None
    if "Traceback (most recent call last)" not in tail:
        return None
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    last = [line for line in lines if not line.startswith("pepr train: the last finished result")]
    return (last[-1] if last else lines[-1])[:300]


# --------------------------------------------------------------------------------------------
# Collecting
# --------------------------------------------------------------------------------------------


def _read_figures(path: str) -> dict[str, Any]:
    with open_regular(path) as handle:
        data = json.loads(handle.read(16 * 2**20 + 1))
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    out = {"status": str(data.get("status") or "failed").strip().lower(), "reason": str(data.get("reason") or "")}
    for key in _FIGURES:
        value = data.get(key)
        out[key] = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    return out


def _load_cache(path: Path | None) -> dict[str, Any]:
    if path is None or not path.is_file():
        return {}
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
        return data["cells"] if data.get("version") == _CACHE_VERSION else {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def _save_cache(path: Path | None, cells: Mapping[str, Any]) -> None:
    if path is None:
        return
    try:
        from pepr.results.runs import atomic_write_json

        atomic_write_json(path, {"version": _CACHE_VERSION, "cells": dict(cells)}, indent=None)
    except OSError:
        pass  # a read-only folder: status still works, just without the cache


def read_estimate_totals(path: str | os.PathLike) -> dict[str, float] | None:
    """Totals of ``est_energy_kwh``, ``est_co2_kg``, ``est_device_hours`` of an estimate table
    (``pepr estimate -o``), read with the csv module; None when the file is absent or unusable."""
    found = read_estimate(path)
    return None if found is None else found[0]


def read_estimate(path: str | os.PathLike) -> tuple[dict[str, float], dict[str, float]] | None:
    """(totals, job key -> est_time_s) of an estimate table, or None when absent or unusable.

    Job keys as :func:`collect_status` names jobs: ``runs/{dataset}/{init}/{fraction}/{model}/seed{seed}``,
    and ``pretrain/{source}/{model}`` for the estimate's init ``pretrain`` rows.
    """
    from pepr.results.runs import format_fraction

    wanted = ("est_energy_kwh", "est_co2_kg", "est_device_hours")
    totals = dict.fromkeys(wanted, 0.0)
    times: dict[str, float] = {}
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or not set(wanted) <= set(reader.fieldnames):
                return None
            keyed = {*IDENTITY_COLUMNS, "est_time_s"} <= set(reader.fieldnames)
            for row in reader:
                for key in wanted:
                    try:
                        totals[key] += float(row[key])
                    except (TypeError, ValueError):
                        pass
                if not keyed:
                    continue
                try:
                    seconds = float(row["est_time_s"])
                    if row["init"] == "pretrain":
                        job = f"pretrain/{row['dataset']}/{row['model']}"
                    else:
                        job = (
                            f"runs/{row['dataset']}/{row['init']}/{format_fraction(float(row['fraction']))}/"
                            f"{row['model']}/seed{int(float(row['seed']))}"
                        )
                except (TypeError, ValueError):
                    continue
                if seconds == seconds and seconds > 0:  # not NaN (a model that could not calibrate)
                    times[job] = seconds
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    return totals, times


def collect_status(
    jobs: Iterable[tuple[str, str, str, str]],
    *,
    results_dir: str | os.PathLike = "results",
    snakemake_dir: str | os.PathLike = ".snakemake",
    estimate_csv: str | os.PathLike | None = None,
    parallel: int = 1,
    use_squeue: bool = True,
    cache_file: str | os.PathLike | None = None,
) -> SweepStatus:
    """The state of every job.

    ``jobs``: (kind, key, model, output) per job: kind "cell" or "pretrain", key its folder below
    ``results_dir`` (``runs/...`` or ``pretrain/...``), output the metrics.json path as the
    workflow names it (what Snakemake's markers are keyed by, e.g. ``results/runs/.../metrics.json``).
    """
    results = Path(results_dir)
    smk = Path(snakemake_dir)
    markers = _incomplete_markers(smk)
    locked = _snakemake_locked(smk)
    cache_path = Path(cache_file) if cache_file is not None else None
    cache = _load_cache(cache_path)
    new_cache: dict[str, Any] = {}
    cells: list[CellState] = []
    needs_squeue: list[CellState] = []
    notes: list[str] = []
    unreadable = 0
    # plain strings and os.path in this loop: pathlib's objects cost ~3x the stat calls at 25k jobs
    results_text = os.fspath(results)
    log_dirs = {
        "cell": os.path.join(results_text, "logs", "train_model"),
        "pretrain": os.path.join(results_text, "logs", "pretrain_source"),
    }
    for kind, key, model, output in jobs:
        run_dir = f"{results_text}/{key}"
        metrics = f"{run_dir}/{METRICS_FILE}"
        try:
            info = os.stat(metrics)
        except OSError:
            info = None
        if info is not None:
            stamp = [info.st_size, info.st_mtime_ns]
            cached = cache.get(key)
            if cached is not None and cached.get("stamp") == stamp:
                figures = cached
            else:
                try:
                    figures = {**_read_figures(metrics), "stamp": stamp}
                except (OSError, ValueError) as exc:
                    unreadable += 1
                    what = "is not a regular file" if "not a regular file" in str(exc) else "is not readable JSON"
                    cells.append(CellState(key, kind, model, "failed", f"{metrics} {what}; {_REPAIR_ADVICE}"))
                    continue
            new_cache[key] = figures
            ok = figures["status"] == "ok"
            finished = "finished" if ok else ("stopped" if figures["status"] == "stopped" else "failed")
            cells.append(
                CellState(
                    key,
                    kind,
                    model,
                    finished,
                    "" if ok else (figures["reason"] or "no reason recorded"),
                    figures.get("energy_kwh"),
                    figures.get("co2_kg"),
                    figures.get("train_time_s"),
                    info.st_mtime,
                )
            )
            continue
        cell = CellState(key, kind, model, "pending")
        log = f"{log_dirs[kind]}/{key.split('/', 1)[1]}.log"
        cell.log = log
        if output in markers:
            cell.slurm_job = markers[output]
            if _training_process_alive(run_dir):
                cell.state = "running"
            elif cell.slurm_job and locked:
                needs_squeue.append(cell)  # running or queued on SLURM: squeue decides
                cell.state = "running"
            elif locked:
                cell.state = "running"
                cell.reason = "started by the Snakemake run holding .snakemake/locks"
            elif not _mark_crashed(cell):
                cell.reason = "interrupted: no Snakemake run holds the folder; rerun with --rerun-incomplete" + (
                    " (it resumes from its last finished epoch)" if os.path.isfile(f"{run_dir}/{RESUME_FILE}") else ""
                )
        else:
            reason = crash_reason(log)
            if reason is not None:
                cell.state = "failed"
                cell.reason = f"crashed: {reason} (log: {log})"
            elif os.path.isfile(f"{run_dir}/{RESUME_FILE}"):
                cell.reason = "interrupted (resumes from its last finished epoch)"
            elif os.path.isdir(f"{run_dir}/{PREVIOUS_DIR}"):
                cell.reason = "result lost: the same snakemake command restores the copy kept in its previous/"
        cells.append(cell)
    if needs_squeue and use_squeue:
        queue = squeue_jobs()
        if queue is None:
            notes.append(
                "squeue did not answer (not installed, failed or slow): SLURM jobs counted as running from Snakemake's markers"
            )
        else:
            for cell in needs_squeue:
                state = queue.get(str(cell.slurm_job))
                if state is None:
                    if not _mark_crashed(cell):
                        cell.state, cell.reason = "pending", f"SLURM job {cell.slurm_job} is no longer in the queue"
                elif state != "RUNNING":
                    cell.state, cell.reason = "pending", f"SLURM job {cell.slurm_job} is {state}"
    if unreadable:
        notes.append(f"{unreadable} metrics.json file(s) could not be read")
    if cache_path is not None and new_cache != cache:
        _save_cache(cache_path, new_cache)
    found = read_estimate(estimate_csv) if estimate_csv is not None else None
    from pepr.results.adaptive import rung_summary

    adaptive = rung_summary(os.fspath(results), [output for output in markers if output.endswith(".json")])
    return SweepStatus(
        adaptive=adaptive,
        cells=cells,
        results_dir=str(results),
        snakemake_running=locked,
        estimate=found[0] if found else None,
        estimated_times=found[1] if found else {},
        estimate_source=str(estimate_csv) if found is not None else "",
        parallel=parallel,
        notes=notes,
    )


# --------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


def format_status(status: SweepStatus, max_listed: int = 20) -> str:
    """The report ``pepr status`` prints: counts, failures with reasons, running jobs, cost, ETA."""
    total = len(status.cells)
    lines = [f"pepr status: {total} jobs in {status.results_dir}/"]
    # "stopped" (an adaptive sweep's) only when there are such cells: a full grid's line is unchanged
    counts = "   ".join(
        f"{state} {status.count(state)}" for state in STATES if state != "stopped" or status.count(state)
    )
    done = status.count("finished") + status.count("stopped") + status.count("failed")
    lines.append(f"  {counts}   ({100.0 * done / total if total else 0:.0f}% done)")
    interrupted = [c for c in status.cells if c.state == "pending" and c.reason.startswith("interrupted")]
    if interrupted:
        lines.append(
            f"  {len(interrupted)} pending job(s) were interrupted and continue from their checkpoint on the next run"
        )
    lines.append(
        "  Snakemake: "
        + (
            "a run holds this folder (.snakemake/locks; after a kill -9 the lock is stale: `snakemake --unlock`)"
            if status.snakemake_running
            else "no run holds this folder"
        )
    )
    if status.adaptive:  # an adaptive sweep: where each rung stands
        lines.append("adaptive sweep:")
        lines.extend(status.adaptive)
    failed = [c for c in status.cells if c.state == "failed"]
    if failed:
        # grouped by reason (a model that cannot run fails the same way in all its cells);
        # crashed jobs first: they need the user (a failed record is a finished result)
        by_reason: dict[str, list[CellState]] = {}
        for cell in failed:
            by_reason.setdefault(cell.reason if cell.reason.startswith("crashed") else cell.reason, []).append(cell)
        order = sorted(by_reason.items(), key=lambda item: (not item[0].startswith("crashed"), -len(item[1])))
        lines.append(f"failed ({len(failed)}):")
        shown = 0
        for reason, cells in order:
            if shown >= max_listed:
                lines.append(f"  ... and {len(failed) - shown} more (pepr status -o status.csv lists every job)")
                break
            if len(cells) == 1:
                lines.append(f"  {cells[0].key}: {reason}")
                shown += 1
                continue
            models = sorted({c.model for c in cells})
            lines.append(f"  {len(cells)} jobs: {reason}")
            lines.append(
                f"    models: {', '.join(models[:8])}" + (f" and {len(models) - 8} more" if len(models) > 8 else "")
            )
            shown += 1
    running = [c for c in status.cells if c.state == "running"]
    if running:
        lines.append(f"running ({len(running)}):")
        for cell in running[:max_listed]:
            detail = cell.reason or (f"SLURM job {cell.slurm_job}" if cell.slurm_job else "")
            lines.append(f"  {cell.key}" + (f": {detail}" if detail else ""))
        if len(running) > max_listed:
            lines.append(f"  ... and {len(running) - max_listed} more (pepr status -o status.csv lists every job)")
    spent = status.spent()
    lines.append("spent so far (jobs with a metrics.json):")
    estimate = status.estimate
    for key, unit, est_key, fmt in (
        ("energy_kwh", "kWh", "est_energy_kwh", "{:.4g}"),
        ("co2_kg", "kg CO2", "est_co2_kg", "{:.4g}"),
        ("device_hours", "device-hours", "est_device_hours", "{:.4g}"),
    ):
        text = f"  {fmt.format(spent[key])} {unit}"
        if estimate is not None and estimate.get(est_key):
            text += f" of an estimated {fmt.format(estimate[est_key])} ({100.0 * spent[key] / estimate[est_key]:.0f}%)"
        lines.append(text)
    if estimate is None:
        lines.append(
            "  (no estimate to compare with: `pepr estimate --configfile ... -o results/estimate.csv` writes one)"
        )
    else:
        lines.append(f"  estimate: {status.estimate_source}")
    eta = status.eta()
    left = status.count("running") + status.count("pending")
    if eta is not None:
        parallel = max(status.parallel, status.count("running"), 1)
        lines.append(
            f"ETA: about {_duration(eta[0])} for {left} job(s) left at {parallel} in parallel "
            f"({eta[1]}; start-up and queue waits not included)"
        )
    elif left:
        lines.append(f"ETA: unknown until a job has finished ({left} left)")
    else:
        lines.append("ETA: nothing left to run")
    lines.extend(f"note: {note}" for note in status.notes)
    return "\n".join(lines)


def write_status_table(status: SweepStatus, path: str | os.PathLike) -> None:
    """One row per job: key, kind, model, state, reason, energy_kwh, co2_kg, train_time_s, slurm_job."""
    import io

    from pepr.results.runs import atomic_write_text

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(("key", "kind", "model", "state", "reason", *_FIGURES, "finished_at", "slurm_job"))
    for cell in status.cells:
        finished = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(cell.finished_at)) if cell.finished_at else ""
        figures = ["" if getattr(cell, key) is None else getattr(cell, key) for key in _FIGURES]
        writer.writerow(
            [cell.key, cell.kind, cell.model, cell.state, cell.reason, *figures, finished, cell.slurm_job or ""]
        )
    atomic_write_text(path, buffer.getvalue())
