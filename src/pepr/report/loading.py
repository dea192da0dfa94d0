"""Loading a results table into what the report is computed from (:class:`ReportData`): the
one path of the workflow's report rules and of ``pepr report``.

Its own module so that both :mod:`pepr.report.build` (which writes the page) and
:mod:`pepr.report.html` (which loads the workflow's ``pepr.csv`` for the interactive plots
when it is given no data) can use it without importing each other.
"""

from __future__ import annotations

import os

import pandas as pd

from pepr.report import tables
from pepr.report.config import ReportConfig
from pepr.report.data import (
    PreparedTable,
    ReportData,
    TableSpec,
    annotate_models,
    load_histories,
    load_model_metadata,
    mark_sizes,
    prepare_results,
    prepare_table,
    run_columns,
    size_split,
)
from pepr.report.exclusion import annotate
from pepr.report.stats import epoch_curves, peak_epochs
from pepr.results.tableio import read_table

__all__ = ["load", "prepare"]


def prepare(
    prepared: PreparedTable,
    histories: str | os.PathLike | pd.DataFrame | None,
    expected: pd.DataFrame | None = None,
) -> ReportData:
    """Everything the report is computed from, from a checked and scored table
    (:func:`pepr.report.data.prepare_table`): the results with model metadata and the
    small/large split, the histories (``histories`` None: none) and their peak epochs.

    ``expected``: the planned runs (group columns, model, seed) for the list of missing runs;
    None infers the grid from the values present (see tables.missing_table).
    """
    cfg = prepared.cfg
    results = prepare_results(prepared.table, cfg)
    results = annotate_models(results, load_model_metadata(cfg.model_metadata))
    split = size_split(results, cfg.group) if cfg.params_known else None
    results = mark_sizes(results, split, cfg.group)
    if isinstance(histories, pd.DataFrame):
        histories = histories.rename(columns={v: k for k, v in prepared.names.items()})
    history = load_histories(histories, results, cfg)
    if len(history):
        curves = epoch_curves(history, cfg.history_performance, cfg.history_resource, list(cfg.group))
        peaks = peak_epochs(curves, run_columns(cfg), cfg.history_performance, cfg.history_resource)
    else:
        peaks = pd.DataFrame(columns=[*cfg.group, *tables.PEAK_COLUMNS])
    data = ReportData(
        results, history, peaks, cfg, expected, dict(prepared.names), prepared.resources, prepared.synthetic
    )
    return annotate(data)  # measurement flags on every run; the harmful ones left out when configured


def load(
    pepr_csv: str | os.PathLike,
    histories: str | os.PathLike | None,
    cfg: ReportConfig,
    expected: pd.DataFrame | None = None,
    spec: TableSpec | None = None,
) -> ReportData:
    """Read a results table (the workflow's ``pepr.csv``), check it (and score it, unless it is
    scored) as ``spec`` says and load the histories: :func:`prepare` of
    :func:`~pepr.report.data.prepare_table`, the one path of the workflow and ``pepr report``.

    ``spec`` None: the workflow's pepr.csv, which its score_runs rule scored: its columns, its
    scores read as they are (not computed again), a finished run with an undefined performance
    listed as not scored.
    """
    raw = read_table(pepr_csv)
    spec = spec or TableSpec(performance=cfg.performance, skip_undefined_performance=True, scored=True)
    prepared = prepare_table(raw, spec, cfg, source=f"'{pepr_csv}'")
    return prepare(prepared, histories, expected)
