"""Per-run ``metrics.json`` files -> ``results/runs.csv`` -> ``results/pepr.csv``.

``runs.csv`` has one tidy row per run of the grid, failed runs included (``status``,
``reason``). Its ``dataset``, ``init``, ``fraction``, ``model`` and ``seed`` columns are the cell's
names in the workflow, read from the run's folder
``results/runs/{dataset}/{init}/{fraction}/{model}/seed{seed}/``; what the run itself recorded
as ``dataset`` and ``init`` (the ``pepr train`` arguments, e.g. ``checkpoint:PATH``) is kept as
``dataset_spec`` and ``init_spec``. Every other top-level scalar of metrics.json becomes a column.

Transfer runs (init ``transfer``) start from a checkpoint pretrained once per model on a source
dataset. Each such row carries the pretraining run's cost (``pretrain_energy_kwh``,
``pretrain_co2_kg``, ``pretrain_train_time_s``, ``pretrain_peak_memory_mb``), the number of
fine-tune runs sharing that checkpoint (``pretrain_uses``), and, for the additive resources
(energy, CO2, time), ``X_amortised = X + pretrain_X / pretrain_uses``. Other rows get
``X_amortised = X`` (ImageNet pretraining was paid by others and is not counted).

``pepr.csv`` adds ``X_norm`` and ``pepr_X`` for every resource and amortised resource, scored
with :func:`pepr.results.scoring.score` within each dataset x init x fraction cell over its successful
runs; failed runs get empty scores.

This module uses json + pandas only (never torch) and builds each frame once, so 24,000 runs
aggregate in seconds.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from pepr.columns import AMORTISED_RESOURCES, GROUP_COLUMNS, IDENTITY_COLUMNS, SCORED_RESOURCES, amortised_column
from pepr.errors import PeprInputError
from pepr.results.adaptive import projected_full_runs
from pepr.results.runs import normalise_status, parse_pretrain_path, parse_run_path
from pepr.results.scoring import norm_column, pepr_column, score

__all__ = [
    "CELL_COLUMNS",
    "GROUP_COLUMNS",
    "RESOURCES",
    "AMORTISED_RESOURCES",
    "read_metrics",
    "CarbonSettings",
    "collect_runs",
    "score_runs",
    "aggregate_to_csv",
    "score_to_csv",
]

#: Columns naming a run, in the order they lead runs.csv (the run contract's, :mod:`pepr.results.runs`).
CELL_COLUMNS: tuple[str, ...] = IDENTITY_COLUMNS
#: Resource columns scored in pepr.csv (PePR-E, -C, -T, -M; :mod:`pepr.columns`).
RESOURCES: tuple[str, ...] = SCORED_RESOURCES
#: Pretraining columns copied onto each transfer run.
PRETRAIN_COLUMNS: tuple[str, ...] = SCORED_RESOURCES


#: Nested values of metrics.json that aggregation reads (CO2 from the energy per epoch).
_CO2_INPUTS: tuple[str, ...] = ("energy_per_epoch", "epoch_midpoints_unix")


def read_metrics(path: str | os.PathLike, keep: Sequence[str] = ()) -> dict[str, Any]:
    """The top-level scalars of one metrics.json (nested objects are left in the file, except
    the keys named in ``keep``).

    Raises PeprInputError naming the file when it is missing, not JSON, or not an object.
    """
    from pepr.files import file_kind_problem

    problem = file_kind_problem(path, "metrics file")
    if problem and not problem.endswith("not found"):  # a FIFO would block the read
        raise PeprInputError(f"{problem}; delete it and re-run its training job")
    try:
        with open(path, "rb") as handle:
            data = json.load(handle, parse_float=_finite_float, parse_int=_bounded_int, parse_constant=_no_constant)
    except FileNotFoundError:
        raise PeprInputError(f"metrics file '{path}' does not exist; re-run its training job") from None
    except RecursionError:
        raise PeprInputError(
            f"metrics file '{path}' is nested too deeply to be a pepr metrics.json; delete it and re-run its training job"
        ) from None
    except (OSError, ValueError) as exc:
        raise PeprInputError(
            f"metrics file '{path}' is not readable JSON ({exc}); delete it and re-run its training job"
        ) from None
    if not isinstance(data, dict):
        raise PeprInputError(f"metrics file '{path}' must hold a JSON object, not {type(data).__name__}")
    return {key: value for key, value in data.items() if key in keep or not isinstance(value, (dict, list))}


class CarbonSettings:
    """The carbon intensity CO2 is derived with at aggregation: CO2 = measured energy x
    intensity, per epoch (``energy_per_epoch``), at ``country``'s average or, with a series
    (``carbon_intensity`` CSV), at each epoch's midpoint (``epoch_midpoints_unix``). So a
    corrected country or series re-aggregates and re-scores; nothing is trained again."""

    def __init__(self, country: str, carbon_intensity: str | os.PathLike | None = None) -> None:
        from pepr.results import carbon

        self.country = country
        self.series = carbon.read_carbon_intensity(carbon_intensity) if carbon_intensity else None
        self.intensity = None if self.series is not None else carbon.country_intensity_g_per_kwh(country)

    def co2(self, metrics: Mapping[str, Any]) -> tuple[float | None, str]:
        """(CO2 in kg, where its intensity came from) of one run's metrics (with _CO2_INPUTS)."""
        energies = metrics.get("energy_per_epoch")
        if not isinstance(energies, list) or not energies or not all(isinstance(e, (int, float)) for e in energies):
            total = metrics.get("energy_kwh")
            energies = [total] if isinstance(total, (int, float)) and not isinstance(total, bool) else None
        if energies is None:
            return None, "no energy recorded"
        midpoints = metrics.get("epoch_midpoints_unix")
        per_epoch = self.epoch_co2(energies, midpoints if isinstance(midpoints, list) else None)
        if per_epoch is not None:
            source = (
                self.series.source if self.series is not None else f"country {self.country} ({self.intensity:g} g/kWh)"
            )
            return sum(per_epoch), source
        if self.series is None:
            return None, "energy not a number"
        recorded = metrics.get("co2_kg")
        return (
            float(recorded) if isinstance(recorded, (int, float)) else None
        ), "recorded at training (no epoch times for the series)"

    def epoch_co2(self, energies: Sequence[Any], midpoints: Sequence[Any] | None = None) -> list[float] | None:
        """Per-epoch CO2 in kg of the per-epoch energies (kWh), as :meth:`co2` derives the run's
        total: at the country's average, or at each epoch's midpoint (UTC epoch seconds) on the
        series; None when an energy is not a number, or the series has no time for every epoch."""
        values = [
            float(e) for e in energies if isinstance(e, (int, float)) and not isinstance(e, bool) and np.isfinite(e)
        ]
        if len(values) != len(energies):
            return None
        if self.series is None:
            return [e * self.intensity / 1000.0 for e in values]
        if (
            midpoints is None
            or len(midpoints) != len(values)
            or not all(isinstance(m, (int, float)) for m in midpoints)
        ):
            return None
        return [e * self.series.at(m) / 1000.0 for e, m in zip(values, midpoints)]


def _finite_float(text: str) -> float:
    value = float(text)
    if not np.isfinite(value):  # 1e400: json reads it as inf, which no measurement is
        raise ValueError(f"the number {text[:40]} is out of range")
    return value


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > 19:  # beyond int64: pandas would raise OverflowError later
        raise ValueError(f"the integer {text[:40]}... is out of range")
    return int(text)


def _no_constant(text: str) -> float:
    raise ValueError(f"{text} is not a number pepr writes (metrics.json holds null for undefined values)")


def collect_runs(
    metrics_files: Iterable[str | os.PathLike],
    pretrain_files: Iterable[str | os.PathLike] = (),
    runs_root: str | os.PathLike = "results/runs",
    carbon: CarbonSettings | None = None,
) -> pd.DataFrame:
    """Build the runs table from metrics.json files (one row each, sorted by cell).

    With ``carbon`` (:class:`CarbonSettings`), ``co2_kg`` (and ``pretrain_co2_kg``) are derived
    from each run's measured energy per epoch; ``co2_kg_recorded`` keeps what training recorded
    and ``co2_source`` says which intensity was used.

    ``pretrain_files`` are the pretraining runs' metrics.json
    (``results/pretrain/{source}/{model}/metrics.json``); every ``transfer`` row is joined with
    the one of its model. Raises PeprInputError when a file is unreadable, a path is not laid out
    as a run folder, a run folder disagrees with the model/seed its metrics.json recorded, or a
    transfer run has no pretraining record.
    """
    root = os.fspath(runs_root)
    records = []
    mismatched = []
    sources = []
    for path in metrics_files:
        path = os.fspath(path)
        sources.append(path)
        cell = parse_run_path(path, root).columns()
        metrics = read_metrics(path, keep=_CO2_INPUTS if carbon is not None else ())
        if carbon is not None:
            _derive_co2(metrics, carbon)
        recorded_model, recorded_seed = metrics.get("model"), metrics.get("seed")
        if (recorded_model is not None and recorded_model != cell["model"]) or (
            recorded_seed is not None and recorded_seed != cell["seed"]
        ):
            mismatched.append(f"{path} (records model={recorded_model!r}, seed={recorded_seed!r})")
        metrics["dataset_spec"] = metrics.pop("dataset", None)
        metrics["init_spec"] = metrics.pop("init", None)
        metrics.pop("model", None)
        metrics.pop("seed", None)
        metrics.pop("fraction", None)
        records.append({**cell, **metrics})
    if mismatched:
        raise PeprInputError(
            "run folders disagree with the metrics.json inside them (moved or copied by hand?): "
            + "; ".join(mismatched[:10])
        )
    if not records:
        raise PeprInputError("no metrics.json files given: the grid has no runs to aggregate")
    frame = pd.DataFrame.from_records(records)
    if "status" not in frame.columns:
        raise PeprInputError("no metrics.json has a 'status' key; these are not pepr train outputs")
    frame["status"] = normalise_status(frame["status"], sources, "metrics.json")
    if "reason" not in frame.columns:
        frame["reason"] = ""
    frame["reason"] = frame["reason"].fillna("")
    frame = frame.sort_values(list(CELL_COLUMNS), kind="stable").reset_index(drop=True)
    frame = _add_pretrain_costs(frame, [os.fspath(p) for p in pretrain_files], carbon)
    leading = [*CELL_COLUMNS, "status", "reason"]
    return frame[leading + [c for c in frame.columns if c not in leading]]


def _derive_co2(metrics: dict[str, Any], carbon: CarbonSettings) -> None:
    """Replace a run's co2_kg by the one derived with ``carbon`` (kept: co2_kg_recorded)."""
    energies = {key: metrics.pop(key, None) for key in _CO2_INPUTS}
    if str(metrics.get("status", "")).strip().lower() != "ok":
        return
    metrics["co2_kg_recorded"] = metrics.get("co2_kg")
    metrics["co2_kg"], metrics["co2_source"] = carbon.co2({**metrics, **energies})
    energy = metrics.get("energy_kwh")
    if isinstance(metrics["co2_kg"], float) and isinstance(energy, (int, float)) and energy:
        metrics["carbon_intensity_g_per_kwh"] = 1000.0 * metrics["co2_kg"] / energy


def _add_pretrain_costs(
    frame: pd.DataFrame, pretrain_files: Sequence[str], carbon: CarbonSettings | None = None
) -> pd.DataFrame:
    by_model: dict[str, tuple[str, dict[str, Any]]] = {}
    for path in pretrain_files:
        model = parse_pretrain_path(path).model
        if model in by_model:
            raise PeprInputError(
                f"two pretraining runs for model {model!r}: {by_model[model][0]} and {path}; "
                "one sweep pretrains each model once"
            )
        metrics = read_metrics(path, keep=_CO2_INPUTS if carbon is not None else ())
        if carbon is not None:
            _derive_co2(metrics, carbon)
        by_model[model] = (path, metrics)
    transfer = frame["init"] == "transfer"
    missing = sorted(set(frame.loc[transfer, "model"]) - set(by_model))
    if missing:
        raise PeprInputError(
            f"transfer runs of {', '.join(missing)} have no pretraining metrics among the inputs "
            "(results/pretrain/SOURCE/MODEL/metrics.json)"
        )
    uses = frame.loc[transfer, "model"].value_counts()
    columns: dict[str, Any] = {
        "pretrain_source": pd.Series(pd.NA, index=frame.index, dtype="object"),
        "pretrain_status": pd.Series(pd.NA, index=frame.index, dtype="object"),
    }
    for resource in PRETRAIN_COLUMNS:
        columns[f"pretrain_{resource}"] = pd.Series(np.nan, index=frame.index)
    columns["pretrain_uses"] = pd.Series(np.nan, index=frame.index)
    for model, (path, metrics) in by_model.items():
        rows = transfer & (frame["model"] == model)
        if not rows.any():
            continue
        columns["pretrain_source"][rows] = parse_pretrain_path(path).source
        columns["pretrain_status"][rows] = str(metrics.get("status") or "failed").strip().lower()
        for resource in PRETRAIN_COLUMNS:
            value = metrics.get(resource)
            columns[f"pretrain_{resource}"][rows] = float(value) if isinstance(value, (int, float)) else np.nan
        columns["pretrain_uses"][rows] = int(uses[model])
    out = frame.assign(**columns)
    for resource in AMORTISED_RESOURCES:
        base = (
            pd.to_numeric(out[resource], errors="coerce")
            if resource in out.columns
            else pd.Series(np.nan, index=out.index)
        )
        share = out[f"pretrain_{resource}"] / out["pretrain_uses"]
        out[amortised_column(resource)] = np.where(transfer, base + share, base)
    return out


def score_runs(
    runs: pd.DataFrame,
    performance: str = "test_accuracy",
    resources: Sequence[str] = RESOURCES,
    amortised: Sequence[str] = AMORTISED_RESOURCES,
    by: Sequence[str] = GROUP_COLUMNS,
    skip_undefined: bool = False,
) -> pd.DataFrame:
    """The runs table plus ``X_norm`` and ``pepr_X`` for each resource and amortised resource.

    ``skip_undefined`` (the workflow's score_runs rule, via :func:`score_to_csv`): a successful
    run whose performance is empty is left unscored with a ``score_note`` and a warning instead of
    stopping the sweep's scoring; without it (``pepr score`` on a user's table) that is an error.

    Scored within each ``by`` cell over the runs whose status is "ok"; other runs keep empty
    scores. Rows and existing columns are unchanged. Amortised columns are scored only when
    present (tables built by :func:`collect_runs` always have them). Raises PeprInputError when a
    successful run lacks the performance or a resource (naming the run).
    """
    resource_columns = list(resources) + [amortised_column(r) for r in amortised if amortised_column(r) in runs.columns]
    if "status" not in runs.columns:
        raise PeprInputError("the runs table has no 'status' column; build it with pepr's aggregate_runs rule")
    # See normalise_status: "OK" is a successful run, never silently dropped from the scores.
    ok = normalise_status(runs["status"], lambda: _run_labels(runs)) == "ok"
    out = runs.copy()
    for resource in resource_columns:
        out[norm_column(resource)] = np.nan
        out[pepr_column(resource)] = np.nan
    # A finished run whose performance is undefined (e.g. test_auc of a test set with one class)
    # cannot be scored: it keeps empty scores and says why in score_note, the others are scored.
    undefined = ok & (
        pd.to_numeric(runs[performance], errors="coerce").isna()
        if skip_undefined and performance in runs.columns
        else False
    )
    if undefined.any():  # the column appears only then: tables of fully defined sweeps keep their contract
        out["score_note"] = ""
        out.loc[undefined, "score_note"] = f"not scored: {performance} is undefined (empty) for this run"
        names = ", ".join(label for label, bad in zip(_run_labels(runs), undefined) if bad)
        warnings.warn(
            f"pepr: {int(undefined.sum())} run(s) have no {performance} and are not scored: {names[:500]}", stacklevel=2
        )
        ok = ok & ~undefined
    if ok.any():
        successful = runs.loc[ok]
        # Label rows by their run so that an error message names the runs at fault.
        labels = pd.Index(_run_labels(successful), name="run")
        labelled = successful.set_axis(labels, axis=0)
        # an adaptive sweep's stopped runs widen their cell's range at their projected full-run cost
        stopped = projected_full_runs(runs, resource_columns)
        scored = score(labelled, performance=performance, resources=resource_columns, by=list(by), reference=stopped)
        for resource in resource_columns:
            for column in (norm_column(resource), pepr_column(resource)):
                out.loc[ok, column] = scored[column].to_numpy()
    return out


def _run_labels(runs: pd.DataFrame) -> list[str]:
    """``dataset/init/fraction/model/seed`` of every row (row numbers when a cell column is absent)."""
    if not all(c in runs.columns for c in CELL_COLUMNS):
        return [f"row {i}" for i in runs.index]  # the input's own row numbers, also for a subset
    return ["/".join(map(str, cell)) for cell in zip(*(runs[c] for c in CELL_COLUMNS))]


def aggregate_to_csv(
    metrics_files: Iterable[str | os.PathLike],
    output: str | os.PathLike,
    pretrain_files: Iterable[str | os.PathLike] = (),
    runs_root: str | os.PathLike = "results/runs",
    carbon: CarbonSettings | None = None,
) -> pd.DataFrame:
    """:func:`collect_runs` written atomically to ``output`` (CSV or Parquet by extension)."""
    from pepr.results.tableio import write_table

    frame = collect_runs(metrics_files, pretrain_files, runs_root, carbon)
    write_table(frame, output)
    return frame


def score_to_csv(
    runs_table: str | os.PathLike,
    output: str | os.PathLike,
    performance: str = "test_accuracy",
    settings: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Read runs.csv, :func:`score_runs` it, write pepr.csv atomically."""
    from pepr.results.tableio import read_table, write_table

    runs = read_table(runs_table)
    scored = score_runs(runs, performance=performance, **{"skip_undefined": True, **dict(settings or {})})
    write_table(scored, output)
    return scored
