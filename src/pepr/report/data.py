"""Loading and checking the report's inputs: ``pepr.csv``, per-run histories, model metadata.

Everything here is pandas/numpy only (the report never imports torch). Bad input raises
:class:`~pepr.errors.PeprInputError` naming the file and what is wrong, before any figure is drawn.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from importlib import resources as importlib_resources
from pathlib import Path

import numpy as np
import pandas as pd

from pepr.errors import PeprInputError
from pepr.report.config import STANDARD_RESOURCES, ReportConfig
from pepr.runs import format_fraction, parse_run_path
from pepr.tableio import read_table

#: The columns naming a run's experiment cell (the PePR normalisation group).
CELL = ["dataset", "init", "fraction"]
#: The columns naming one run.
RUN = [*CELL, "model", "seed"]
#: Columns every pepr.csv must have for the report.
REQUIRED = [*RUN, "status", "reason", "params", "energy_method"]
#: Packaged copy of the paper's model table (written by the workflow stage when present).
PACKAGED_METADATA = "paper_models.csv"


@dataclass(frozen=True)
class Variant:
    """One PePR variant present in the table: resource column, score column, label."""

    resource: str
    column: str
    label: str


def cell_label(key: tuple) -> str:
    """Human label of a cell key ``(dataset, init, fraction)``."""
    dataset, init, fraction = key
    return f"{dataset} / {init} / {fraction_label(fraction)}"


def fraction_label(fraction: str) -> str:
    """``'0.1'`` -> ``'10% data'``."""
    try:
        return f"{float(fraction) * 100:g}% data"
    except ValueError:
        return str(fraction)


def load_results(path: str | os.PathLike, cfg: ReportConfig) -> pd.DataFrame:
    """Read ``pepr.csv`` and check it carries what the report needs.

    The cell columns are read as text so that they match the run folders' names exactly
    (``fraction`` ``1.0`` stays ``"1.0"``); ``fraction_value`` holds the number for ordering.
    Adds ``ok`` (status == "ok").
    """
    table = read_table(path)
    missing = [c for c in REQUIRED if c not in table.columns]
    if missing:
        raise PeprInputError(
            f"'{path}' lacks column(s) {', '.join(missing)} that the report needs; "
            "it must be the results/pepr.csv written by the workflow's scoring step"
        )
    return prepare_results(table, cfg, source=str(path))


def prepare_results(table: pd.DataFrame, cfg: ReportConfig, source: str = "the results table") -> pd.DataFrame:
    """Normalise types of a pepr.csv-like table and validate it (see :func:`load_results`)."""
    if len(table) == 0:
        raise PeprInputError(f"{source} has no rows: there is no run to report on")
    missing = [c for c in REQUIRED if c not in table.columns]
    if missing:
        raise PeprInputError(f"{source} lacks column(s) {', '.join(missing)} that the report needs")
    df = table.copy()
    for column in ["dataset", "init", "model"]:
        df[column] = df[column].astype(str)
    df["fraction"] = [_fraction_text(v) for v in df["fraction"]]
    try:
        df["fraction_value"] = df["fraction"].astype(float)
    except ValueError:
        raise PeprInputError(f"{source}: column 'fraction' must hold numbers such as 1.0 or 0.1") from None
    seeds = pd.to_numeric(df["seed"], errors="coerce")
    if seeds.isna().any() or (seeds != seeds.round()).any():
        raise PeprInputError(f"{source}: column 'seed' must hold integers")
    df["seed"] = seeds.astype(int)
    statuses = set(df["status"].astype(str))
    if not statuses <= {"ok", "failed"}:
        raise PeprInputError(
            f"{source}: column 'status' holds {sorted(statuses - {'ok', 'failed'})}; only 'ok' and 'failed' are valid"
        )
    df["ok"] = df["status"].astype(str) == "ok"
    df["reason"] = df["reason"].fillna("").astype(str)
    df["energy_method"] = df["energy_method"].fillna("").astype(str)
    duplicated = df[df.duplicated(RUN, keep=False)]
    if len(duplicated):
        first = duplicated.iloc[0]
        raise PeprInputError(
            f"{source}: run {tuple(first[c] for c in RUN)} appears {len(duplicated)} times; "
            "each (dataset, init, fraction, model, seed) must be one row"
        )
    needed = [cfg.performance, cfg.resource, f"pepr_{cfg.resource}", f"{cfg.resource}_norm"]
    absent = [c for c in needed if c not in df.columns]
    if absent:
        raise PeprInputError(
            f"{source} lacks column(s) {', '.join(absent)}; the report's performance is "
            f"'{cfg.performance}' and headline resource '{cfg.resource}' (report.performance / report.resource)"
        )
    numeric = ["params", *[c for c in df.columns if c.startswith("pepr_") or c.endswith("_norm")]]
    numeric += [cfg.performance, *[c for c in STANDARD_RESOURCES if c in df.columns]]
    for column in dict.fromkeys(numeric):
        df[column] = pd.to_numeric(df[column], errors="coerce")
    # A finished run whose performance is undefined (test_auc of a one-class test set; pepr.csv
    # left it unscored, see score_note) cannot be ranked: the report lists it with the runs it
    # could not use, with the reason, instead of stopping.
    undefined = df["ok"] & df[cfg.performance].isna()
    if undefined.any():
        import warnings

        warnings.warn(f"pepr report: {int(undefined.sum())} finished run(s) have no {cfg.performance}; listed as not scored", stacklevel=2)
        df.loc[undefined, "ok"] = False
        df.loc[undefined, "status"] = "failed"
        df.loc[undefined, "reason"] = f"finished, but {cfg.performance} is undefined (empty), so it is not scored"
    # Optional columns (e.g. amortised scores of transfer runs only) may be empty; these may not.
    for column in dict.fromkeys(["params", *needed]):
        holes = df[df["ok"] & df[column].isna()]
        if len(holes):
            bad = holes.iloc[0]
            raise PeprInputError(
                f"{source}: successful run {tuple(bad[c] for c in RUN)} has no value in column '{column}'"
            )
    perf = df.loc[df["ok"], cfg.performance]
    if ((perf < 0) | (perf > 1)).any():
        raise PeprInputError(f"{source}: column '{cfg.performance}' must lie in [0, 1] for successful runs")
    return df.sort_values(["dataset", "init", "fraction_value", "model", "seed"], ascending=[True, True, False, True, True]).reset_index(drop=True)


def _fraction_text(value: object) -> str:
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    return str(value)


def variants(df: pd.DataFrame) -> list[Variant]:
    """PePR variants present in ``df``: the standard four first, then any other ``pepr_*`` column.

    Extra ``pepr_*`` columns are, e.g., ``pepr_energy_kwh_amortised`` (transfer runs charged a
    share of their pretraining cost); they are shown beside the standard ones, never instead of
    them, and left out when they equal the plain score everywhere (a sweep without transfer).
    """
    found = []
    for resource, label in STANDARD_RESOURCES.items():
        if f"pepr_{resource}" in df.columns:
            found.append(Variant(resource, f"pepr_{resource}", label))
    standard = {v.column for v in found}
    for column in df.columns:
        if not column.startswith("pepr_") or column in standard:
            continue
        resource = column[len("pepr_"):]
        base = resource.removesuffix("_amortised")
        if resource.endswith("_amortised") and f"pepr_{base}" in df.columns:
            # Without transfer runs the amortised score equals the plain one: nothing to show.
            if np.allclose(df[column].fillna(-1), df[f"pepr_{base}"].fillna(-1)):
                continue
            label = f"{STANDARD_RESOURCES.get(base, f'PePR({base})')} amortised"
        else:
            label = f"PePR({resource})"
        found.append(Variant(resource, column, label))
    return found


def cells(df: pd.DataFrame) -> list[tuple]:
    """Cell keys ``(dataset, init, fraction)`` in display order (larger fraction first)."""
    keys = df[[*CELL, "fraction_value"]].drop_duplicates()
    keys = keys.sort_values(["dataset", "init", "fraction_value"], ascending=[True, True, False])
    return [tuple(row) for row in keys[CELL].itertuples(index=False)]


def energy_methods(df: pd.DataFrame) -> str:
    """One sentence saying how energy was obtained for the successful runs of ``df``."""
    methods = sorted({m for m in df.loc[df["ok"], "energy_method"] if m})
    if not methods:
        return "Energy method: not recorded for these runs (treat energy/CO2 as unknown quality)."
    counts = df.loc[df["ok"], "energy_method"].value_counts()
    parts = [f"{m} ({counts.get(m, 0)} runs)" for m in methods]
    return "Energy method: " + "; ".join(parts) + "."


def model_family(model: str) -> str:
    """Architecture family derived from a timm model name (``resnet18`` -> ``resnet``).

    Used for colouring models that the paper's table does not list; the rule is purely
    lexical: the name's first underscore-separated token, with a trailing size number removed
    (a ``v<number>`` version suffix is kept: ``mobilenetv3`` stays ``mobilenetv3``).
    """
    token = model.split(".")[0].split("_")[0].lower()
    if re.fullmatch(r"[a-z]+v\d+", token):
        return token
    stripped = re.sub(r"\d+[a-z]*$", "", token)
    return stripped or token


def load_model_metadata(path: str | os.PathLike | None) -> pd.DataFrame | None:
    """Read the paper's model table (model, type, efficient); None when none is available.

    ``path`` None means the copy shipped in the package (``pepr/data/paper_models.csv``), if
    present. An explicit path that does not exist or lacks the columns is an error.
    """
    if path is None:
        packaged = importlib_resources.files("pepr").joinpath("data", PACKAGED_METADATA)
        if not packaged.is_file():
            return None
        with importlib_resources.as_file(packaged) as local:
            return _read_metadata(Path(local))
    return _read_metadata(Path(path))


def _read_metadata(path: Path) -> pd.DataFrame:
    table = read_table(path)
    missing = [c for c in ("model", "type", "efficient") if c not in table.columns]
    if missing:
        raise PeprInputError(
            f"model metadata '{path}' lacks column(s) {', '.join(missing)}; expected the paper's "
            "model table with columns model, num_param, type, efficient"
        )
    table = table.drop_duplicates("model").copy()
    table["model"] = table["model"].astype(str)
    return table[["model", "type", "efficient"]]


def annotate_models(df: pd.DataFrame, metadata: pd.DataFrame | None) -> pd.DataFrame:
    """Add ``family`` (from the name), ``efficiency`` (paper's flag or "not in paper table")
    and ``in_paper_table`` to ``df``."""
    out = df.copy()
    out["family"] = [model_family(m) for m in out["model"]]
    if metadata is None:
        out["in_paper_table"] = False
        out["efficiency"] = "not in paper table"
        return out
    flags = dict(zip(metadata["model"], metadata["efficient"]))
    out["in_paper_table"] = out["model"].isin(flags)
    out["efficiency"] = [
        ("efficient (paper)" if int(flags[m]) == 1 else "not efficient (paper)") if m in flags else "not in paper table"
        for m in out["model"]
    ]
    return out


def size_split(df: pd.DataFrame) -> pd.DataFrame:
    """Per cell: the median parameter count over that cell's successful models.

    The split is per cell because a model's count depends on the cell (classifier head, input
    channels): one sweep-wide count per model would misfile models near the median. Only
    successful runs count: a failed run may carry no count (a failed pretraining) or one of a
    model that never ran, and the split is between the models being compared. A model is
    *small* in a cell when its count there is at or below the cell's median, *large* above it.
    Returns columns dataset, init, fraction, median_params (cells without a successful run
    get none, and their models are neither small nor large).
    """
    known = df[df["ok"]].dropna(subset=["params"])
    if known.empty:
        known = df.dropna(subset=["params"])  # nothing succeeded: the split is only for display
    if known.empty:
        raise PeprInputError("no run has a parameter count ('params'): cannot split small from large models")
    per_model = known.groupby([*CELL, "model"], sort=False)["params"].first()
    return per_model.groupby(level=CELL, sort=False).median().rename("median_params").reset_index()


def mark_sizes(df: pd.DataFrame, split: pd.DataFrame) -> pd.DataFrame:
    """``df`` with ``median_params`` (its cell's) and ``small`` (params <= that median)."""
    out = df.drop(columns=["median_params", "small"], errors="ignore").merge(split, on=CELL, how="left")
    out["small"] = out["params"] <= out["median_params"]
    return out


def co2_is_scaled_energy(df: pd.DataFrame) -> bool:
    """Whether every successful run's CO2 is its energy times one constant per cell.

    Then min-max normalised CO2 equals normalised energy in every cell and PePR-C ranks
    exactly as PePR-E. True unless some run used a carbon-intensity time series (column
    ``carbon_intensity_source`` starting with "series") and the ratio actually varies.
    """
    ok = df[df["ok"]]
    if "co2_kg" not in ok.columns or "energy_kwh" not in ok.columns or ok.empty:
        return False
    sources = ok["carbon_intensity_source"].astype(str) if "carbon_intensity_source" in ok.columns else pd.Series(dtype=str)
    if sources.str.startswith("series").any():
        return False
    ratio = (ok["co2_kg"] / ok["energy_kwh"].where(ok["energy_kwh"] > 0)).groupby([ok[c] for c in CELL]).agg(["min", "max"])
    return bool(np.allclose(ratio["min"], ratio["max"], rtol=1e-6, equal_nan=True))


def report_variants(df: pd.DataFrame) -> list[Variant]:
    """The variants the report presents: :func:`variants`, less PePR-C (and its amortised
    form) when CO2 is energy times a constant (:func:`co2_is_scaled_energy`): then it repeats
    PePR-E and the report says so once instead of showing it as a finding of its own."""
    found = variants(df)
    if co2_is_scaled_energy(df):
        found = [v for v in found if v.resource.removesuffix("_amortised") != "co2_kg"]
    return found


def co2_note(df: pd.DataFrame) -> str:
    """One sentence on whether PePR-C carries information beyond PePR-E ("" when it does)."""
    if not co2_is_scaled_energy(df):
        return ""
    sources = sorted({str(s) for s in df.loc[df["ok"], "carbon_intensity_source"].dropna()}) \
        if "carbon_intensity_source" in df.columns else []
    origin = f" ({'; '.join(sources)})" if sources else ""
    return (
        f"No carbon-intensity time series was used: CO2 is energy times a constant intensity{origin}, "
        "so PePR-C ranks exactly as PePR-E and is not shown separately. Give the workflow a "
        "`carbon_intensity` CSV to make CO2 depend on when each epoch ran."
    )


@dataclass
class ReportData:
    """Everything the report is computed from, loaded and checked once.

    ``results``: pepr.csv with ``ok``, ``family``, ``efficiency``, ``median_params`` and
    ``small`` added; ``histories`` / ``peaks``: per-epoch rows and peak epochs (empty for
    the summary, which reads the peaks table instead); ``expected``: the planned runs or None.
    """

    results: pd.DataFrame
    histories: pd.DataFrame
    peaks: pd.DataFrame
    cfg: ReportConfig
    expected: pd.DataFrame | None = None


def gather_histories(paths: list[str | os.PathLike], runs_root: str | os.PathLike) -> pd.DataFrame:
    """One table of every run's ``history.csv``, tagged with the run (dataset, init, fraction,
    model, seed) read from its path under ``runs_root``.

    Header-only files (failed runs) add no rows. The files are parsed with the csv module and
    built column-wise, so tens of thousands of small files cost no per-file DataFrame.
    """
    columns: dict[str, list] = {c: [] for c in RUN}
    rows_so_far = 0
    for path in paths:
        key = parse_run_path(path, runs_root)
        try:
            with open(path, newline="", encoding="utf-8") as handle:
                reader = csv.reader(handle)
                header = next(reader, None)
                if header is None:
                    raise PeprInputError(f"history '{path}' is empty (not even a header); re-run its training job")
                rows = [row for row in reader if row]
        except (UnicodeDecodeError, csv.Error) as exc:
            # a damaged history costs the report that run's curves, not the whole report
            import warnings

            reason = "is not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else f"is not a pepr history CSV ({' '.join(str(exc).split())[:120]})"
            warnings.warn(f"pepr: history '{path}' {reason}; skipped (its run has no per-epoch curves); re-run its training job to rebuild it", stacklevel=2)
            continue
        if not rows:
            continue
        for name in header:
            if name not in columns:
                columns[name] = [""] * rows_so_far  # a column this file adds: empty for earlier runs
        for name, values in columns.items():
            if name in RUN:
                continue
            if name in header:
                index = header.index(name)
                values.extend(row[index] if index < len(row) else "" for row in rows)
            else:
                values.extend([""] * len(rows))
        for name, value in zip(RUN, [key.dataset, key.init, format_fraction(key.fraction), key.model, key.seed]):
            columns[name].extend([value] * len(rows))
        rows_so_far += len(rows)
    table = pd.DataFrame(columns)
    for name in table.columns:
        if name not in RUN:
            table[name] = pd.to_numeric(table[name].replace("", np.nan), errors="coerce")
    return table


def load_histories(path: str | os.PathLike | None, df: pd.DataFrame, cfg: ReportConfig) -> pd.DataFrame:
    """The gathered histories (:func:`gather_histories`) of the successful runs of ``df``,
    with their ``params``; ``path`` None -> an empty table (the summary needs none).

    A successful run without history rows, or a table lacking the configured columns, is an
    error: the epoch curves would otherwise silently leave runs out.
    """
    needed = ["epoch", cfg.history_performance, cfg.history_resource]
    if path is None or not df["ok"].any():  # no successful run: nothing to draw curves of
        return pd.DataFrame(columns=[*RUN, *needed])
    table = read_table(path)
    absent = [c for c in [*RUN, *needed] if c not in table.columns]
    if absent:
        raise PeprInputError(
            f"histories table '{path}' lacks column(s) {', '.join(absent)} (report.history_performance / "
            "report.history_resource name the columns used; the table is written by the gather_histories rule)"
        )
    for column in ["dataset", "init", "model"]:
        table[column] = table[column].astype(str)
    table["fraction"] = [_fraction_text(v) for v in table["fraction"]]
    table["seed"] = table["seed"].astype(int)
    ok = df.loc[df["ok"], [*RUN, "params"]]
    tagged = table.merge(ok, on=RUN, how="inner")
    have = set(map(tuple, tagged[RUN].drop_duplicates().itertuples(index=False)))
    lacking = [run for run in map(tuple, ok[RUN].itertuples(index=False)) if run not in have]
    if lacking:
        raise PeprInputError(
            f"successful run {lacking[0]} has no epochs in '{path}' ({len(lacking)} such run(s)); "
            "re-run its training job (snakemake reruns it when its history.csv is deleted) or remove the run"
        )
    return tagged.sort_values([*RUN, "epoch"]).reset_index(drop=True)
