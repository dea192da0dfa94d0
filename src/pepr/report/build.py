"""Entry points of the report stage: load once, then write tables, figures and the summary.

Each ``write_*`` function is what one Snakemake rule script calls; the package never imports
``snakemake``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pepr.report import figures, tables
from pepr.report.config import FIGURES, TABLES, ReportConfig
from pepr.report.data import (
    CELL,
    RUN,
    annotate_models,
    load_histories,
    load_model_metadata,
    load_results,
    size_split,
)
from pepr.report.stats import epoch_curves, peak_epochs
from pepr.tableio import write_table

@dataclass
class ReportData:
    """Everything the report is computed from, loaded and checked once."""

    results: pd.DataFrame
    histories: pd.DataFrame
    peaks: pd.DataFrame
    median_params: float
    cfg: ReportConfig
    expected: pd.DataFrame | None = None


def load(
    pepr_csv: str | os.PathLike,
    runs_root: str | os.PathLike,
    cfg: ReportConfig,
    expected: pd.DataFrame | None = None,
) -> ReportData:
    """Read ``pepr.csv``, the model metadata and every successful run's history.

    ``expected``: the planned runs (dataset, init, fraction, model, seed) for the list of
    missing runs; None infers the grid from the values present (see tables.missing_table).
    """
    results = load_results(pepr_csv, cfg)
    results = annotate_models(results, load_model_metadata(cfg.model_metadata))
    histories = load_histories(runs_root, results, cfg)
    if len(histories):
        curves = epoch_curves(histories, cfg.history_performance, cfg.history_resource, CELL)
        peaks = peak_epochs(curves, RUN, cfg.history_performance, cfg.history_resource)
    else:
        peaks = pd.DataFrame(columns=[*RUN, "peak_epoch", "resource_saved", "performance_cost"])
    return ReportData(results, histories, peaks, size_split(results), cfg, expected)


def compute_tables(data: ReportData) -> dict[str, pd.DataFrame]:
    """All report tables by name (see :data:`TABLES`)."""
    df, cfg = data.results, data.cfg
    return {
        "top_k": tables.top_k_table(df, cfg),
        "small_vs_large": tables.small_vs_large_table(df, cfg, data.median_params),
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
        "performance_vs_params": figures.performance_vs_params(df, cfg, data.median_params),
        "pepr_vs_params": figures.pepr_vs_params(df, cfg, data.median_params),
        "init_comparison": figures.paired_comparison(df, cfg, "init"),
        "fraction_comparison": figures.paired_comparison(df, cfg, "fraction"),
        "performance_vs_resource": figures.performance_vs_resource(df, cfg),
        "epoch_pepr": figures.epoch_pepr(data.histories, data.peaks, df, cfg),
    }


def figure_paths(out_dir: str | os.PathLike, cfg: ReportConfig) -> list[Path]:
    """Every figure file the report writes under ``out_dir`` (for the workflow's targets)."""
    return [Path(out_dir) / f"{stem}.{fmt}" for stem in FIGURES.values() for fmt in cfg.figure_formats]


def table_paths(out_dir: str | os.PathLike) -> list[Path]:
    """Every table file the report writes under ``out_dir``."""
    return [Path(out_dir) / name for name in TABLES.values()]


def write_tables(data: ReportData, out_dir: str | os.PathLike) -> list[Path]:
    """Write every table as CSV under ``out_dir``; returns the paths."""
    paths = []
    for name, table in compute_tables(data).items():
        path = Path(out_dir) / TABLES[name]
        write_table(table, path)
        paths.append(path)
    return paths


def write_figures(data: ReportData, out_dir: str | os.PathLike) -> list[Path]:
    """Draw every figure and write it in each configured format under ``out_dir``."""
    paths = []
    for name, fig in draw_figures(data).items():
        paths.extend(figures.save(fig, Path(out_dir) / FIGURES[name], data.cfg.figure_formats))
    return paths


def write_summary(data: ReportData, path: str | os.PathLike) -> Path:
    """Write the plain-language findings (``summary.md``) atomically."""
    from pepr.report.summary import summary_markdown

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(summary_markdown(data, compute_tables(data)), encoding="utf-8")
    os.replace(tmp, path)
    return path
