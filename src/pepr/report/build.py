"""Entry points of the report stage, one per workflow rule: gather the histories, load once,
then write tables, figures and the summary.

Each ``write_*`` function is what one Snakemake rule script calls; the package never imports
``snakemake``. The summary reads the tables the tables rule wrote (:func:`read_tables`), so
nothing (the rank bootstrap above all) is computed twice.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from pepr.errors import PeprInputError
from pepr.report import figures, tables
from pepr.report.config import FIGURES, TABLES, ReportConfig
from pepr.report.data import (
    CELL,
    RUN,
    ReportData,
    annotate_models,
    gather_histories,
    load_histories,
    load_model_metadata,
    load_results,
    mark_sizes,
    size_split,
)
from pepr.report.stats import epoch_curves, peak_epochs
from pepr.report.summary import summary_markdown
from pepr.runs import atomic_write_text
from pepr.tableio import write_table

__all__ = ["ReportData", "compute_tables", "draw_figures", "load", "read_tables", "write_figures",
           "write_histories", "write_summary", "write_tables"]

#: Columns of the tables that name cells, models or levels: read back as text ("1.0" stays "1.0").
TEXT_COLUMNS = {c: str for c in [*CELL, "model", "context", "treatment", "baseline", "variant", "kind", "detail", "reason"]}


def write_histories(paths: list[str | os.PathLike], runs_root: str | os.PathLike, out: str | os.PathLike) -> pd.DataFrame:
    """Gather every run's ``history.csv`` into one table at ``out`` (the gather_histories rule)."""
    table = gather_histories(paths, runs_root)
    write_table(table, out)
    return table


def load(
    pepr_csv: str | os.PathLike,
    histories: str | os.PathLike | None,
    cfg: ReportConfig,
    expected: pd.DataFrame | None = None,
) -> ReportData:
    """Read ``pepr.csv``, the model metadata and the gathered histories (``histories`` None:
    none, for the summary, which reads the peak-epoch table instead).

    ``expected``: the planned runs (dataset, init, fraction, model, seed) for the list of
    missing runs; None infers the grid from the values present (see tables.missing_table).
    """
    results = load_results(pepr_csv, cfg)
    results = annotate_models(results, load_model_metadata(cfg.model_metadata))
    results = mark_sizes(results, size_split(results))
    history = load_histories(histories, results, cfg)
    if len(history):
        curves = epoch_curves(history, cfg.history_performance, cfg.history_resource, CELL)
        peaks = peak_epochs(curves, RUN, cfg.history_performance, cfg.history_resource)
    else:
        peaks = pd.DataFrame(columns=tables.PEAK_COLUMNS)
    return ReportData(results, history, peaks, cfg, expected)


def compute_tables(data: ReportData) -> dict[str, pd.DataFrame]:
    """All report tables by name (see :data:`TABLES`)."""
    df, cfg = data.results, data.cfg
    return {
        "top_k": tables.top_k_table(df, cfg),
        "small_vs_large": tables.small_vs_large_table(df, cfg),
        "paired_init": tables.paired_table(df, cfg, "init"),
        "paired_fraction": tables.paired_table(df, cfg, "fraction"),
        "seeds": tables.seed_table(df, cfg),
        "rank_ci": tables.rank_table(df, cfg),
        "peaks": data.peaks,
        "failed": tables.failed_table(df),
        "missing": tables.missing_table(df, data.expected),
        "energy_methods": tables.energy_method_table(df),
    }


def draw_figures(data: ReportData) -> dict:
    """All report figures by name (see :data:`FIGURES`), as matplotlib Figures."""
    df, cfg = data.results, data.cfg
    return {
        "pepr_profile": figures.pepr_profile(df, cfg),
        "performance_vs_params": figures.performance_vs_params(df, cfg),
        "pepr_vs_params": figures.pepr_vs_params(df, cfg),
        "init_comparison": figures.paired_comparison(tables.paired_table(df, cfg, "init"), df, cfg, "init"),
        "fraction_comparison": figures.paired_comparison(tables.paired_table(df, cfg, "fraction"), df, cfg, "fraction"),
        "performance_vs_resource": figures.performance_vs_resource(df, cfg),
        "epoch_pepr": figures.epoch_pepr(data.histories, data.peaks, df, cfg),
        "model_space": figures.model_space(df, cfg),
    }


def figure_paths(out_dir: str | os.PathLike, cfg: ReportConfig) -> list[Path]:
    """Every figure file the report writes under ``out_dir`` (for the workflow's targets)."""
    return [Path(out_dir) / f"{stem}.{fmt}" for stem in FIGURES.values() for fmt in cfg.figure_formats]


def table_paths(out_dir: str | os.PathLike) -> list[Path]:
    """Every table file the report writes under ``out_dir``."""
    return [Path(out_dir) / name for name in TABLES.values()]


def write_tables(data: ReportData, out_dir: str | os.PathLike) -> list[Path]:
    """Write every table as CSV under ``out_dir``; returns the paths."""
    from pepr.outputs import check_output_folder

    check_output_folder(out_dir, "tables folder")  # writable, with room, before computing anything
    paths = []
    for name, table in compute_tables(data).items():
        path = Path(out_dir) / TABLES[name]
        write_table(table, path)
        paths.append(path)
    return paths


def read_tables(tables_dir: str | os.PathLike) -> dict[str, pd.DataFrame]:
    """Read back every table :func:`write_tables` wrote (cell and model columns as text)."""
    out = {}
    for name, file in TABLES.items():
        path = Path(tables_dir) / file
        if not path.is_file():
            raise PeprInputError(f"report table '{path}' does not exist; build the tables first (rule report_tables)")
        try:
            out[name] = pd.read_csv(path, dtype=TEXT_COLUMNS, keep_default_na=True)
        except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise PeprInputError(f"cannot read report table '{path}': {exc}; rebuild it (rule report_tables)") from None
        # Free-text columns: an empty note is "" (no caveat), not NaN, whatever pandas inferred.
        text = [c for c in out[name].columns if c.startswith("note") or c in ("reason", "detail", "kind", "model", "context")]
        for column in text:
            out[name][column] = out[name][column].astype(object).where(out[name][column].notna(), "")
    return out


def write_figures(data: ReportData, out_dir: str | os.PathLike) -> list[Path]:
    """Draw every figure and write it in each configured format under ``out_dir``."""
    from pepr.outputs import check_output_folder

    check_output_folder(out_dir, "figures folder")  # writable, with room, before drawing anything
    paths = []
    for name, fig in draw_figures(data).items():
        paths.extend(figures.save(fig, Path(out_dir) / FIGURES[name], data.cfg.figure_formats))
    return paths


def write_summary(data: ReportData, tables_dir: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Write the plain-language findings (``summary.md``) atomically, from the tables
    already written under ``tables_dir``."""
    path = Path(path)
    atomic_write_text(path, summary_markdown(data, read_tables(tables_dir)))
    return path
