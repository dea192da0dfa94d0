"""PePR: performance per resource unit, scored within experiment cells.

For each run ``i`` in one cell (the ``by`` group) and each resource column ``r``::

    r_norm_i = (r_i - min r) / (max r - min r)     over the cell's runs
    pepr_r_i = P_i / (1 + r_norm_i)

``P`` is a performance in [0, 1]. The cheapest run of a cell scores exactly ``P``, the most
expensive ``P / 2``. A cell whose resource is constant (``max == min``, e.g. a single run) gets
``r_norm = 0`` for every run, so each of its runs scores its own performance.

A combined PePR over several resources averages their normalised values with weights ``w``::

    R_i = sum_j w_j r_norm_j,i / sum_j w_j      pepr_combined_i = P_i / (1 + R_i)

so R stays in [0, 1] (it is 0 only for a run cheapest on every resource) and equal weights
count each resource alike whatever its unit (:func:`combine`).

This module imports pandas and numpy only: scoring must stay light and never pull in torch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from pepr.columns import RESOURCE_COLUMNS
from pepr.errors import PeprInputError

__all__ = ["score", "combine", "norm_column", "pepr_column", "validate_score_inputs"]

#: How many offending row labels an error message lists before it summarises the rest.
_MAX_ROWS_IN_MESSAGE = 10


def norm_column(resource: str) -> str:
    """Name of the normalised-resource column added for ``resource``."""
    return f"{resource}_norm"


def pepr_column(resource: str) -> str:
    """Name of the PePR score column added for ``resource``."""
    return f"pepr_{resource}"


def _describe_rows(index: pd.Index) -> str:
    labels = [str(label) for label in index[:_MAX_ROWS_IN_MESSAGE]]
    more = len(index) - len(labels)
    text = ", ".join(labels)
    return f"{text} (and {more} more)" if more > 0 else text


def _first_of_type(series: pd.Series, types: tuple[type, ...]) -> object | None:
    """Row label of the first value of ``series`` that is an instance of ``types`` (object columns)."""
    if series.dtype != object:
        return None
    hits = series.map(lambda value: isinstance(value, types))
    return hits.idxmax() if hits.any() else None


def _plain(value: object) -> str:
    """A value as an error message shows it: numbers plainly (``1000.0``, not
    ``np.float64(1000.0)``), text quoted so stray spaces show."""
    if isinstance(value, np.generic):
        value = value.item()
    return repr(value)


def _numeric(df: pd.DataFrame, column: str, role: str) -> pd.Series:
    series = df[column]
    # True/False, dates and durations would silently become 0/1 or nanoseconds: refuse them and
    # let the user convert on purpose (e.g. a pass/fail flag is not an accuracy).
    if pd.api.types.is_bool_dtype(series) or _first_of_type(series, (bool, np.bool_)) is not None:
        raise PeprInputError(
            f"{role} column '{column}' holds booleans (True/False), not numbers; PePR needs "
            + (
                "a performance in [0, 1] such as an accuracy"
                if role == "performance"
                else "a measured amount such as kWh or seconds"
            )
            + ": convert it to numbers first if that is really meant"
        )
    if (
        pd.api.types.is_datetime64_any_dtype(series)
        or pd.api.types.is_timedelta64_dtype(series)
        or (_first_of_type(series, (pd.Timestamp, pd.Timedelta, np.datetime64, np.timedelta64)) is not None)
    ):
        raise PeprInputError(
            f"{role} column '{column}' holds dates or durations, not numbers; convert it to a number "
            "first (e.g. a duration to seconds)"
        )
    listed = _first_of_type(series, (list, tuple, dict, set, np.ndarray))
    if listed is not None:
        raise PeprInputError(
            f"{role} column '{column}' holds lists or mappings (e.g. row {listed}: {series.loc[listed]!r}); "
            "it needs one number per row"
        )
    if not pd.api.types.is_numeric_dtype(series):
        converted = pd.to_numeric(series, errors="coerce")
        bad = series.index[converted.isna() & series.notna()]
        if len(bad):
            raise PeprInputError(
                f"{role} column '{column}' must be numeric, but rows {_describe_rows(bad)} hold "
                f"non-numeric values (e.g. {_plain(series.loc[bad[0]])}); fix or remove those rows"
            )
        series = converted
    missing = series.index[series.isna()]
    if len(missing):
        raise PeprInputError(
            f"{role} column '{column}' has missing/NaN values in rows {_describe_rows(missing)}; "
            "fill them or drop those rows before scoring"
        )
    infinite = series.index[~np.isfinite(series.to_numpy(dtype=float))]
    if len(infinite):
        raise PeprInputError(f"{role} column '{column}' has infinite values in rows {_describe_rows(infinite)}")
    return series.astype(float)


#: pepr's own per-run measurements (metrics.json): never experiment-cell columns.
_MEASUREMENTS = RESOURCE_COLUMNS


def _is_measurement(column: object) -> bool:
    text = str(column)
    base = text[: -len("_amortised")] if text.endswith("_amortised") else text
    return base in _MEASUREMENTS or text.startswith(("test_", "val_", "pepr_")) or text.endswith("_norm")


def validate_score_inputs(
    df: pd.DataFrame,
    performance: str,
    resources: Sequence[str],
    by: Sequence[str] = (),
) -> None:
    """Check a table before scoring; raise :class:`PeprInputError` naming what is wrong.

    Checks: a non-empty table, at least one resource, every column named once in the table and
    every named column present, no input column that a score column would overwrite
    (``X_norm``, ``pepr_X``), performance numeric (not boolean, date or list) and within [0, 1],
    resources numeric (not boolean, date, duration or list) and non-negative, group columns
    holding one value per row (no lists), no missing values in any named column (group columns
    included, so no run silently drops out of its cell).
    """
    if not isinstance(df, pd.DataFrame):
        raise PeprInputError(f"expected a pandas DataFrame, got {type(df).__name__}")
    if isinstance(resources, str):
        resources = [resources]
    if not resources:
        raise PeprInputError("no resource column given: name at least one (e.g. --resource energy_kwh)")
    if len(df) == 0:
        raise PeprInputError("the table has no rows: there is nothing to score")
    duplicated_names = sorted({str(c) for c in df.columns[df.columns.duplicated()]})
    if duplicated_names:
        raise PeprInputError(
            f"the table has more than one column named {', '.join(repr(c) for c in duplicated_names)}; "
            "rename or drop the extra ones so every column is named once"
        )
    named = [performance, *resources, *by]
    unknown = [c for c in dict.fromkeys(named) if c not in df.columns]
    if unknown:
        raise PeprInputError(
            f"unknown column(s) {', '.join(repr(c) for c in unknown)}; "
            f"available columns: {', '.join(map(str, df.columns))}"
        )
    duplicated = sorted({r for r in resources if list(resources).count(r) > 1})
    if duplicated:
        raise PeprInputError(f"resource column(s) given more than once: {', '.join(duplicated)}")
    if performance in resources:
        raise PeprInputError(f"column '{performance}' is given both as performance and as a resource")
    # a cell of runs sharing their accuracy or energy is no experiment cell: every run its own group
    grouped_by_score = [c for c in dict.fromkeys(by) if c == performance or c in resources or _is_measurement(c)]
    if grouped_by_score:
        raise PeprInputError(
            f"--by {', '.join(repr(c) for c in grouped_by_score)}: a cell cannot be defined by the performance or a "
            "resource being scored; group by what defines an experiment (e.g. --by dataset --by init --by fraction)"
        )
    for resource in resources:
        for generated in (norm_column(resource), pepr_column(resource)):
            if generated in df.columns:
                raise PeprInputError(
                    f"the input already has a column '{generated}', which scoring resource '{resource}' "
                    f"would overwrite; rename it (e.g. to '{generated}_input') or drop it before scoring"
                )
    perf = _numeric(df, performance, "performance")
    outside = perf.index[(perf < 0) | (perf > 1)]
    if len(outside):
        raise PeprInputError(
            f"performance column '{performance}' must lie in [0, 1], but rows "
            f"{_describe_rows(outside)} do not (e.g. {_plain(perf.loc[outside[0]])}); "
            "use a fraction, not a percentage"
        )
    for resource in resources:
        values = _numeric(df, resource, "resource")
        negative = values.index[values < 0]
        if len(negative):
            raise PeprInputError(
                f"resource column '{resource}' must be non-negative, but rows "
                f"{_describe_rows(negative)} are negative (e.g. {_plain(values.loc[negative[0]])})"
            )
    for column in by:
        listed = _first_of_type(df[column], (list, tuple, dict, set, np.ndarray))
        if listed is not None:
            raise PeprInputError(
                f"group column '{column}' holds lists or mappings (e.g. row {listed}: {df[column].loc[listed]!r}); "
                "a cell needs one value per row (a name or number): choose another --by column"
            )
        missing = df.index[df[column].isna()]
        if len(missing):
            raise PeprInputError(
                f"group column '{column}' has missing values in rows {_describe_rows(missing)}; "
                "every run must belong to a cell"
            )


def score(
    df: pd.DataFrame,
    performance: str = "test_accuracy",
    resources: Sequence[str] = ("energy_kwh",),
    by: Sequence[str] | None = None,
    reference: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Return ``df`` plus, per resource ``X``, the columns ``X_norm`` and ``pepr_X``.

    Rows and existing columns are kept unchanged and in order; the new columns are appended in
    the order of ``resources`` (``X_norm`` then ``pepr_X`` for each). Normalisation is min-max
    within each group of ``by`` (the whole table when ``by`` is empty or None); a group whose
    resource is constant gets ``X_norm = 0``.

    ``reference`` (optional; rows with the ``by`` and resource columns) widens each group's
    range without being scored: an adaptive sweep's stopped runs at their projected full-run
    resources (:func:`pepr.results.adaptive.projected_full_runs`), so that the finished runs are
    scored on the scale of the whole cell, as the full grid would score them. Its empty values
    are ignored; a reference row of a group with no scored run changes nothing.

    Raises :class:`PeprInputError` for bad input (see :func:`validate_score_inputs`).
    """
    if isinstance(resources, str):
        resources = [resources]
    resources = list(resources)
    by = [by] if isinstance(by, str) else list(by or [])
    validate_score_inputs(df, performance, resources, by)
    if reference is not None:
        absent = [c for c in [*by, *resources] if c not in reference.columns]
        if absent:
            raise PeprInputError(f"the reference rows lack the column(s) {', '.join(absent)} the scores need")

    out = df.copy()
    perf = _numeric(df, performance, "performance").to_numpy()
    for resource in resources:
        values = _numeric(df, resource, "resource")
        low, high = _cell_range(df, values, by, reference, resource)
        span = high - low
        # A constant cell has no spread to normalise by: every run counts as the cheapest.
        safe_span = np.where(span > 0, span, 1.0)
        normalised = np.where(span > 0, (values.to_numpy() - low) / safe_span, 0.0)
        out[norm_column(resource)] = normalised
        out[pepr_column(resource)] = perf / (1.0 + normalised)
    return out


def _cell_range(
    df: pd.DataFrame, values: pd.Series, by: list[str], reference: pd.DataFrame | None, resource: str
) -> tuple[np.ndarray, np.ndarray]:
    """Each row's cell minimum and maximum of ``values``, over the cell's rows and its ``reference`` rows."""
    extra = None
    if reference is not None and len(reference):
        extra = pd.to_numeric(reference[resource], errors="coerce")
        keep = extra.notna().to_numpy()
        extra, reference = extra[keep], reference[keep]
    if not by:
        pool = values if extra is None or extra.empty else pd.concat([values, extra], ignore_index=True)
        return np.full(len(values), pool.min()), np.full(len(values), pool.max())
    keys = [df[c] for c in by]
    if extra is not None and not extra.empty:
        # cells keyed alike in both tables; the reference only lowers a minimum or raises a maximum
        pool = pd.concat([values.reset_index(drop=True), extra.reset_index(drop=True)], ignore_index=True)
        keys = [
            pd.concat([df[c].reset_index(drop=True), reference[c].reset_index(drop=True)], ignore_index=True)
            for c in by
        ]
        grouped = pool.groupby(keys, sort=False, dropna=False)
        return grouped.transform("min").to_numpy()[: len(values)], grouped.transform("max").to_numpy()[: len(values)]
    grouped = values.groupby(keys, sort=False, dropna=False)
    return grouped.transform("min").to_numpy(), grouped.transform("max").to_numpy()


def combine(scored: pd.DataFrame, performance: str, weights: Sequence[tuple[str, float]], name: str) -> pd.DataFrame:
    """``scored`` (the output of :func:`score`) plus the combined PePR of ``weights``' resources
    ((column, weight) pairs, each already scored): ``name`` and ``<name>_norm`` hold
    R = sum w_j r_norm_j / sum w_j, ``pepr_<name>`` holds P / (1 + R). A run lacking any of the
    resources gets no combined score."""
    if not weights:
        raise PeprInputError("a combined PePR needs at least one resource")
    missing = [c for c, _ in weights if norm_column(c) not in scored.columns]
    if missing:
        raise PeprInputError(f"combined PePR: resource(s) {', '.join(missing)} are not scored; score them first")
    total = float(sum(w for _, w in weights))
    if not total > 0 or any(not np.isfinite(w) or w < 0 for _, w in weights):
        raise PeprInputError("combined PePR: weights must be finite, >= 0 and not all 0")
    r = sum(w * pd.to_numeric(scored[norm_column(c)], errors="coerce").to_numpy(float) for c, w in weights) / total
    perf = pd.to_numeric(scored[performance], errors="coerce").to_numpy(float)
    out = scored.copy()
    out[name] = r
    out[norm_column(name)] = r
    out[pepr_column(name)] = perf / (1.0 + r)
    return out
