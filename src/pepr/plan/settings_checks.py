"""Checks of the ``report:`` settings against what the runs will record, for ``snakemake -n``.

:class:`pepr.report.config.ReportConfig` checks types and ranges of its own; these checks need
the run contract (:mod:`pepr.results.runs`): ``report.resource`` must be a column ``results/pepr.csv``
scores, ``report.history_performance`` / ``history_resource`` columns ``history.csv`` has,
``report.model_metadata`` a readable CSV with the columns the report reads, ``report.seed`` a
seed numpy takes: a typo is found at planning, not after every training has run.
Stdlib only (the metadata header is read with :mod:`csv`).
"""

from __future__ import annotations

import csv
import difflib
from collections.abc import Mapping
from typing import Any

from pepr.columns import MAX_SEED, SCORED_COLUMNS
from pepr.results.runs import HISTORY_COLUMNS

#: Resources results/pepr.csv has PePR columns for (the scored resources and their amortised forms).
SCORED_RESOURCES = SCORED_COLUMNS
#: history.csv columns that are a performance in [0, 1].
HISTORY_PERFORMANCE = tuple(c for c in HISTORY_COLUMNS if c.startswith(("val_", "test_")) and not c.endswith("_loss"))
#: history.csv columns that are a cumulative resource.
HISTORY_RESOURCES = tuple(c for c in HISTORY_COLUMNS if c.startswith("cumulative_"))


def _one_of(key: str, value: Any, allowed: tuple[str, ...], what: str) -> str | None:
    if value in allowed:
        return None
    close = difflib.get_close_matches(str(value), allowed, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"report.{key} = {value!r} is not {what}{hint}; use one of {', '.join(allowed)}"


def report_setting_problems(settings: Mapping[str, Any]) -> list[str]:
    """Problems of a ``report:`` mapping that only the run contract can find (empty: fine)."""
    problems: list[str] = []
    if "resource" in settings:
        problems.append(
            _one_of("resource", settings["resource"], SCORED_RESOURCES, "a resource results/pepr.csv is scored on")
        )
    if "history_performance" in settings:
        problems.append(
            _one_of(
                "history_performance",
                settings["history_performance"],
                HISTORY_PERFORMANCE,
                "a performance column of history.csv",
            )
        )
    if "history_resource" in settings:
        problems.append(
            _one_of(
                "history_resource",
                settings["history_resource"],
                HISTORY_RESOURCES,
                "a cumulative resource column of history.csv",
            )
        )
    seed = settings.get("seed")
    if "seed" in settings and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED):
        problems.append(f"report.seed = {seed!r}; use an integer in 0..{MAX_SEED}")
    if settings.get("model_metadata") is not None:
        problems.append(_metadata_problem(settings["model_metadata"]))
    return [p for p in problems if p]


def _metadata_problem(path: Any) -> str | None:
    from pepr.files import file_kind_problem

    if not isinstance(path, str) or not path:
        return f"report.model_metadata = {path!r}; give the path of a CSV with columns model, type, efficient"
    kind = file_kind_problem(path, "report.model_metadata")
    if kind:
        return kind
    suffix = path.rsplit(".", 1)[-1].lower() if "." in path else ""
    if suffix in ("parquet", "pq"):
        return None  # read by the report with pandas; its columns are checked there
    if suffix != "csv":
        return f"report.model_metadata {path}: give a .csv or .parquet table (columns model, type, efficient)"
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            header = next(csv.reader(handle), [])
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        return f"report.model_metadata {path} cannot be read as a UTF-8 CSV ({type(exc).__name__})"
    missing = [c for c in ("model", "type", "efficient") if c not in [h.strip() for h in header]]
    if missing:
        return f"report.model_metadata {path} has no column(s) {', '.join(missing)}; it needs columns model, type, efficient (the paper's model table)"
    return None
