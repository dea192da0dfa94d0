"""Measurement flags that act: every run carries its flags (figures mark them), and with
``report.exclude_flagged`` (``pepr report --exclude-flagged``) the runs flagged *harmful* are
left out of the scores, with what that changed.

Leaving runs out re-scores their groups (PePR's min-max normalisation depends on every run of
the group), so the whole report is computed from the re-scored table; the runs left out are
listed (``excluded_runs.csv``), and the verdicts that differ from the report with them kept
(``verdict_changes.csv``: the recommended model per group, and each claim's verdict).
"""

from __future__ import annotations

import dataclasses

import pandas as pd

from pepr.report.config import ReportConfig
from pepr.report.data import ReportData, run_columns
from pepr.report.tables import HARMFUL, run_flags

__all__ = ["annotate", "EXCLUDED_COLUMNS", "CHANGE_COLUMNS", "excluded_table", "verdict_changes"]

CHANGE_COLUMNS = ["table", "where", "with_flagged", "without_flagged"]


def _rescore(df: pd.DataFrame, cfg: ReportConfig, resources: tuple[str, ...]) -> pd.DataFrame:
    """PePR of every resource recomputed over the successful runs left, within each group."""
    from pepr.results.adaptive import projected_full_runs
    from pepr.results.scoring import norm_column, pepr_column, score

    ok = df["ok"]
    scored = score(
        df.loc[ok, [*cfg.group, cfg.performance, *resources]],
        performance=cfg.performance,
        resources=list(resources),
        by=list(cfg.group),
        reference=projected_full_runs(df, list(resources)),
    )
    out = df.copy()
    for resource in resources:
        for column in (norm_column(resource), pepr_column(resource)):
            out[column] = float("nan")
            out.loc[ok, column] = scored[column].to_numpy()
    return out


def annotate(data: ReportData) -> ReportData:
    """``data`` with its measurement flags (``data.flags``; column ``flags`` of the results:
    the checks that flagged each run, "" for none) and, when ``cfg.exclude_flagged``, without
    the runs flagged harmful (not ok, reason "left out: ...", their groups re-scored; the
    results before that kept in ``data.with_flagged``)."""
    cfg = data.cfg
    flags = run_flags(data.results, cfg, list(data.resources), data.synthetic)
    results = data.results.copy()
    results["flags"] = ""
    if len(flags):
        named = flags.assign(text=flags["check"] + " (" + flags["severity"] + ")").groupby("row")["text"].agg("; ".join)
        results.loc[named.index, "flags"] = named
    data = dataclasses.replace(data, results=results, flags=flags)
    if not cfg.exclude_flagged or flags.empty:
        return data
    harmful = flags[flags["severity"] == HARMFUL].groupby("row")["check"].agg(lambda c: ", ".join(sorted(set(c))))
    if harmful.empty:
        return data
    kept = results.copy()
    kept.loc[harmful.index, "ok"] = False
    kept.loc[harmful.index, "reason"] = "left out (report.exclude_flagged): flagged harmful by " + harmful
    return dataclasses.replace(data, results=_rescore(kept, cfg, data.resources), with_flagged=results)


EXCLUDED_COLUMNS = ["checks", "reason"]


def excluded_table(data: ReportData) -> pd.DataFrame:
    """The runs left out by ``report.exclude_flagged`` with the checks that flagged them
    (empty when nothing was left out)."""
    columns = [*run_columns(data.cfg), *EXCLUDED_COLUMNS]
    if data.with_flagged is None:
        return pd.DataFrame(columns=columns)
    out = data.results[(~data.results["ok"]) & data.with_flagged["ok"]]
    return out.assign(checks=out["flags"])[columns].reset_index(drop=True)


def _keyed(table: pd.DataFrame, value: str, keys: list[str]) -> dict[str, str]:
    present = [k for k in keys if k in table.columns]
    return {" / ".join(str(v) for v in row[present]): str(row[value]) for _, row in table.iterrows()}


def verdict_changes(data: ReportData, tables: dict[str, pd.DataFrame], compute) -> pd.DataFrame:
    """What leaving the flagged runs out changed: per table and place, the verdict (or the
    recommended model) with the flagged runs and without them. ``compute``: the function that
    computes the tables (called once on the report with the flagged runs kept)."""
    if data.with_flagged is None:
        return pd.DataFrame(columns=CHANGE_COLUMNS)
    before = compute(dataclasses.replace(data, results=data.with_flagged, with_flagged=None), with_changes=False)
    keys = [*data.cfg.group, "context", "treatment", "baseline", "metric", "variant", "family", "test"]
    rows = []
    for name, column in [
        ("decision", "recommended_model"),
        ("small_vs_large", "verdict_not_worse"),
        ("small_vs_large", "verdict_performance"),
        ("size_trend", "diminishing_returns"),
        ("paired_init", "verdict"),
        ("paired_fraction", "verdict"),
    ]:
        if column not in tables.get(name, pd.DataFrame()).columns or column not in before[name].columns:
            continue
        old, new = _keyed(before[name], column, keys), _keyed(tables[name], column, keys)
        for where in sorted(set(old) | set(new)):
            if old.get(where) != new.get(where):
                rows.append(
                    {
                        "table": f"{name}.{column}",
                        "where": where,
                        "with_flagged": old.get(where, "(none)"),
                        "without_flagged": new.get(where, "(none)"),
                    }
                )
    return pd.DataFrame(rows, columns=CHANGE_COLUMNS)
