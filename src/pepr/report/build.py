"""Entry points of the report stage, one per workflow rule: gather the histories, load once,
then write tables, figures and the summary.

Each ``write_*`` function is what one Snakemake rule script calls; the package never imports
``snakemake``. The summary reads the tables the tables rule wrote (:func:`read_tables`), so
nothing (the rank bootstrap above all) is computed twice.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from pepr.columns import GROUP_COLUMNS
from pepr.errors import PeprInputError
from pepr.report import adaptive, exclusion, figures, tables, uncertainty
from pepr.report.config import FIGURES, TABLES, ReportConfig
from pepr.report.data import PreparedTable, ReportData, TableSpec, gather_histories, prepare_table, report_variants

# load / prepare live in pepr.report.loading (the page loads the workflow's pepr.csv with them
# too, and this module writes the page); they are the rule scripts' entry points from here.
from pepr.report.loading import load, prepare
from pepr.report.summary import summary_markdown
from pepr.results.runs import atomic_write_text
from pepr.results.tableio import read_table, write_table

if TYPE_CHECKING:
    from pepr.results.aggregate import CarbonSettings

__all__ = [
    "ReportData",
    "compute_tables",
    "draw_figures",
    "load",
    "prepare",
    "read_tables",
    "write_figures",
    "write_histories",
    "write_pepr_table",
    "write_report",
    "write_summary",
    "write_tables",
]

#: Columns of the tables that name models or levels: read back as text ("1.0" stays "1.0").
TEXT_COLUMNS = [
    "model",
    "context",
    "treatment",
    "baseline",
    "variant",
    "kind",
    "detail",
    "reason",
    "check",
    "recommended_model",
    "best_model",
    "statement",
    "family",
    "contenders",
    "best_pepr_model",
    "interval_method",
    "pretrained",
    "pretrained_fraction",
    "scratch_fraction",
    "severity",
    "checks",
    "table",
    "where",
    "with_flagged",
    "without_flagged",
]
#: Figures drawn against parameter counts: left out for a table without them.
SIZE_FIGURES = ("performance_vs_params", "pepr_vs_params", "model_space", "pooled")


def write_histories(
    paths: list[str | os.PathLike],
    runs_root: str | os.PathLike,
    out: str | os.PathLike,
    carbon: CarbonSettings | None = None,
) -> pd.DataFrame:
    """Gather every run's ``history.csv`` into one table at ``out`` (the gather_histories rule;
    ``carbon``: derive the per-epoch CO2 as aggregation does, see :func:`gather_histories`)."""
    table = gather_histories(paths, runs_root, carbon)
    write_table(table, out)
    return table


def uncertainties(data: ReportData) -> dict:
    """Every group's intervals and comparisons (:mod:`pepr.report.uncertainty`): from the runs'
    test predictions under ``data.runs_root`` where every run of a group has them, else from
    seeds, else from the test-set size column (``data.n_test``, default ``n_test``)."""
    df, cfg = data.results, data.cfg
    columns = list(dict.fromkeys([f"pepr_{cfg.resource}", *(v.column for v in report_variants(df))]))
    n_test = data.n_test or ("n_test" if "n_test" in df.columns else None)
    predictions = uncertainty.load_predictions(df, data.runs_root)
    return uncertainty.group_uncertainties(
        df, cfg.group, cfg.performance, columns, cfg.alpha, cfg.bootstrap_resamples, cfg.seed, predictions, n_test
    )


def compute_tables(data: ReportData, with_changes: bool = True) -> dict[str, pd.DataFrame]:
    """All report tables by name (see :data:`TABLES`), in the report's column names
    (``with_changes`` False: without what leaving the flagged runs out changed)."""
    df, cfg = data.results, data.cfg
    groups_uncertainty = uncertainties(data)
    flags = data.flags if data.flags is not None else tables.run_flags(df, cfg, list(data.resources), data.synthetic)
    computed = {
        "decision": tables.decision_table(df, cfg, groups_uncertainty),
        "intervals": tables.interval_table(df, cfg, groups_uncertainty),
        "footprint": tables.footprint_table(df),
        "measurement_checks": flags.drop(columns="row"),
        "top_k": tables.top_k_table(df, cfg),
        "small_vs_large": tables.small_vs_large_table(df, cfg),
        "size_trend": tables.size_trend_table(df, cfg),
        "paired_init": tables.paired_table(df, cfg, "init"),
        "paired_fraction": tables.paired_table(df, cfg, "fraction"),
        "data_need": tables.data_need_table(df, cfg),
        "seeds": tables.seed_table(df, cfg),
        "rank_ci": tables.rank_table(df, cfg),
        "peaks": data.peaks,
        "failed": tables.failed_table(df, cfg),
        "missing": tables.missing_table(df, cfg, data.expected),
        "energy_methods": tables.energy_method_table(df, cfg),
        "excluded_runs": exclusion.excluded_table(data),
        # adaptive sweeps: what was stopped and saved (empty for a full grid)
        "adaptive_savings": adaptive.savings_table(df, cfg),
        "adaptive_stopped": adaptive.stopped_table(df, cfg),
    }
    computed["verdict_changes"] = (
        exclusion.verdict_changes(data, computed, compute_tables)
        if with_changes
        else pd.DataFrame(columns=exclusion.CHANGE_COLUMNS)
    )
    return computed


def figure_names(cfg: ReportConfig) -> list[str]:
    """The figures drawn for this table: all of :data:`FIGURES`, less those against parameter
    counts when the table has none and the init / fraction comparisons when those are not
    group keys (the workflow always draws all)."""
    factors = {"init_comparison": "init", "fraction_comparison": "fraction"}
    return [
        name
        for name in FIGURES
        if (cfg.params_known or name not in SIZE_FIGURES) and factors.get(name, cfg.group[0]) in cfg.group
    ]


def draw_figures(data: ReportData) -> dict:
    """All report figures by name (see :data:`FIGURES`), as matplotlib Figures."""
    df, cfg = data.results, data.cfg
    draw = {
        "pepr_profile": lambda: figures.pepr_profile(df, cfg),
        "performance_vs_params": lambda: figures.performance_vs_params(df, cfg),
        "pepr_vs_params": lambda: figures.pepr_vs_params(df, cfg),
        "init_comparison": lambda: figures.paired_comparison(tables.paired_table(df, cfg, "init"), df, cfg, "init"),
        "fraction_comparison": lambda: figures.paired_comparison(
            tables.paired_table(df, cfg, "fraction"), df, cfg, "fraction"
        ),
        "performance_vs_resource": lambda: figures.performance_vs_resource(df, cfg),
        "epoch_pepr": lambda: figures.epoch_pepr(data.histories, data.peaks, df, cfg),
        "model_space": lambda: figures.model_space(df, cfg),
        "pooled": lambda: figures.pooled(df, cfg),
    }
    return {name: draw[name]() for name in figure_names(cfg)}


def _to_input_names(table: pd.DataFrame, data: ReportData) -> pd.DataFrame:
    """A table in the input's column names (model -> the --model column, ...)."""
    return table.rename(columns={k: v for k, v in data.names.items() if k in table.columns})


#: A spreadsheet runs a cell that starts with one of these as a formula.
FORMULA_STARTS = ("=", "+", "-", "@")


def _is_formula(value: object) -> bool:
    if not isinstance(value, str) or not value.startswith(FORMULA_STARTS):
        return False
    try:
        float(value)
    except ValueError:
        return True
    return False


def _formulas_as_text(table: pd.DataFrame) -> pd.DataFrame:
    """Text cells a spreadsheet would run as a formula (a model named ``=cmd|...``) get a
    leading apostrophe, as spreadsheets mark text; :func:`read_tables` takes it off again."""
    out = table.copy()
    for column in [c for c in out.columns if not pd.api.types.is_numeric_dtype(out[c])]:
        out[column] = pd.Series([f"'{v}" if _is_formula(v) else v for v in out[column]], index=out.index, dtype=object)
    return out


def write_tables(
    data: ReportData, out_dir: str | os.PathLike, computed: dict[str, pd.DataFrame] | None = None
) -> list[Path]:
    """Write every table (``computed``, None: :func:`compute_tables`) as CSV under ``out_dir``,
    in the input's column names; returns the paths."""
    from pepr.results.outputs import check_output_folder

    check_output_folder(out_dir, "tables folder")  # writable, with room, before computing anything
    paths = []
    for name, table in (computed if computed is not None else compute_tables(data)).items():
        path = Path(out_dir) / TABLES[name]
        write_table(_formulas_as_text(_to_input_names(table.infer_objects(), data)), path)
        paths.append(path)
    return paths


def read_tables(tables_dir: str | os.PathLike, data: ReportData | None = None) -> dict[str, pd.DataFrame]:
    """Read back every table :func:`write_tables` wrote, in the report's column names (group
    and model columns as text); ``data`` None: a workflow table (pepr's own names)."""
    names = data.names if data is not None else {}
    group = list(data.cfg.group) if data is not None else list(GROUP_COLUMNS)
    back = {v: k for k, v in names.items()}
    text = {c: str for c in [*group, *TEXT_COLUMNS, *[names.get(c, c) for c in ("model",)]]}
    out = {}
    for name, file in TABLES.items():
        path = Path(tables_dir) / file
        if not path.is_file():
            raise PeprInputError(f"report table '{path}' does not exist; build the tables first (rule report_tables)")
        try:
            table = pd.read_csv(path, dtype=text, keep_default_na=True)
        except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise PeprInputError(f"cannot read report table '{path}': {exc}; rebuild it (rule report_tables)") from None
        table = table.rename(columns=back)
        for column in [c for c in table.columns if not pd.api.types.is_numeric_dtype(table[c])]:
            table[column] = [
                v[1:] if isinstance(v, str) and v.startswith("'") and _is_formula(v[1:]) else v for v in table[column]
            ]
        # Free-text columns: an empty note is "" (no caveat), not NaN, whatever pandas inferred.
        free = [
            c
            for c in table.columns
            if c.startswith("note") or c in ("reason", "detail", "kind", "model", "context", "statement")
        ]
        for column in free:
            table[column] = table[column].astype(object).where(table[column].notna(), "")
        out[name] = table
    return out


def write_figures(data: ReportData, out_dir: str | os.PathLike) -> list[Path]:
    """Draw every figure and write it in each configured format under ``out_dir``."""
    from pepr.results.outputs import check_output_folder

    check_output_folder(out_dir, "figures folder")  # writable, with room, before drawing anything
    paths = []
    for name, fig in draw_figures(data).items():
        paths.extend(figures.save(fig, Path(out_dir) / FIGURES[name], data.cfg.figure_formats))
    return paths


def write_summary(data: ReportData, tables_dir: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Write the plain-language findings (``summary.md``) atomically, from the tables
    already written under ``tables_dir``."""
    path = Path(path)
    atomic_write_text(path, summary_markdown(data, read_tables(tables_dir, data)))
    return path


def write_pepr_table(prepared: PreparedTable, path: str | os.PathLike) -> Path:
    """The scored table in the input's column names (the input's rows and columns, plus
    ``X_norm`` and ``pepr_X`` per scored resource; failed runs' scores empty)."""
    write_table(prepared.scored, path)
    return Path(path)


def write_report(
    table: str | os.PathLike,
    out_dir: str | os.PathLike,
    spec: TableSpec,
    cfg: ReportConfig,
    histories: str | os.PathLike | None = None,
    n_test: str | None = None,
    runs_root: str | os.PathLike | None = None,
    units: dict[str, str] | None = None,
    performance_percent: bool = False,
) -> list[Path]:
    """``pepr report``: check and score any runs table, then write ``out_dir/pepr.csv``,
    ``tables/*.csv``, ``figures/*``, ``summary.md`` and ``report.html``.

    ``n_test``: the column of test-set sizes for binomial intervals (must exist); ``runs_root``:
    a workflow's ``results/runs`` folder, whose runs' test predictions give paired intervals;
    ``units``: resource column -> unit (:mod:`pepr.report.units`: totals in kWh, kg, hours);
    ``performance_percent``: the performance column holds percentages (divided by 100 first).

    Everything that can be wrong with the input (the table, the histories, a column, a flag)
    is checked before ``out_dir`` is created, so a bad input writes nothing.
    """
    from pepr.report import units as units_module
    from pepr.report.html import write_report_page

    raw = read_table(table)
    units = dict(units or {})
    for column, unit in units.items():
        units_module.check_unit(column, unit)
    if performance_percent:
        original = {new: old for old, new in spec.rename}.get(
            spec.performance or "test_accuracy", spec.performance or "test_accuracy"
        )
        if original in raw.columns:
            raw = raw.assign(**{original: pd.to_numeric(raw[original], errors="coerce") / 100})
    prepared = prepare_table(raw, spec, cfg, source=f"'{table}'")
    history_table = None
    if histories is not None:
        history_table = read_table(histories)
        history_table = history_table.rename(
            columns={old: new for old, new in spec.rename if old in history_table.columns}
        )
    data = prepare(prepared, history_table, None)
    if n_test is not None and n_test not in data.results.columns:
        raise PeprInputError(f"--n-test {n_test!r}: no such column in '{table}'; name the column of test-set sizes")
    if runs_root is not None and not Path(runs_root).is_dir():
        raise PeprInputError(f"--runs '{runs_root}' is not a folder; give the workflow's results/runs folder")
    data = dataclasses.replace(
        data,
        n_test=n_test,
        runs_root=None if runs_root is None else str(runs_root),
        results=units_module.to_footprint_columns(data.results, units),
    )
    computed = compute_tables(data)  # before any file: a failure here leaves nothing behind
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Everything is written into a hidden sibling first and moved into --out only once complete:
    # a failure mid-report (a figure, a full disk) leaves --out as it was.
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.pepr-report-", dir=out.parent))
    try:
        written = [write_pepr_table(prepared, staging / "pepr.csv")]
        written += write_tables(data, staging / "tables", computed)
        written += write_figures(data, staging / "figures")
        written.append(write_summary(data, staging / "tables", staging / "summary.md"))
        written.append(Path(write_report_page(staging, data.cfg, data=data)))
        out.mkdir(exist_ok=True)
        paths = []
        for path in written:
            target = out / Path(path).relative_to(staging)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
            paths.append(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return paths
