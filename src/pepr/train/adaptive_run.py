"""One cell's part in an adaptive sweep: its rung records and its stopped record.

An adaptive sweep (:mod:`pepr.results.adaptive`) trains a cell in segments: ``pepr train
--stop-after N`` trains up to epoch N (continuing from ``resume.pt``, which it keeps) and writes
``OUT/rungN.json``, the *rung record*: the cell, its metrics at epoch N, the resources spent so far
(``energy_kwh``, ``co2_kg``, ``train_time_s`` as running totals, ``peak_memory_mb`` as the peak so
far) and its history rows up to N. The group's decision (rule ``select_rung``) reads those; a
candidate that continues is trained on from its checkpoint by the next rung or the full run, so
no epoch is trained twice and time, energy and CO2 add up over the segments as a resumed run's do.

A candidate that is stopped gets ``pepr train --stopped-at N``: :func:`record_stopped` publishes
its metrics.json with ``status: "stopped"``, the rung and what the rung record holds, and its
history.csv up to epoch N, without training; ``resume.pt`` stays, so a later decision that keeps
it (a raised ``keep``) continues it from there. Standard library only.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pepr.columns import CUMULATIVE_COLUMNS
from pepr.errors import PeprInputError
from pepr.results import runs
from pepr.results.adaptive import read_rung, rung_file
from pepr.results.runs import (
    HISTORY_COLUMNS,
    HISTORY_FILE,
    METRICS_FILE,
    RESULT_KEYS,
    json_safe,
)

#: Metrics of a history row a rung record copies (the selection metric is one of the val_ ones).
RUNG_METRICS: tuple[str, ...] = tuple(c for c in HISTORY_COLUMNS if c.startswith(("val_", "test_")))


def _history_rows(history: Sequence[Mapping[str, Any]], last: int) -> list[dict[str, Any]]:
    return [{c: row.get(c) for c in HISTORY_COLUMNS} for row in history if int(row["epoch"]) <= last]


def rung_record(
    base: Mapping[str, Any], rung: int, history: Sequence[Mapping[str, Any]], peak_memory_mb: Any
) -> dict[str, Any]:
    """The rung record of a cell that reached epoch ``rung``: ``base`` (the cell and its settings),
    the metrics of that epoch, the resources spent up to it and its history rows."""
    rows = _history_rows(history, rung)
    if not rows or int(rows[-1]["epoch"]) != rung:
        raise PeprInputError(f"the history has no epoch {rung}: the rung record needs every epoch up to it")
    at = rows[-1]
    record = {k: v for k, v in base.items() if k not in ("config", "versions", "history", "training_identity")}
    record.update(
        {
            "status": "ok",
            "reason": "",
            "rung": rung,
            "epoch": rung,
            **{name: at.get(name) for name in RUNG_METRICS},
            **{resource: at.get(cumulative) for resource, cumulative in CUMULATIVE_COLUMNS.items()},
            "peak_memory_mb": peak_memory_mb,
            "history": rows,
        }
    )
    return json_safe(record)


def write_rung(
    out_dir: Path,
    rung: int,
    base: Mapping[str, Any],
    history: Sequence[Mapping[str, Any]],
    peak: Mapping[str, Any],
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Write ``out_dir/rungN.json`` after training to epoch ``rung`` (``resume.pt`` is kept)."""
    record = rung_record(base, rung, history, peak.get("peak_memory_mb"))
    runs.atomic_write_json(out_dir / rung_file(rung), record)
    log(
        f"rung {rung}: val acc {record.get('val_accuracy')}, {record['energy_kwh']:.3g} kWh so far; "
        f"the checkpoint is kept for the next segment"
    )
    return record


def write_failed_rung(out_dir: Path, rung: int, failed: Mapping[str, Any]) -> None:
    """The rung record of a cell that failed before its rung (its metrics.json says why)."""
    record = {k: v for k, v in failed.items() if k not in ("config", "versions", "training_identity")}
    runs.atomic_write_json(out_dir / rung_file(rung), json_safe({**record, "rung": rung}))


def rung_from_finished(out_dir: Path, rung: int) -> dict[str, Any] | None:
    """A finished ok run's rung record, written from its metrics.json and history.csv (None when the
    run folder holds no finished ok run): a cell trained in full before is never trained again."""
    import csv

    metrics_path = out_dir / METRICS_FILE
    if not runs.finished_ok(metrics_path):
        return None
    metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
    with open(out_dir / HISTORY_FILE, newline="", encoding="utf-8") as handle:
        rows = [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(handle)]
    if not any(int(row["epoch"]) == rung for row in rows):
        return None
    record = rung_record(metrics, rung, rows, metrics.get("peak_memory_mb"))
    runs.atomic_write_json(out_dir / rung_file(rung), record)
    return record


def _number(text: str) -> Any:
    if text in ("", None):
        return None
    try:
        return int(text)
    except ValueError:
        return float(text)


def _projection(out_dir: Path, rung: int, model: str) -> dict[str, Any]:
    """The candidate's projected PePR and resource in its group's decision (the workflow's
    results layout), for the report's list of stopped runs; empty when there is no decision."""
    from pepr.results.adaptive import decision_path, read_decision

    try:
        decision = read_decision(str(decision_path(out_dir, rung)))
        entry = next(c for c in decision["candidates"] if c["model"] == model)
    except (OSError, ValueError, KeyError, TypeError, StopIteration):
        return {}
    return {
        "projected_pepr": entry.get("projected_pepr"),
        "projected_resource": entry.get("projected_resource"),
        "adaptive_resource": decision.get("resource"),
    }


def record_stopped(cfg: Any, versions: Mapping[str, str], log: Callable[[str], None]) -> dict[str, Any]:
    """Publish a stopped cell's metrics.json and history.csv from its rung record (no training;
    ``resume.pt`` is kept); a cell that failed before its rung gets its failed record back."""
    rung = cfg.stopped_at
    source = cfg.out_dir / rung_file(rung)
    found = read_rung(source)
    if found["status"] != "ok":  # failed before its rung: it drops out with its failed record
        record = {**{key: None for key in RESULT_KEYS}, **found, "config": cfg.as_dict(), "versions": dict(versions)}
        runs.publish_finished(cfg.out_dir, record, [])
        log(f"failed before rung {rung}: {found.get('reason')}")
        return json_safe(record)
    history = found.pop("history", [])
    record = {key: None for key in RESULT_KEYS}
    record.update(found)
    record.update(_projection(cfg.out_dir, rung, cfg.model))
    epochs = cfg.epochs
    record.update(
        {
            "status": "stopped",
            "reason": f"stopped by the adaptive sweep at rung {rung} (epoch {rung} of {epochs}): its projected PePR "
            "was not among the kept candidates'; its numbers are those of epoch "
            f"{rung}, not of a finished run",
            "config": cfg.as_dict(),
            "versions": dict(versions),
        }
    )
    runs.publish_finished(cfg.out_dir, record, history)
    log(f"stopped at rung {rung}: recorded from {source}; the checkpoint is kept")
    return json_safe(record)
