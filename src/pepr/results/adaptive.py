"""Adaptive sweeps: successive halving by *projected* PePR, one group at a time.

A group (dataset x init x fraction) starts with every model as a candidate (the seeds of one
model are one candidate). At each rung (an epoch below the sweep's ``epochs``) every candidate
still in contention gets a projected full-run PePR and only the best continue; the others stop.
:func:`decide_rung` is that decision, the one policy both the workflow (rule ``select_rung``) and
``pepr replay`` (:func:`replay`) run.

The projection (documented in the README, "Adaptive sweeps"):

* performance = the selection metric (``select_by``, by default ``val_accuracy``: selection never
  looks at the test set) at the rung, averaged over the candidate's seeds;
* resource = what the candidate spent up to the rung scaled to the full epochs
  (``spent * epochs / rung``: epochs of one run cost about the same), averaged over seeds; a peak
  (memory) is not scaled: it does not grow with epochs;
* R = min-max normalisation of the projected resource over *every candidate the group started
  with*: the candidates still in contention at their projection now, the ones stopped at earlier
  rungs at their projection from the rung where they stopped (``stopped``); projected PePR =
  performance / (1 + R). The full grid's PePR normalises over the whole group too, so the
  projection is on the scale the final score will use. Normalising over the survivors alone
  would blow a small gap up: two survivors 9% apart in cost would score R = 0 and R = 1, and
  which of two near-equal models is cheaper flips between measurements.

The ``keep`` fraction (rounded up, never fewer than ``min_keep``, never more than there are)
continues, best projected PePR first. Two rules keep more, never fewer:

* *no signal*: when every candidate's selection metric is the same at a rung (e.g. all predict
  the majority class after one epoch), the metric cannot tell them apart yet and ranking would be
  by cost alone; if a later rung follows, every candidate that could still win continues and
  that rung decides (its ``keep`` applies to all of them, so the sweep costs more than planned:
  the price of not guessing). "Could still win": a perfect metric (performance is at most 1)
  would give it PePR ``1 / (1 + R)``; a candidate for which even that is below the leader's
  projected PePR cannot win whatever the later rungs show, and stops (never fewer than
  ``min_keep`` continue). At the last rung there is no later evidence to wait for, and among
  equally performing candidates PePR prefers the cheaper, so the ranking stands;
* *ties*: a candidate whose projected PePR equals the last kept one's continues too (choosing
  between equals by name would be arbitrary);
* *the trend guard*: from the second epoch on, each candidate's selection metric is also
  extrapolated linearly at its mean gain per epoch since epoch 1 (capped at 1). A candidate that
  would lead the group if every candidate kept its pace (its extrapolated PePR at least the
  leader's) continues. Learning curves flatten, so the extrapolation is optimistic: it is used only
  to rescue a late bloomer (a cheap model still climbing fast), never to stop anyone. One epoch
  shows no pace, so the guard does not act at a rung of epoch 1.

The answer of an adaptive group is the best PePR among its fully trained runs, normalised over
the group's whole range: a stopped run enters the range (never the scores) at its projected
full-run resource (:func:`projected_full_runs`, the reference rows of
:func:`pepr.results.scoring.score`), as the rungs did; the workflow's pepr.csv, the report,
``pepr score`` and :func:`replay` all score so.

Failed runs drop out (a candidate whose every seed failed is no candidate); a run without a row
at the rung epoch failed before it. Light: pandas and numpy only, never torch, and only inside
the functions that need them: planning imports this module for :func:`adaptive_problems`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pepr.columns import AMORTISED_RESOURCES, CUMULATIVE_COLUMNS, GROUP_COLUMNS, SCORED_RESOURCES, amortised_column
from pepr.errors import PeprInputError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import pandas as pd

#: Decisions of :func:`decide_rung`.
KEPT, STOPPED = "kept", "stopped"

#: The workflow's resources (runs.csv columns) and the history.csv column holding each one's
#: running total; memory has no per-epoch column (the rung record carries its peak so far).
HISTORY_RESOURCE: dict[str, str] = CUMULATIVE_COLUMNS


def rung_file(rung: int) -> str:
    """The rung record's file name in a run folder: ``rung3.json``."""
    return f"rung{int(rung)}.json"


def decision_path(run_dir: str | Path, rung: int) -> Path:
    """The group's decision file at ``rung`` for a run folder of the results layout
    (``results/runs/D/I/F/M/seedS`` -> ``results/adaptive/D/I/F/rungN.json``, rule select_rung's output)."""
    run_dir = Path(run_dir)
    group = run_dir.parent.parent  # .../runs/D/I/F
    runs_root = group.parent.parent.parent
    return runs_root.parent / "adaptive" / group.relative_to(runs_root) / rung_file(rung)


def read_rung(path: str | Path) -> dict[str, Any]:
    """A rung record; PeprInputError naming the file when it is missing or not one."""
    import json

    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PeprInputError(
            f"rung record {path} cannot be read ({type(exc).__name__}); run its rung job again "
            "(snakemake --forcerun it)"
        ) from None
    if not isinstance(record, dict) or "status" not in record or "rung" not in record:
        raise PeprInputError(f"{path} is not a pepr rung record (no status or rung)")
    return record


def is_peak(resource: str) -> bool:
    """Whether a resource is a peak (memory), which an adaptive projection does not scale."""
    return "memory" in resource.lower()


def full_run_scale(runs: pd.DataFrame) -> pd.Series:
    """Per row of a runs table, the factor from what a run spent to what its full run would spend:
    ``epochs / rung`` for a stopped run (epochs of one run cost about the same, as the policy
    projects), 1 for every other run (and for a stopped run whose rung or epochs is unknown)."""
    import pandas as pd

    scale = pd.Series(1.0, index=runs.index)
    if "status" not in runs.columns or "rung" not in runs.columns or "epochs" not in runs.columns:
        return scale
    stopped = runs["status"].astype(str).str.strip().str.lower() == STOPPED
    ratio = pd.to_numeric(runs["epochs"], errors="coerce") / pd.to_numeric(runs["rung"], errors="coerce")
    usable = stopped & ratio.notna() & (ratio >= 1)
    scale[usable] = ratio[usable]
    return scale


def projected_full_runs(runs: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """The stopped runs of a runs table, each resource of ``columns`` at its projected full-run value.

    A stopped run spent ``r`` by its rung; its full run would have spent ``r * epochs / rung``
    (a peak such as memory stays ``r``; an amortised column adds the scaled own part to the
    pretraining share, which does not grow). These are the reference rows :func:`pepr.results.scoring.score`
    takes: an adaptive sweep's finished runs are then normalised over the range of the whole cell
    (the range the rungs' decisions used), not over the few finished runs alone, where a small gap
    between two cheap survivors would become R = 0 against R = 1. Empty without stopped runs."""
    import pandas as pd

    scale = full_run_scale(runs)
    stopped = scale.index[scale > 1] if len(scale) else scale.index
    out = runs.loc[stopped].copy()
    own_of = {amortised_column(r): r for r in AMORTISED_RESOURCES}
    for column in columns:
        if column not in out.columns or is_peak(column):
            continue
        own = own_of.get(column, column)
        value = pd.to_numeric(runs.loc[stopped, column], errors="coerce")
        own_value = pd.to_numeric(runs.loc[stopped, own], errors="coerce") if own in runs.columns else value
        out[column] = value + own_value * (scale[stopped] - 1.0)
    return out


@dataclass(frozen=True)
class Policy:
    """The ``adaptive:`` settings: rungs (epochs, ascending, each below ``epochs``), keep
    fraction in (0, 1], min_keep >= 1."""

    rungs: tuple[int, ...]
    keep: float
    min_keep: int = 2

    def __post_init__(self) -> None:
        problems = policy_problems(list(self.rungs), self.keep, self.min_keep)
        if problems:
            raise PeprInputError("; ".join(problems))


def policy_problems(rungs: Sequence[object], keep: object, min_keep: object, epochs: int | None = None) -> list[str]:
    """Every problem of an adaptive policy's settings, as one phrase each (empty: fine)."""
    problems = []
    if not isinstance(rungs, (list, tuple)) or not rungs:
        problems.append(f"rungs {rungs!r}: give a list of epochs, e.g. [1, 3]")
    else:
        bad = [r for r in rungs if isinstance(r, bool) or not isinstance(r, int) or r < 1]
        if bad:
            problems.append(f"rungs {list(rungs)!r}: each rung is an epoch number >= 1")
        elif list(rungs) != sorted(set(rungs)):
            problems.append(f"rungs {list(rungs)!r}: list each epoch once, in increasing order")
        elif epochs is not None and max(rungs) >= epochs:
            problems.append(
                f"rungs {list(rungs)!r}: every rung must be below epochs ({epochs}); the last epoch is the full run"
            )
    if isinstance(keep, bool) or not isinstance(keep, (int, float)) or not 0 < keep <= 1:
        problems.append(f"keep {keep!r}: give the fraction of candidates kept at each rung, in (0, 1], e.g. 0.34")
    if isinstance(min_keep, bool) or not isinstance(min_keep, int) or min_keep < 1:
        problems.append(f"min_keep {min_keep!r}: give a whole number >= 1")
    return problems


#: The resources an adaptive sweep may project (the workflow's scored resources).
ADAPTIVE_RESOURCES: tuple[str, ...] = SCORED_RESOURCES


@dataclass(frozen=True)
class AdaptiveSettings:
    """A workflow's ``adaptive:`` settings, resolved: the policy, the resource (``report.resource``
    when not given) and the selection metric (a column of history.csv)."""

    policy: Policy
    resource: str
    select_by: str


def adaptive_settings(config: Mapping[str, Any]) -> AdaptiveSettings | None:
    """The ``adaptive:`` settings of a defaults-filled, checked config; None for a full grid (no rungs)."""
    given = config.get("adaptive") or {}
    if not given.get("rungs"):
        return None
    resource = given.get("resource") or (config.get("report") or {}).get("resource") or "energy_kwh"
    return AdaptiveSettings(
        Policy(tuple(given["rungs"]), float(given["keep"]), int(given["min_keep"])),
        resource,
        given.get("select_by") or "val_accuracy",
    )


def adaptive_problems(config: Mapping[str, Any]) -> list[str]:
    """Problems of a defaults-filled config's ``adaptive:`` settings (planning, ``snakemake -n``):
    the policy's (:func:`policy_problems`, rungs below ``epochs``), a resource pepr scores, a
    validation selection metric (selection never looks at the test set)."""
    given = config.get("adaptive")
    if not isinstance(given, Mapping) or not given.get("rungs"):
        return []
    epochs = config.get("epochs") if isinstance(config.get("epochs"), int) else None
    problems = [
        f"adaptive.{p}"
        for p in policy_problems(given.get("rungs"), given.get("keep", 0.34), given.get("min_keep", 2), epochs)
    ]
    resource = given.get("resource") or (config.get("report") or {}).get("resource") or "energy_kwh"
    if resource not in ADAPTIVE_RESOURCES:
        where = "adaptive.resource" if given.get("resource") else "report.resource (adaptive.resource is not set)"
        problems.append(
            f"{where} {resource!r}: an adaptive sweep projects one of {', '.join(ADAPTIVE_RESOURCES)}; "
            "set adaptive.resource"
        )
    select_by = given.get("select_by", "val_accuracy")
    if isinstance(select_by, str) and not select_by.startswith("val_"):
        problems.append(
            f"adaptive.select_by {select_by!r}: select by a validation metric (val_accuracy, ...); "
            "selecting by the test set would bias the reported test performance"
        )
    return problems


def kept_count(candidates: int, keep: float, min_keep: int) -> int:
    """How many of ``candidates`` continue: ``keep`` of them rounded up, at least ``min_keep``."""
    return min(candidates, max(min_keep, math.ceil(keep * candidates - 1e-9)))


def _minmax(values: np.ndarray, reference: Sequence[float] = ()) -> np.ndarray:
    """Min-max normalisation of ``values`` over the range of ``values`` and ``reference`` together."""
    import numpy as np

    span = np.concatenate([np.asarray(values, dtype=float), np.asarray(list(reference), dtype=float)])
    low, high = np.min(span), np.max(span)
    return (values - low) / (high - low) if high > low else np.zeros_like(values)


def decide_rung(
    history: pd.DataFrame,
    *,
    rung: int,
    epochs: int,
    keep: float,
    min_keep: int,
    select_by: str = "val_accuracy",
    resource: str = "cumulative_energy_kwh",
    peak: bool = False,
    model: str = "model",
    seed: str = "seed",
    epoch: str = "epoch",
    stopped: Mapping[str, float] | None = None,
    later_rung: bool = False,
) -> pd.DataFrame:
    """One group's decision at one rung: which candidates continue.

    ``stopped`` maps the group's candidates stopped at earlier rungs to their projected resource
    at the rung where they stopped: they take no part in the decision but widen the range R is
    normalised over (see the module's docstring). ``later_rung``: whether the policy has a rung
    after this one (with no signal in the metric, the decision waits for it).

    ``history`` holds one row per run (model x seed) and epoch of the group's runs still in
    contention, with the selection metric ``select_by`` and the running total ``resource`` (a
    peak so far when ``peak``); rows after ``rung`` are ignored. An optional ``status`` column
    drops rows that are not ``ok`` (failed or stopped runs). Returns one row per candidate, best
    projected PePR first: ``model``, ``seeds``, ``metric`` (mean at the rung), ``spent`` (summed
    over seeds), ``projected_resource``, ``projected_pepr``, ``trend_pepr`` (NaN at rung 1),
    ``decision`` (``kept``/``stopped``) and ``reason``. Empty when no candidate reached the rung.
    """
    import numpy as np
    import pandas as pd

    columns = [
        "model",
        "seeds",
        "metric",
        "spent",
        "projected_resource",
        "projected_pepr",
        "trend_pepr",
        "decision",
        "reason",
    ]
    rows = history[history[epoch] <= rung]
    if "status" in rows.columns:
        rows = rows[rows["status"].astype(str).str.lower() == "ok"]
    at_rung = rows[rows[epoch] == rung]
    if at_rung.empty:
        return pd.DataFrame(columns=columns)
    first = rows[rows[epoch] == 1].set_index([model, seed])[select_by]
    runs = at_rung.set_index([model, seed])
    per_run = pd.DataFrame(
        {
            "metric": pd.to_numeric(runs[select_by], errors="coerce"),
            "spent": pd.to_numeric(runs[resource], errors="coerce"),
            "first": pd.to_numeric(first.reindex(runs.index), errors="coerce"),
        }
    )
    per_run = per_run.dropna(subset=["metric", "spent"])
    if per_run.empty:
        return pd.DataFrame(columns=columns)
    grouped = per_run.groupby(level=0, sort=True)
    table = pd.DataFrame(
        {
            "seeds": grouped.size(),
            "metric": grouped["metric"].mean(),
            "spent": grouped["spent"].sum(),
            "mean_spent": grouped["spent"].mean(),
            "first": grouped["first"].mean(),
        }
    )
    table.index.name = "model"
    scale = 1.0 if peak else epochs / rung
    table["projected_resource"] = table["mean_spent"] * scale
    norm = _minmax(table["projected_resource"].to_numpy(dtype=float), [float(v) for v in (stopped or {}).values()])
    table["projected_pepr"] = table["metric"].to_numpy() / (1.0 + norm)
    table["r_norm"] = norm
    if rung >= 2 and epochs > rung:
        pace = (table["metric"] - table["first"]).clip(lower=0) / (rung - 1)
        trend = np.minimum(1.0, table["metric"] + pace.fillna(0) * (epochs - rung))
        table["trend_pepr"] = trend.to_numpy() / (1.0 + norm)
    else:
        table["trend_pepr"] = np.nan
    table = table.reset_index().sort_values(["projected_pepr", "model"], ascending=[False, True], kind="stable")
    table = table.reset_index(drop=True)
    count = kept_count(len(table), keep, min_keep)
    cutoff = table["projected_pepr"].iloc[count - 1]
    leader_trend = table["trend_pepr"].iloc[0]
    no_signal = (
        later_rung
        and len(table) > 1
        and math.isclose(table["metric"].max(), table["metric"].min(), rel_tol=0, abs_tol=1e-12)
    )
    # with no signal, a candidate that could not reach the leader's projected PePR even with a
    # perfect metric (performance <= 1, so PePR <= 1 / (1 + R)) cannot win: no later rung can change that
    leader_pepr = table["projected_pepr"].iloc[0]
    best_possible = max(1.0, float(table["metric"].max())) / (1.0 + table["r_norm"].to_numpy(dtype=float))
    can_win = best_possible >= leader_pepr - 1e-12
    no_signal_keep = max(int(can_win.sum()), min(min_keep, len(table)))
    decisions, reasons = [], []
    for position, row in table.iterrows():
        if no_signal and position < no_signal_keep:
            decisions.append(KEPT)
            reasons.append(f"no signal: every candidate's {select_by} is {row['metric']:.4g}; a later rung decides")
        elif no_signal:
            decisions.append(STOPPED)
            reasons.append(
                f"no signal, and even a perfect {select_by} would give PePR {best_possible[position]:.4f}, "
                f"below the leader's projected {leader_pepr:.4f}"
            )
        elif position < count:
            decisions.append(KEPT)
            reasons.append(f"top {count} of {len(table)} by projected PePR")
        elif math.isclose(row["projected_pepr"], cutoff, rel_tol=1e-12, abs_tol=1e-12):
            decisions.append(KEPT)
            reasons.append("tied with the last kept candidate")
        elif not math.isnan(row["trend_pepr"]) and row["trend_pepr"] >= leader_trend - 1e-12:
            decisions.append(KEPT)
            reasons.append("trend guard: at its pace it would lead the group")
        else:
            decisions.append(STOPPED)
            reasons.append(f"projected PePR {row['projected_pepr']:.4f} below the kept {cutoff:.4f}")
    table["decision"] = decisions
    table["reason"] = reasons
    return table[columns]


# --------------------------------------------------------------------------------------------
# Replay on a finished full sweep's per-epoch table
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Columns:
    """Column names of a histories table (``pepr replay``'s flags)."""

    by: tuple[str, ...] = GROUP_COLUMNS
    model: str = "model"
    seed: str = "seed"
    epoch: str = "epoch"
    select_by: str = "val_accuracy"
    performance: str = "test_accuracy"
    resource: str = "cumulative_energy_kwh"


def _best_model(final: pd.DataFrame, cols: Columns, reference: Sequence[float] = ()) -> tuple[str | None, pd.Series]:
    """Best model by mean PePR over its seeds (runs normalised together, over the range of
    ``reference`` too), and every model's mean PePR."""
    import pandas as pd

    if final.empty:
        return None, pd.Series(dtype=float)
    perf = final[cols.performance].to_numpy(dtype=float)
    norm = _minmax(final[cols.resource].to_numpy(dtype=float), reference)
    pepr = pd.Series(perf / (1.0 + norm), index=final.index).groupby(final[cols.model]).mean()
    best = min(pepr.index, key=lambda m: (-pepr[m], str(m)))
    return best, pepr


def stopped_projections(table: pd.DataFrame, earlier: Mapping[str, float] | None = None) -> dict[str, float]:
    """The group's stopped candidates and their projected resource where they stopped: ``earlier``
    (from previous rungs) plus those :func:`decide_rung`'s ``table`` stops now (``decide_rung``'s
    ``stopped`` at the next rung)."""
    found = {str(k): float(v) for k, v in (earlier or {}).items()}
    stops = table[table["decision"] == STOPPED]
    found.update({str(m): float(r) for m, r in zip(stops["model"], stops["projected_resource"])})
    return found


def replay_group(history: pd.DataFrame, policy: Policy, cols: Columns, peak: bool = False) -> dict[str, object]:
    """What the adaptive policy does on one group's full per-epoch history.

    The full sweep's final epoch is the group's last; a run without it failed (it drops out of
    the full sweep's scores and spent what its last row says). Returns ``best_full`` (best mean
    PePR over the full sweep's finished runs), ``recommended`` (best mean PePR over the runs the
    policy trains to the end, normalised over the group's range with the stopped runs at their
    projected full-run resource, as the adaptive sweep's scores are), ``pepr_regret``
    (full-sweep PePR of ``best_full`` minus that of ``recommended``), ``spent``, ``full_spent``,
    ``resource_share`` and ``rungs`` (the decisions per rung, :func:`decide_rung`'s tables).
    """
    epochs = int(history[cols.epoch].max())
    last = history.sort_values(cols.epoch).groupby([cols.model, cols.seed], sort=False).tail(1)
    full_spent = float(last[cols.resource].sum())
    final = last[last[cols.epoch] == epochs]
    best_full, full_pepr = _best_model(final, cols)
    alive = set(history[cols.model].unique())
    stop_epoch: dict[object, int] = {}
    reference: dict[str, float] = {}
    decisions = {}
    rungs = [r for r in policy.rungs if r < epochs]
    for rung in rungs:
        table = decide_rung(
            history[history[cols.model].isin(alive)],
            rung=rung,
            epochs=epochs,
            keep=policy.keep,
            min_keep=policy.min_keep,
            select_by=cols.select_by,
            resource=cols.resource,
            peak=peak,
            model=cols.model,
            seed=cols.seed,
            epoch=cols.epoch,
            stopped=reference,
            later_rung=rung < rungs[-1],
        )
        decisions[rung] = table
        reference = stopped_projections(table, reference)
        stop_epoch.update(dict.fromkeys(table.loc[table["decision"] == STOPPED, "model"], rung))
        alive = set(table.loc[table["decision"] == KEPT, "model"])
    # each run spent its running total at the epoch it stopped (a failed run: at its last row)
    stops = history[cols.model].map(lambda m: stop_epoch.get(m, epochs))
    reached = history[history[cols.epoch] <= stops]
    reached_last = reached.sort_values(cols.epoch).groupby([cols.model, cols.seed], sort=False).tail(1)
    spent = float(reached_last[cols.resource].sum())
    # the finished runs are scored over the whole group's range, stopped runs at their projected
    # full-run resource (as the workflow's scores are: projected_full_runs)
    stopped_runs = reached_last[reached_last[cols.model].isin(stop_epoch)]
    scale = 1.0 if peak else epochs / stopped_runs[cols.model].map(stop_epoch).astype(float)
    stopped_range = (stopped_runs[cols.resource].astype(float) * scale).tolist()
    recommended, _ = _best_model(final[final[cols.model].isin(alive)], cols, stopped_range)
    regret = (
        float(full_pepr[best_full] - full_pepr[recommended])
        if best_full is not None and recommended is not None
        else math.nan
    )
    return {
        "best_full": best_full,
        "recommended": recommended,
        "pepr_regret": regret,
        "spent": spent,
        "full_spent": full_spent,
        "resource_share": spent / full_spent if full_spent > 0 else math.nan,
        "rungs": decisions,
    }


def replay(history: pd.DataFrame, policy: Policy, cols: Columns, peak: bool = False) -> pd.DataFrame:
    """:func:`replay_group` for every group of ``cols.by``: one row per group (the group columns,
    ``best_full``, ``recommended``, ``pepr_regret``, ``resource_share``, ``spent``, ``full_spent``)."""
    import pandas as pd

    rows = []
    grouped = history.groupby(list(cols.by), sort=True, dropna=False) if cols.by else [((), history)]
    for key, part in grouped:
        key = key if isinstance(key, tuple) else (key,)
        result = replay_group(part, policy, cols, peak)
        rows.append({**dict(zip(cols.by, key)), **{k: v for k, v in result.items() if k != "rungs"}})
    return pd.DataFrame(
        rows, columns=[*cols.by, "best_full", "recommended", "pepr_regret", "resource_share", "spent", "full_spent"]
    )


def prepare_histories(
    raw: pd.DataFrame, cols: Columns, policy: Policy, *, seed_given: bool = True, source: str = "the histories table"
) -> tuple[pd.DataFrame, Columns]:
    """Check a per-epoch table for :func:`replay` (raise :class:`PeprInputError` naming the first
    problem and its fix) and return it with only the rows of finished-or-running runs, plus the
    columns resolved (``cols.by`` empty: those of dataset, init, fraction present; no seed
    column when ``seed_given`` is False: one run per model and group).

    The checks are the scoring's (:func:`pepr.results.scoring.validate_score_inputs`: numbers in
    [0, 1] for the selection metric and performance, a non-negative resource, group columns
    without holes), plus: whole epochs >= 1, one row per run and epoch, every rung below every
    group's final epoch; a ``status`` column (ok/failed, any case) drops failed rows.
    """
    import pandas as pd

    from pepr.results.runs import GROUP_COLUMNS, normalise_status
    from pepr.results.scoring import validate_score_inputs

    if len(raw) == 0:
        raise PeprInputError(f"{source} has no rows: there is no sweep to replay")
    table = raw.copy()
    table.columns = [str(c) for c in table.columns]
    by = list(cols.by) or [c for c in GROUP_COLUMNS if c in table.columns]
    seed = cols.seed
    if not seed_given and seed not in table.columns:
        seed = "_seed"
        table[seed] = 0
    roles = {
        "--model": cols.model,
        "--seed": seed,
        "--epoch": cols.epoch,
        "--select-by": cols.select_by,
        "--performance": cols.performance,
        "--resource": cols.resource,
        **{f"--by {b}": b for b in by},
    }
    for flag, name in roles.items():
        if name not in table.columns:
            shown = ", ".join(list(table.columns)[:40])
            raise PeprInputError(
                f"{source} has no column '{name}' ({flag.split()[0]}); name the right one with "
                f"{flag.split()[0]} COL; its columns: {shown}"
            )
    named = [n for f, n in roles.items() if f not in ("--select-by", "--performance")]
    clash = sorted({n for n in named if named.count(n) > 1})
    if clash:
        raise PeprInputError(f"column '{clash[0]}' is given more than one role; each column has one role")
    if "status" in table.columns:
        table["status"] = normalise_status(table["status"], where=source)
        table = table[table["status"] == "ok"]
        if table.empty:
            raise PeprInputError(
                f"{source} has no successful run (every status is 'failed'): there is nothing to replay"
            )
    validate_score_inputs(table, cols.performance, [cols.resource], by)
    if cols.select_by != cols.performance:
        validate_score_inputs(table, cols.select_by, [cols.resource], by)
    epochs = pd.to_numeric(table[cols.epoch], errors="coerce")
    bad = table.index[epochs.isna() | (epochs < 1) | (epochs % 1 != 0)]
    if len(bad):
        raise PeprInputError(
            f"{source}: epoch column '{cols.epoch}' must hold whole numbers >= 1 (1 = the first epoch), "
            f"but row {bad[0]} holds {table.loc[bad[0], cols.epoch]!r}"
        )
    table[cols.epoch] = epochs.astype(int)
    key = [*by, cols.model, seed, cols.epoch]
    repeated = table.duplicated(subset=key)
    if repeated.any():
        row = table[repeated].iloc[0]
        raise PeprInputError(
            f"{source}: run {row[cols.model]!r} seed {row[seed]!r} has epoch {row[cols.epoch]} twice"
            + ("" if seed_given or seed != "_seed" else "; name the seed column with --seed COL")
            + (f" in group {', '.join(str(row[b]) for b in by)}" if by else "")
            + "; one row per run and epoch"
        )
    finals = table.groupby(by, dropna=False)[cols.epoch].max() if by else pd.Series([table[cols.epoch].max()])
    shortest = int(finals.min())
    if max(policy.rungs) >= shortest:
        raise PeprInputError(
            f"--rungs {','.join(map(str, policy.rungs))}: every rung must be below the final epoch, "
            f"but a group of {source} ends at epoch {shortest}; choose earlier rungs"
        )
    return table, Columns(
        by=tuple(by),
        model=cols.model,
        seed=seed,
        epoch=cols.epoch,
        select_by=cols.select_by,
        performance=cols.performance,
        resource=cols.resource,
    )


# --------------------------------------------------------------------------------------------
# The workflow's decision (rule select_rung): rung records in, the group's decision out
# --------------------------------------------------------------------------------------------


def rung_histories(records: Sequence[Mapping[str, Any]], select_by: str, resource: str) -> pd.DataFrame:
    """The history rows of a group's rung records as one table (model, seed, epoch, status,
    ``select_by``, ``resource``); a peak resource (no history column) is the record's peak so far
    on every row. A failed record adds one row with status "failed" (it drops out)."""
    import pandas as pd

    column = HISTORY_RESOURCE.get(resource)
    rows = []
    for record in records:
        base = {"model": record["model"], "seed": record["seed"], "status": record.get("status", "failed")}
        history = record.get("history") or []
        if base["status"] != "ok" or not history:
            rows.append({**base, "status": "failed", "epoch": record.get("rung", 0), select_by: None, resource: None})
            continue
        for row in history:
            spent = row.get(column) if column else record.get(resource)
            rows.append({**base, "epoch": int(row["epoch"]), select_by: row.get(select_by), resource: spent})
    return pd.DataFrame(rows, columns=["model", "seed", "status", "epoch", select_by, resource])


def decide_group(
    records: Sequence[Mapping[str, Any]],
    *,
    rung: int,
    epochs: int,
    settings: AdaptiveSettings,
    previous: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A group's decision at ``rung`` from its candidates' rung records (:func:`decide_rung`),
    as the JSON the workflow keeps (``results/adaptive/<group>/rungN.json``): the settings, one
    entry per candidate (``model``, ``seeds``, ``metric``, ``spent``, ``projected_resource``,
    ``projected_pepr``, ``trend_pepr``, ``decision``, ``reason``), the models ``kept`` and
    ``stopped``, ``failed`` (models with no run reaching the rung) and ``stopped_projections``
    (every candidate stopped so far with its projected resource where it stopped: the next
    rung normalises over them). ``previous`` is the group's decision at the rung before."""
    from pepr.results.runs import json_safe

    earlier = dict((previous or {}).get("stopped_projections") or {})
    history = rung_histories(records, settings.select_by, settings.resource)
    table = decide_rung(
        history,
        rung=rung,
        epochs=epochs,
        keep=settings.policy.keep,
        min_keep=settings.policy.min_keep,
        select_by=settings.select_by,
        resource=settings.resource,
        peak=is_peak(settings.resource),
        stopped=earlier,
        later_rung=any(r > rung for r in settings.policy.rungs),
    )
    candidates = [
        {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
        for row in table.to_dict(orient="records")
    ]
    kept = [c["model"] for c in candidates if c["decision"] == KEPT]
    stopped = [c["model"] for c in candidates if c["decision"] == STOPPED]
    failed = sorted({str(r["model"]) for r in records} - set(kept) - set(stopped))
    return json_safe(
        {
            "rung": rung,
            "epochs": epochs,
            "keep": settings.policy.keep,
            "min_keep": settings.policy.min_keep,
            "resource": settings.resource,
            "select_by": settings.select_by,
            "candidates": candidates,
            "kept": kept,
            "stopped": stopped,
            "failed": failed,
            "stopped_projections": stopped_projections(table, earlier),
        }
    )


def write_decision(
    rung_files: Sequence[str],
    out: str,
    *,
    rung: int,
    epochs: int,
    settings: AdaptiveSettings,
    previous: str | None = None,
) -> dict[str, Any]:
    """Rule select_rung: read the rung records (and ``previous``, the group's decision at the
    rung before, if any), decide (:func:`decide_group`), write ``out`` atomically."""
    from pepr.results.runs import atomic_write_json

    before = read_decision(previous) if previous else None
    decision = decide_group(
        [read_rung(path) for path in rung_files], rung=rung, epochs=epochs, settings=settings, previous=before
    )
    atomic_write_json(out, decision)
    return decision


def read_decision(path: str) -> dict[str, Any]:
    """A decision file written by :func:`write_decision`."""
    import json

    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def rung_summary(results_dir: str, in_progress: Sequence[str] = ()) -> list[str]:
    """``pepr status``'s lines on an adaptive sweep, one per rung: cells that reached it (rung
    records), rung jobs in progress (``in_progress``: outputs Snakemake marks incomplete), groups
    decided, candidates kept and stopped. Empty when the results hold no rung record. Standard
    library only (globs and small JSON files)."""
    import glob
    import os
    import re

    reached: dict[int, int] = {}
    for path in glob.glob(os.path.join(glob.escape(results_dir), "runs", "*", "*", "*", "*", "seed*", "rung*.json")):
        match = re.fullmatch(r"rung(\d+)\.json", os.path.basename(path))
        if match:
            reached[int(match.group(1))] = reached.get(int(match.group(1)), 0) + 1
    running: dict[int, int] = {}
    for output in in_progress:
        match = re.search(r"/seed\d+/rung(\d+)\.json$", output)
        if match:
            running[int(match.group(1))] = running.get(int(match.group(1)), 0) + 1
    decided: dict[int, list[dict[str, Any]]] = {}
    for path in glob.glob(os.path.join(glob.escape(results_dir), "adaptive", "*", "*", "*", "rung*.json")):
        try:
            decision = read_decision(path)
            decided.setdefault(int(decision["rung"]), []).append(decision)
        except (OSError, ValueError, KeyError, TypeError):
            continue
    lines = []
    for rung in sorted(set(reached) | set(running) | set(decided)):
        groups = decided.get(rung, [])
        kept = sum(len(d.get("kept", [])) for d in groups)
        stopped = sum(len(d.get("stopped", [])) for d in groups)
        lines.append(
            f"  rung {rung}: {reached.get(rung, 0)} cell(s) reached it, {running.get(rung, 0)} running; "
            f"{len(groups)} group(s) decided: {kept} candidate(s) kept, {stopped} stopped"
        )
    return lines


def expected_cost(
    estimate: pd.DataFrame, policy: Policy, column: str = "est_energy_kwh", overhead_column: str = "job_overhead_s"
) -> dict[str, float]:
    """An adaptive sweep's cost next to the full grid's, from ``pepr estimate``'s per-job table.

    Per group (dataset x init x fraction; pretraining jobs, init ``pretrain``, are not adaptive
    and count in full) every candidate trains to the first rung, then the kept count
    (:func:`kept_count`) of each rung trains on. Which models are kept is not known before the
    sweep, so ``expected`` assumes they cost the group's mean per epoch and ``at_most`` that
    the most expensive are kept. Per-job overheads (``job_overhead_s``, in seconds of the column's
    time) are left out of the scaling. Returns ``full``, ``expected`` and ``at_most`` totals of
    ``column`` over the jobs that calibrated.
    """
    import pandas as pd

    table = estimate[pd.to_numeric(estimate[column], errors="coerce").notna()]
    full = float(table[column].sum())
    expected = at_most = 0.0
    for (_, init, _), group in table.groupby(list(GROUP_COLUMNS), sort=False):
        epochs = int(group["epochs"].max())
        rungs = [r for r in policy.rungs if r < epochs]
        if init == "pretrain" or not rungs:
            expected += float(group[column].sum())
            at_most += float(group[column].sum())
            continue
        per_epoch = (group[column] / group["epochs"]).groupby(group["model"]).sum().sort_values(ascending=False)
        bounds = [0, *rungs, epochs]
        count = len(per_epoch)
        for start, end in pairwise(bounds):
            span = end - start
            expected += count / len(per_epoch) * float(per_epoch.sum()) * span
            at_most += float(per_epoch.iloc[:count].sum()) * span
            count = kept_count(count, policy.keep, policy.min_keep)
    return {"full": full, "expected": expected, "at_most": at_most}


def estimate_lines(estimate: pd.DataFrame, policy: Policy) -> list[str]:
    """``pepr estimate``'s lines on an adaptive sweep: expected and worst-case cost next to the full grid's."""
    lines = [
        f"ADAPTIVE SWEEP (rungs {', '.join(map(str, policy.rungs))}, keep {policy.keep:g}, min_keep {policy.min_keep}):"
    ]
    for column, unit in (("est_device_hours", "device-h"), ("est_energy_kwh", "kWh"), ("est_co2_kg", "kg CO2")):
        if column not in estimate.columns:
            continue
        cost = expected_cost(estimate, policy, column)
        share = cost["expected"] / cost["full"] if cost["full"] else float("nan")
        lines.append(
            f"  {unit:>8}: expected ~{cost['expected']:.3g} ({share:.0%} of the full grid's {cost['full']:.3g}), "
            f"at most {cost['at_most']:.3g} if the most expensive candidates are kept"
        )
    lines.append(
        "  (which candidates continue is decided from their measured numbers at each rung; stopped models get "
        "no final numbers)"
    )
    return lines
