"""The report's view of an adaptive sweep: what it stopped and what that saved.

An adaptive sweep (:mod:`pepr.results.adaptive`) leaves runs with ``status: "stopped"``: they
have numbers of their rung's epoch only, so the decision, the PePR scores and the statistics use
the fully trained runs (stopped runs are not ``ok``, like failed ones; they widen their group's
normalisation range at their projected full-run cost, :func:`pepr.results.adaptive.projected_full_runs`).
This module adds:

* :func:`stopped_table`: the stopped runs with their rung, selection metric at it, resource spent
  and projected PePR (from the group's decision, as recorded in their metrics.json);
* :func:`savings_table`: per group and in total, the resources spent against the projected full
  grid (every stopped run's spending scaled from its rung to the full epochs, as the policy
  projects it), in the footprint cards' units (kWh, kg CO2, device-hours);
* :func:`savings_html`: that table as the first screen's section next to the footprint cards.

Both tables are empty for a full grid. pandas only, never torch.
"""

from __future__ import annotations

import html

import pandas as pd

from pepr.columns import RESOURCES
from pepr.report.config import ReportConfig
from pepr.results.adaptive import full_run_scale

#: Totals are shown as the footprint cards show them: time in device-hours.
_SHOWN_AS = {"s": ("device-hours", 1 / 3600)}
#: Additive scored resources the savings are given in: column -> (name, unit shown, factor to it).
SAVED: dict[str, tuple[str, str, float]] = {
    r.column: (r.name, *_SHOWN_AS.get(r.unit, (r.unit, 1.0))) for r in RESOURCES if r.additive and r.scored
}


def _stopped(df: pd.DataFrame) -> pd.Series:
    return df["status"].astype(str) == "stopped" if "status" in df.columns else pd.Series(False, index=df.index)


def stopped_table(df: pd.DataFrame, cfg: ReportConfig) -> pd.DataFrame:
    """The stopped runs: group, model, seed, rung, val_accuracy at it, the headline resource spent
    and the projected PePR their group's decision gave them (empty columns when not recorded)."""
    columns = [*cfg.group, "model", "seed", "rung", "epochs", "val_accuracy", cfg.resource, "projected_pepr"]
    rows = df.loc[_stopped(df)].copy()
    for column in columns:
        if column not in rows.columns:
            rows[column] = pd.NA
    return rows[columns].reset_index(drop=True)


def savings_table(df: pd.DataFrame, cfg: ReportConfig) -> pd.DataFrame:
    """Per group and in total (a last row ``total``): for each additive resource, ``X_spent``
    (every run), ``X_full_projected`` (stopped runs scaled from their rung to their epochs) and
    ``X_share``; plus ``n_stopped``. Empty for a sweep without stopped runs."""
    group = list(cfg.group)
    stopped = _stopped(df)
    if not stopped.any() or "rung" not in df.columns or "epochs" not in df.columns:
        return pd.DataFrame(columns=[*group, "n_stopped"])
    scale = full_run_scale(df)
    work = df[group].copy()
    work["n_stopped"] = stopped.astype(int)
    present = [r for r in SAVED if r in df.columns]
    for resource in present:
        spent = pd.to_numeric(df[resource], errors="coerce").fillna(0.0) * SAVED[resource][2]
        work[f"{resource}_spent"] = spent
        work[f"{resource}_full_projected"] = spent * scale
    table = work.groupby(group, sort=True).sum(numeric_only=True).reset_index()
    total = {
        **{c: ("total" if i == 0 else "") for i, c in enumerate(group)},
        **table.drop(columns=group).sum().to_dict(),
    }
    table = pd.concat([table, pd.DataFrame([total])], ignore_index=True)
    for resource in present:
        full = table[f"{resource}_full_projected"]
        table[f"{resource}_share"] = (table[f"{resource}_spent"] / full.where(full > 0)).round(4)
    return table


def savings_html(table: pd.DataFrame | None) -> str:
    """The "what the adaptive sweep saved" section (empty text for a full grid)."""
    if table is None or len(table) == 0 or "n_stopped" not in table.columns:
        return ""
    total = table.iloc[-1]
    cards = []
    for resource, (label, unit, _) in SAVED.items():
        spent, full = f"{resource}_spent", f"{resource}_full_projected"
        if spent not in table.columns:
            continue
        share = total[spent] / total[full] if total[full] else float("nan")
        text = f"{total[spent]:.4g} of {total[full]:.4g} {unit} ({share:.0%})"
        cards.append(
            f'<div class="card"><div class="v">{html.escape(text)}</div>'
            f'<div class="l">{html.escape(label)}: spent of the projected full grid</div></div>'
        )
    rows = []
    group = [c for c in table.columns if c != "n_stopped" and not c.endswith(("_spent", "_full_projected", "_share"))]
    for _, row in table.iloc[:-1].iterrows():
        name = " / ".join(str(row[c]) for c in group)
        shares = ", ".join(f"{SAVED[r][0]} {row[f'{r}_share']:.0%}" for r in SAVED if f"{r}_share" in table.columns)
        rows.append(
            f"<li>{html.escape(name)}: {int(row['n_stopped'])} run(s) stopped; spent {html.escape(shares)} of the full grid</li>"
        )
    return (
        "<h3 id='adaptive'>What the adaptive sweep saved</h3>"
        f'<div class="cards">{"".join(cards)}</div>'
        f"<ul>{''.join(rows)}</ul>"
        '<p class="note">The decision and scores above use the fully trained runs only (normalised over the '
        "group's range with stopped runs at their projected full cost); stopped runs have the "
        "numbers of their rung's epoch (tables/adaptive_stopped.csv lists them with their projected PePR). The full "
        "grid is projected: each stopped run's spending scaled from its rung to the full epochs.</p>"
    )
