"""Loading and checking the report's inputs: ``pepr.csv``, per-run histories, model metadata.

Everything here is pandas/numpy only (the report never imports torch). Bad input raises
:class:`~pepr.errors.PeprInputError` naming the file and what is wrong, before any figure is drawn.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources as importlib_resources
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from pepr.columns import COMBINED
from pepr.errors import PeprInputError
from pepr.plan.report_settings import variant_label
from pepr.report.config import STANDARD_RESOURCES, WORKFLOW_GROUP, ReportConfig
from pepr.results.runs import format_fraction, normalise_status, parse_run_path
from pepr.results.tableio import read_table

if TYPE_CHECKING:
    from pepr.results.aggregate import CarbonSettings

#: The workflow's normalisation group (the columns PePR is normalised within); a table given to
#: ``pepr report`` may have others (``ReportConfig.group``).
GROUP = list(WORKFLOW_GROUP)
#: The columns naming one run of the workflow.
RUN = [*GROUP, "model", "seed"]
#: Packaged copy of the paper's model table (written by the workflow stage when present).
PACKAGED_METADATA = "paper_models.csv"
#: Columns a run may carry that say where it was measured (checked for mixing within a group).
MEASURED_ON = ("device", "host", "gpu_model")
#: Column saying how a run's working set was measured (pepr.train.measure.MEMORY_METHODS); runs
#: without it were trained by a pepr that read the CPU working set from the resident set.
MEMORY_METHOD = "memory_method"
#: What a run without ``memory_method`` is counted as.
MEMORY_METHOD_UNRECORDED = "not recorded (an earlier pepr: on CPU the resident set)"


@dataclass(frozen=True)
class Variant:
    """One PePR variant present in the table: resource column, score column, label."""

    resource: str
    column: str
    label: str


def run_columns(cfg: ReportConfig) -> list[str]:
    """The columns naming one run: the group keys, ``model`` and ``seed``."""
    return [*cfg.group, "model", "seed"]


def group_label(key: tuple, group: Sequence[str] = WORKFLOW_GROUP) -> str:
    """Human label of a group key: ``pneumoniamnist / imagenet / 10% data``; keys other than
    the workflow's are shown with their column name (``task liver``)."""
    parts = []
    for column, value in zip(group, key):
        if column == "fraction":
            parts.append(fraction_label(value))
        elif column in WORKFLOW_GROUP or column == ONE_GROUP:
            parts.append(str(value))
        else:
            parts.append(f"{column} {value}")
    return " / ".join(parts)


def fraction_label(fraction: str) -> str:
    """``'0.1'`` -> ``'10% data'``."""
    try:
        return f"{float(fraction) * 100:g}% data"
    except ValueError:
        return str(fraction)


def load_results(path: str | os.PathLike, cfg: ReportConfig) -> pd.DataFrame:
    """Read a scored results table (``pepr.csv``) and check it carries what the report needs
    (see :func:`prepare_results`)."""
    return prepare_results(read_table(path), cfg, source=f"'{path}'")


def prepare_results(table: pd.DataFrame, cfg: ReportConfig, source: str = "the results table") -> pd.DataFrame:
    """Normalise types of a scored table in the report's column names and validate it.

    Needs the group columns (``cfg.group``), ``model``, ``seed``, the performance, the headline
    resource with its ``X_norm`` / ``pepr_X`` columns, and ``params`` when
    ``cfg.params_known``. ``status`` ("ok"/"failed", any case; absent: every run ok),
    ``reason`` and ``energy_method`` are optional. The group columns are read as text so that
    they match the run folders' names exactly (``fraction`` ``1.0`` stays ``"1.0"``);
    ``fraction_value`` holds the number for ordering when ``fraction`` is a group key. Adds
    ``ok`` (status == "ok").
    """
    if len(table) == 0:
        raise PeprInputError(f"{source} has no rows: there is no run to report on")
    run = run_columns(cfg)
    required = [*run, *(["params"] if cfg.params_known else [])]
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise PeprInputError(f"{source} lacks column(s) {', '.join(missing)} that the report needs")
    df = table.copy()
    for column in [*cfg.group, "model"]:
        if column == "fraction":
            df[column] = [_fraction_text(v) for v in df[column]]
        else:
            df[column] = [_key_text(v) for v in df[column]]
    if "fraction" in cfg.group:
        try:
            df["fraction_value"] = df["fraction"].astype(float)
        except ValueError:
            raise PeprInputError(f"{source}: column 'fraction' must hold numbers such as 1.0 or 0.1") from None
    seeds = pd.to_numeric(df["seed"], errors="coerce")
    if seeds.isna().any() or (seeds != seeds.round()).any():
        raise PeprInputError(f"{source}: column 'seed' must hold integers")
    df["seed"] = seeds.astype(int)
    if "status" in df.columns:
        df["status"] = normalise_status(df["status"], where=source)
    else:
        df["status"] = "ok"
    df["ok"] = df["status"] == "ok"
    for column in ("reason", "energy_method"):
        # An all-empty column reads back as float NaN: text, with "" for no value.
        df[column] = df[column].astype(object).where(df[column].notna(), "").astype(str) if column in df.columns else ""
    duplicated = df[df.duplicated(run, keep=False)]
    if len(duplicated):
        first = duplicated.iloc[0]
        raise PeprInputError(
            f"{source}: run {tuple(first[c] for c in run)} appears {len(duplicated)} times; "
            f"each ({', '.join(run)}) must be one row (give the seed column with --seed, or more --by columns)"
        )
    needed = [cfg.performance, cfg.resource, f"pepr_{cfg.resource}", f"{cfg.resource}_norm"]
    absent = [c for c in needed if c not in df.columns]
    if absent:
        raise PeprInputError(
            f"{source} lacks column(s) {', '.join(absent)}; the report's performance is "
            f"'{cfg.performance}' and headline resource '{cfg.resource}'"
        )
    numeric = [
        *(["params"] if cfg.params_known else []),
        *[c for c in df.columns if c.startswith("pepr_") or c.endswith("_norm")],
    ]
    numeric += [cfg.performance, cfg.resource, *[c for c in STANDARD_RESOURCES if c in df.columns]]
    for column in dict.fromkeys(numeric):
        df[column] = pd.to_numeric(df[column], errors="coerce")
    # A finished run whose performance is undefined (test_auc of a one-class test set; pepr.csv
    # left it unscored, see score_note) cannot be ranked: the report lists it with the runs it
    # could not use, with the reason, instead of stopping.
    undefined = df["ok"] & df[cfg.performance].isna()
    if undefined.any():
        import warnings

        warnings.warn(
            f"pepr report: {int(undefined.sum())} finished run(s) have no {cfg.performance}; listed as not scored",
            stacklevel=2,
        )
        df.loc[undefined, "ok"] = False
        df.loc[undefined, "status"] = "failed"
        df.loc[undefined, "reason"] = f"finished, but {cfg.performance} is undefined (empty), so it is not scored"
    if not cfg.params_known:
        df["params"] = np.nan
    # Optional columns (e.g. amortised scores of transfer runs only) may be empty; these may not.
    for column in dict.fromkeys([*(["params"] if cfg.params_known else []), *needed]):
        holes = df[df["ok"] & df[column].isna()]
        if len(holes):
            bad = holes.iloc[0]
            raise PeprInputError(
                f"{source}: successful run {tuple(bad[c] for c in run)} has no value in column '{column}'"
            )
    perf = df.loc[df["ok"], cfg.performance]
    if ((perf < 0) | (perf > 1)).any():
        raise PeprInputError(f"{source}: column '{cfg.performance}' must lie in [0, 1] for successful runs")
    # One text per group, for grouping where only "same group" matters.
    df["group_id"] = [group_label(tuple(k), cfg.group) for k in df[list(cfg.group)].itertuples(index=False)]
    order = _group_order(cfg.group)
    return df.sort_values(
        [*order, "model", "seed"], ascending=[*[c != "fraction_value" for c in order], True, True]
    ).reset_index(drop=True)


def _group_order(group: Sequence[str]) -> list[str]:
    """Sort columns of the group keys: ``fraction`` by its number (larger first)."""
    return ["fraction_value" if c == "fraction" else c for c in group]


def _key_text(value: object) -> str:
    """A group key or model name as text; whole floats read back from CSV keep no ``.0``
    unless they were written so (``3`` -> "3")."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


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
        resource = column[len("pepr_") :]
        base = resource.removesuffix("_amortised")
        if resource.endswith("_amortised") and f"pepr_{base}" in df.columns:
            # Without transfer runs the amortised score equals the plain one: nothing to show.
            if np.allclose(df[column].fillna(-1), df[f"pepr_{base}"].fillna(-1)):
                continue
            label = f"{variant_label(base)} amortised"
        else:
            label = variant_label(resource)
        found.append(Variant(resource, column, label))
    return found


def groups(df: pd.DataFrame, group: Sequence[str] = WORKFLOW_GROUP) -> list[tuple]:
    """Group keys (values of the ``group`` columns) in display order (larger fraction first)."""
    group = list(group)
    order = _group_order(group)
    keys = df[list(dict.fromkeys([*group, *order]))].drop_duplicates()
    keys = keys.sort_values(order, ascending=[c != "fraction_value" for c in order])
    return [tuple(row) for row in keys[group].itertuples(index=False)]


def group_rows(df: pd.DataFrame, key: tuple, group: Sequence[str] = WORKFLOW_GROUP) -> pd.DataFrame:
    """The rows of ``df`` in the group ``key``."""
    group = list(group)
    return df[(df[group] == pd.Series(key, index=group)).all(axis=1)]


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


def size_split(df: pd.DataFrame, group: Sequence[str] = WORKFLOW_GROUP) -> pd.DataFrame:
    """Per group: the median parameter count over that group's successful models.

    The split is per group because a model's count depends on the group (classifier head, input
    channels): one sweep-wide count per model would misfile models near the median. Only
    successful runs count: a failed run may carry no count (a failed pretraining) or one of a
    model that never ran, and the split is between the models being compared. A model is
    *small* in a group when its count there is at or below the group's median, *large* above it.
    Returns the group columns and median_params (groups without a successful run
    get none, and their models are neither small nor large).
    """
    known = df[df["ok"]].dropna(subset=["params"])
    if known.empty:
        known = df.dropna(subset=["params"])  # nothing succeeded: the split is only for display
    if known.empty:
        raise PeprInputError("no run has a parameter count ('params'): cannot split small from large models")
    group = list(group)
    per_model = known.groupby([*group, "model"], sort=False)["params"].first()
    return per_model.groupby(level=group, sort=False).median().rename("median_params").reset_index()


def mark_sizes(df: pd.DataFrame, split: pd.DataFrame | None, group: Sequence[str] = WORKFLOW_GROUP) -> pd.DataFrame:
    """``df`` with ``median_params`` (its group's) and ``small`` (params <= that median);
    ``split`` None (no parameter counts): both empty."""
    out = df.drop(columns=["median_params", "small"], errors="ignore")
    if split is None:
        out["median_params"] = np.nan
        out["small"] = pd.array([pd.NA] * len(out), dtype="boolean")
        return out
    out = out.merge(split, on=list(group), how="left")
    out["small"] = out["params"] <= out["median_params"]
    return out


def co2_is_scaled_energy(df: pd.DataFrame) -> bool:
    """Whether every successful run's CO2 is its energy times one constant per group.

    Then min-max normalised CO2 equals normalised energy in every group and PePR-C ranks
    exactly as PePR-E. True unless some run used a carbon-intensity time series (column
    ``carbon_intensity_source`` starting with "series") and the ratio actually varies.
    """
    ok = df[df["ok"]]
    if "co2_kg" not in ok.columns or "energy_kwh" not in ok.columns or ok.empty:
        return False
    sources = (
        ok["carbon_intensity_source"].astype(str) if "carbon_intensity_source" in ok.columns else pd.Series(dtype=str)
    )
    if sources.str.startswith("series").any():
        return False
    by = ok["group_id"] if "group_id" in ok.columns else [ok[c] for c in GROUP]
    ratio = (ok["co2_kg"] / ok["energy_kwh"].where(ok["energy_kwh"] > 0)).groupby(by).agg(["min", "max"])
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
    sources = (
        sorted({str(s) for s in df.loc[df["ok"], "carbon_intensity_source"].dropna()})
        if "carbon_intensity_source" in df.columns
        else []
    )
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
    #: The report's column name -> the input table's (e.g. model -> name), for the tables written.
    names: dict[str, str] = field(default_factory=dict)
    #: The raw resource columns scored (each has X_norm and pepr_X).
    resources: tuple[str, ...] = ()
    #: The report's columns the input did not have (a made-up seed or single group).
    synthetic: tuple[str, ...] = ()
    #: The workflow's runs folder, where each run's test_predictions.npz is (None: a bare table).
    runs_root: str | None = None
    #: The test-set size column for binomial intervals (None: ``n_test`` when the table has it).
    n_test: str | None = None
    #: The measurement checks' flags (:func:`pepr.report.tables.run_flags`; None: not computed yet).
    flags: pd.DataFrame | None = None
    #: The results before ``report.exclude_flagged`` left the harmful runs out (None: nothing left out).
    with_flagged: pd.DataFrame | None = None


#: The group column made up when a table has none of the workflow's and no --by is given.
ONE_GROUP = "all"


@dataclass(frozen=True)
class TableSpec:
    """How a runs table's columns map onto the report: ``pepr report``'s flags.

    None / empty means the default: performance ``test_accuracy``; resources the workflow's
    (:data:`pepr.results.aggregate.RESOURCES` and their ``_amortised`` forms) present in the table;
    group keys those of dataset, init, fraction present (none: the whole table is one group);
    model ``model``; params ``params`` and seed ``seed`` when present (an explicit name must be
    present). ``rename`` (old, new) pairs are applied first, and every other name refers to the
    renamed table.
    """

    performance: str | None = None
    resources: tuple[str, ...] = ()
    by: tuple[str, ...] = ()
    model: str | None = None
    params: str | None = None
    seed: str | None = None
    rename: tuple[tuple[str, str], ...] = ()
    #: The workflow's pepr.csv only: a finished run with an empty performance (test_auc of a
    #: one-class test set) is left unscored and listed by the report instead of refused; a
    #: user's table given to ``pepr report`` is refused, as ``pepr score`` refuses it.
    skip_undefined_performance: bool = False
    #: The workflow's pepr.csv only: the table is already scored (rule score_runs, by the same
    #: performance and resources within the same groups), so its ``X_norm`` / ``pepr_X`` columns
    #: are read as they are instead of computed again; a user's table is always scored here.
    scored: bool = False


@dataclass
class PreparedTable:
    """A runs table checked and scored: ``scored`` in the input's column names (what
    ``pepr.csv`` holds), ``table`` the same rows in the report's names, ``cfg`` the report
    settings with the table's shape, ``names`` report name -> input name, ``resources`` the
    scored resource columns, ``synthetic`` the report's columns the input did not have."""

    scored: pd.DataFrame
    table: pd.DataFrame
    cfg: ReportConfig
    names: dict[str, str]
    resources: tuple[str, ...]
    synthetic: tuple[str, ...]


def _columns_text(columns) -> str:
    shown = [str(c) for c in columns]
    return ", ".join(shown[:40]) + (f" (and {len(shown) - 40} more)" if len(shown) > 40 else "")


def prepare_table(raw: pd.DataFrame, spec: TableSpec, cfg: ReportConfig, source: str = "the table") -> PreparedTable:
    """Check a runs table against ``spec`` and score it within its groups.

    Every problem (an unknown or clashing column, a bad rename, values the scoring refuses)
    raises :class:`~pepr.errors.PeprInputError` naming it and the fix, so the caller can
    check everything before writing anything. Existing ``X_norm`` / ``pepr_X`` columns of the
    scored resources are recomputed (a ``pepr.csv`` can be reported on again), except with
    ``spec.scored`` (the workflow's pepr.csv, scored by its score_runs rule): then they are
    read as they are, and their absence is the error.
    """
    from pepr.results.aggregate import AMORTISED_RESOURCES, RESOURCES, amortised_column

    workflow_resources = {*RESOURCES, *(amortised_column(r) for r in AMORTISED_RESOURCES)}
    from pepr.plan.report_settings import parse_combine
    from pepr.results.adaptive import projected_full_runs
    from pepr.results.scoring import combine as combine_scores
    from pepr.results.scoring import norm_column, pepr_column, score

    if len(raw) == 0:
        raise PeprInputError(f"{source} has no rows: there is no run to report on")
    columns = [str(c) for c in raw.columns]
    if len(set(columns)) != len(columns):
        raise PeprInputError(
            f"{source} names a column more than once; rename the extra ones so every column is named once"
        )
    table = raw.copy()
    table.columns = columns
    renames: dict[str, str] = {}
    for old, new in spec.rename:
        if not old or not new:
            raise PeprInputError(f"--rename {old}={new}: give OLD=NEW with both names")
        if old not in table.columns:
            raise PeprInputError(
                f"--rename {old}={new}: {source} has no column '{old}'; its columns: {_columns_text(table.columns)}"
            )
        if old in renames:
            raise PeprInputError(f"--rename: column '{old}' is renamed twice")
        renames[old] = new
    targets = list(renames.values())
    clashes = sorted({n for n in targets if targets.count(n) > 1 or (n in table.columns and n not in renames)})
    if clashes:
        raise PeprInputError(
            f"--rename: the new name(s) {', '.join(clashes)} would name two columns; drop or rename the existing one first"
        )
    table = table.rename(columns=renames)

    def column(flag: str, given: str | None, default: str | None, required: bool) -> str | None:
        name = given or default
        if name in table.columns:
            return name
        if given is None and not required:
            return None
        what = f"{flag} {name}" if given else f"the default {flag} column '{name}'"
        raise PeprInputError(
            f"{source} has no column '{name}' ({what}); name the right one with {flag} COL or --rename OLD={name}; "
            f"its columns: {_columns_text(table.columns)}"
        )

    model = column("--model", spec.model, "model", True)
    seed = column("--seed", spec.seed, "seed", False)
    params = column("--params", spec.params, "params", False)
    performance = column("--performance", spec.performance, "test_accuracy", True)
    if spec.resources:
        resources = [column("--resource", r, r, True) for r in spec.resources]
    else:
        standard = [r for r in RESOURCES if r in table.columns]
        resources = [
            *standard,
            *[
                amortised_column(r)
                for r in AMORTISED_RESOURCES
                if r in standard and amortised_column(r) in table.columns
            ],
        ]
        if not resources:
            raise PeprInputError(
                f"{source} has none of the workflow's resource columns ({', '.join(RESOURCES)}); "
                "name yours with --resource COL (repeatable)"
            )
    # The report's own resources (report.resources) are scored here even in a scored pepr.csv.
    extra = [column("report.resources", r, r, True) for r in cfg.resources if r not in resources]
    resources_all = [*resources, *extra]
    for name in resources_all:
        if name not in workflow_resources and pd.to_numeric(table[name], errors="coerce").isna().all():
            raise PeprInputError(
                f"{source}: resource '{name}' is empty in every run (memory_reserved_epoch2_mb is recorded on GPU "
                "only); drop it from --resource / report.resources"
            )
    combine = parse_combine(cfg.combine, "--combine")
    unscored = [c for c, _ in combine if c not in resources_all]
    if unscored:
        raise PeprInputError(
            f"--combine names {', '.join(unscored)}, which this report does not score; "
            f"add it with --resource COL, or combine among {', '.join(resources_all)}"
        )
    if combine and COMBINED in table.columns:
        raise PeprInputError(
            f"{source} has a column '{COMBINED}', the name of the combined PePR; "
            f"rename it (--rename {COMBINED}={COMBINED}_input)"
        )
    repeated = sorted({r for r in resources if resources.count(r) > 1})
    if repeated:
        raise PeprInputError(f"--resource {', '.join(repeated)} given more than once")
    if spec.by:
        by = [column("--by", b, b, True) for b in spec.by]
    else:
        by = [c for c in WORKFLOW_GROUP if c in table.columns]
    if len(set(by)) != len(by):
        raise PeprInputError(f"--by: a group column is given more than once ({', '.join(by)})")
    roles = {
        "--model": [model],
        "--seed": [seed],
        "--params": [params],
        "--performance": [performance],
        "--resource": resources_all,
        "--by": by,
    }
    seen: dict[str, str] = {}
    for flag, names in roles.items():
        for name in names:
            if name is None:
                continue
            if name in seen and seen[name] != flag:
                raise PeprInputError(
                    f"column '{name}' is given both as {seen[name]} and as {flag}; each column has one role"
                )
            seen[name] = flag
    # The report's own names for model, seed and parameters; a different column already
    # holding such a name would be overwritten.
    to_report = {
        name: role for name, role in [(model, "model"), (seed, "seed"), (params, "params")] if name and name != role
    }
    for name, role in to_report.items():
        if role in table.columns:
            raise PeprInputError(
                f"{source} has a column '{role}' besides the {role} column '{name}' you named; "
                f"rename it (--rename {role}={role}_input) so the report does not confuse the two"
            )
    synthetic = []
    if not by:
        by = [ONE_GROUP]
        if ONE_GROUP in table.columns:
            raise PeprInputError(
                f"{source} has a column '{ONE_GROUP}' but no group column; name the group columns with --by COL"
            )
    new_columns = [c for r in resources for c in (norm_column(r), pepr_column(r))]
    stale = [c for c in new_columns if c in table.columns]
    if spec.scored and len(stale) != len(new_columns):
        missing = [c for c in new_columns if c not in table.columns]
        raise PeprInputError(
            f"{source} lacks the score column(s) {', '.join(missing)} that the workflow's score_runs rule writes; "
            "rebuild it with that rule (snakemake results/pepr.csv), or report on a runs table with pepr report"
        )
    given_scores = table[stale]
    # the report's own scores are always computed again
    own_columns = [c for r in extra for c in (norm_column(r), pepr_column(r))]
    if combine:
        own_columns += [COMBINED, norm_column(COMBINED), pepr_column(COMBINED)]
    scored_input = table.drop(columns=[*stale, *[c for c in own_columns if c in table.columns and c not in stale]])
    work = scored_input.rename(columns=to_report)
    if seed is None:
        work["seed"] = 0
        synthetic.append("seed")
    if by == [ONE_GROUP]:
        work[ONE_GROUP] = "all runs"
        synthetic.append(ONE_GROUP)
    had_status = "status" in work.columns
    if not had_status:
        work["status"] = "ok"
        synthetic.append("status")
    work["status"] = normalise_status(work["status"], where=source)
    ok = work["status"] == "ok"
    if not ok.any():
        raise PeprInputError(f"{source} has no successful run (every status is 'failed'): there is nothing to score")
    for role, name in [("model", model), *[(b, b) for b in by if b != ONE_GROUP]]:
        holes = work.index[ok & work[role].isna()]
        if len(holes):
            raise PeprInputError(
                f"{source}: column '{name}' is empty in row(s) {', '.join(map(str, holes[:10]))}; every run needs one"
            )
    if seed is None:
        counts = work[ok].groupby([*by, "model"]).size()
        if (counts > 1).any():
            key = counts[counts > 1].index[0]
            raise PeprInputError(
                f"{source}: model {key[-1]!r} has {counts.max()} rows in one group and there is no seed column; "
                "name it with --seed COL, or add --by columns that tell the rows apart"
            )
    if spec.skip_undefined_performance:
        # Left unscored here; prepare_results lists them as not scored, with the reason.
        ok = ok & pd.to_numeric(work[performance], errors="coerce").notna()
    # Scored over the successful runs (failed ones keep empty scores), as pepr score scores a
    # table; rows are labelled by their run so that an error names the runs at fault.
    scored = work.copy()
    new_columns += own_columns
    for name in new_columns:
        scored[name] = np.nan
    labels = [
        f"{m} in {group_label(tuple(k), by)}" + ("" if seed is None else f" seed {sd}")
        for m, sd, k in zip(work.loc[ok, "model"], work.loc[ok, "seed"], work.loc[ok, by].itertuples(index=False))
    ]
    successful = work.loc[ok].set_axis(pd.Index(labels, name="run"), axis=0)
    # an adaptive sweep's stopped runs widen their cell's range at their projected full-run cost,
    # as the workflow's scores do
    stopped = projected_full_runs(work, resources_all)
    if spec.scored:
        given = given_scores.loc[ok].apply(pd.to_numeric, errors="coerce").set_axis(successful.index, axis=0)
        result = successful.assign(**{c: given[c].to_numpy() for c in given.columns})
        if extra:
            result = score(result, performance=performance, resources=extra, by=by, reference=stopped)
    else:
        result = score(successful, performance=performance, resources=resources_all, by=by, reference=stopped)
    if combine:
        result = combine_scores(result, performance, combine, COMBINED)
    for name in new_columns:
        scored.loc[ok, name] = result[name].to_numpy()
    out = scored_input.copy()
    for name in new_columns:
        out[name] = scored[name].to_numpy()
    headline = cfg.resource if (cfg.resource in resources and not spec.resources) else resources[0]
    cfg = dataclasses.replace(
        cfg, performance=performance, resource=headline, group=tuple(by), params_known=params is not None
    )
    names = {role: name for name, role in to_report.items()}
    if not had_status:
        scored = scored.drop(columns=["status"])
    return PreparedTable(out, scored, cfg, names, (*resources_all, *([COMBINED] if combine else [])), tuple(synthetic))


def gather_histories(
    paths: list[str | os.PathLike], runs_root: str | os.PathLike, carbon: CarbonSettings | None = None
) -> pd.DataFrame:
    """One table of every run's ``history.csv``, tagged with the run (dataset, init, fraction,
    model, seed) read from its path under ``runs_root``.

    With ``carbon`` (the workflow's country / carbon-intensity series), ``epoch_co2_kg`` and
    ``cumulative_co2_kg`` are derived from each epoch's measured energy, as aggregation derives
    the runs' ``co2_kg`` (:class:`pepr.results.aggregate.CarbonSettings`; a series needs the epoch
    midpoints of the run's metrics.json beside the history): the curves follow a corrected
    country. Header-only files (failed runs) add no rows. The files are parsed with the csv
    module and built column-wise, so tens of thousands of small files cost no per-file DataFrame.
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

            reason = (
                "is not UTF-8 text"
                if isinstance(exc, UnicodeDecodeError)
                else f"is not a pepr history CSV ({' '.join(str(exc).split())[:120]})"
            )
            warnings.warn(
                f"pepr: history '{path}' {reason}; skipped (its run has no per-epoch curves); re-run its training job to rebuild it",
                stacklevel=2,
            )
            continue
        if not rows:
            continue
        if carbon is not None:
            _derive_epoch_co2(header, rows, Path(path), carbon)
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


def _derive_epoch_co2(header: list[str], rows: list[list[str]], path: Path, carbon: CarbonSettings) -> None:
    """Rewrite one history's CO2 columns (in place) from its ``epoch_energy_kwh`` with
    ``carbon``; left as recorded when a column is absent or an energy (or, for a series, an
    epoch midpoint) is unknown."""
    names = ("epoch_energy_kwh", "epoch_co2_kg", "cumulative_co2_kg")
    if not all(name in header for name in names):
        return
    energy_at, epoch_at, cumulative_at = (header.index(name) for name in names)
    energies: list[float | None] = []
    for row in rows:
        try:
            energies.append(float(row[energy_at]))
        except (IndexError, ValueError):
            energies.append(None)
    midpoints = None
    if carbon.series is not None:
        from pepr.results.aggregate import read_metrics

        metrics_file = path.parent / "metrics.json"
        try:
            midpoints = read_metrics(metrics_file, keep=("epoch_midpoints_unix",)).get("epoch_midpoints_unix")
        except PeprInputError:
            midpoints = None
        if not isinstance(midpoints, list):
            return
    co2 = carbon.epoch_co2(energies, midpoints)
    if co2 is None:
        return
    total = 0.0
    for row, value in zip(rows, co2):
        total += value
        row.extend([""] * (len(header) - len(row)))
        row[epoch_at], row[cumulative_at] = repr(value), repr(total)


def load_histories(path: str | os.PathLike | pd.DataFrame | None, df: pd.DataFrame, cfg: ReportConfig) -> pd.DataFrame:
    """The gathered histories (:func:`gather_histories`) of the successful runs of ``df``,
    with their ``params``; ``path`` None -> an empty table (the summary needs none). ``path``
    may also be the table itself, in the report's column names.

    A successful run without history rows, or a table lacking the configured columns, is an
    error: the epoch curves would otherwise silently leave runs out.
    """
    run = run_columns(cfg)
    needed = ["epoch", cfg.history_performance, cfg.history_resource]
    if path is None or not df["ok"].any():  # no successful run: nothing to draw curves of
        return pd.DataFrame(columns=[*run, *needed])
    table = path if isinstance(path, pd.DataFrame) else read_table(path)
    where = "the histories table" if isinstance(path, pd.DataFrame) else f"histories table '{path}'"
    absent = [c for c in [*run, *needed] if c not in table.columns]
    if absent:
        raise PeprInputError(
            f"{where} lacks column(s) {', '.join(absent)} (report.history_performance / "
            "report.history_resource name the columns used; the workflow's gather_histories rule writes it)"
        )
    table = table.copy()
    for column in [*cfg.group, "model"]:
        table[column] = [_fraction_text(v) if column == "fraction" else _key_text(v) for v in table[column]]
    seeds = pd.to_numeric(table["seed"], errors="coerce")
    if seeds.isna().any():
        raise PeprInputError(f"{where}: column 'seed' must hold integers")
    table["seed"] = seeds.astype(int)
    for column in needed:
        table[column] = pd.to_numeric(table[column], errors="coerce")
    ok = df.loc[df["ok"], [*run, "params"]]
    tagged = table.merge(ok, on=run, how="inner")
    have = set(map(tuple, tagged[run].drop_duplicates().itertuples(index=False)))
    lacking = [r for r in map(tuple, ok[run].itertuples(index=False)) if r not in have]
    if lacking:
        raise PeprInputError(
            f"successful run {lacking[0]} has no epochs in {where} ({len(lacking)} such run(s)); "
            "re-run its training job (snakemake reruns it when its history.csv is deleted) or remove the run"
        )
    return tagged.sort_values([*run, "epoch"]).reset_index(drop=True)
