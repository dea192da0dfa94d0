"""``pepr replay``: what an adaptive sweep would have done, replayed on a finished full sweep's histories."""

from __future__ import annotations

import argparse

HELP = "replay an adaptive sweep (rungs/keep) on a finished full sweep's per-epoch table"

DESCRIPTION = """\
Replay the adaptive policy (successive halving by projected PePR, the workflow's `adaptive:`
setting) on a finished full sweep's per-epoch table, to choose rungs/keep from your own earlier
sweeps or a published one before spending anything.

HISTORIES has one row per run and epoch (CSV or Parquet): group columns, model, seed, epoch, the
selection metric, the performance and the *cumulative* resource; the workflow's
results/histories.csv works as is. At each rung every candidate (a model; its seeds together)
gets a projected PePR from its selection metric and its resource so far scaled to the full epochs
(a peak, e.g. memory, is not scaled); the best --keep (at least --min-keep) continue.

Writes DIR/replay.csv, one row per group: the group columns, best_full (best PePR model of the
full sweep), recommended (the adaptive policy's), pepr_regret (PePR of best_full minus PePR of
recommended, both scored on the full sweep's final epoch), resource_share (what the policy spends
/ what the full grid spent), spent, full_spent; and prints the totals.

Everything is checked before DIR is created: a bad table, flag or column exits 2 with one line
and writes nothing.

example (the workflow's own histories; keep a third at epochs 1 and 3 of 10):
  pepr replay results/histories.csv --rungs 1,3 --keep 0.34 --out replay/
"""


def _rungs(text: str) -> tuple[int, ...]:
    """--rungs 1,3: epochs, comma-separated."""
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give epochs separated by commas, e.g. 1,3") from None
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare ``pepr replay``'s arguments."""
    from pepr.cli.args import positive_int

    parser.add_argument(
        "histories", metavar="HISTORIES", help="per-epoch table, .csv or .parquet (one row per run and epoch)"
    )
    parser.add_argument("--out", metavar="DIR", required=True, help="folder to write replay.csv into")
    parser.add_argument(
        "--by",
        metavar="COL",
        action="append",
        default=[],
        help="group column (repeatable); default: those of dataset, init, fraction present "
        "(none: the whole table is one group)",
    )
    parser.add_argument("--model", metavar="COL", default="model", help="model column (default: model)")
    parser.add_argument(
        "--seed",
        metavar="COL",
        default=None,
        help="seed column (default: seed when present; without one, each model has one run per group)",
    )
    parser.add_argument("--epoch", metavar="COL", default="epoch", help="epoch column, 1-based (default: epoch)")
    parser.add_argument(
        "--select-by",
        metavar="COL",
        default="val_accuracy",
        help="metric the policy selects by at a rung, in [0, 1] (default: val_accuracy)",
    )
    parser.add_argument(
        "--performance",
        metavar="COL",
        default="test_accuracy",
        help="performance the full sweep is scored by at its final epoch, in [0, 1] (default: test_accuracy)",
    )
    parser.add_argument(
        "--resource",
        metavar="COL",
        default="cumulative_energy_kwh",
        help="cumulative resource column (default: cumulative_energy_kwh); a column naming "
        "memory is read as a peak and not scaled",
    )
    parser.add_argument(
        "--rungs",
        metavar="E1,E2",
        type=_rungs,
        default=(1, 3),
        help="epochs at which candidates are compared, each below the final epoch (default: 1,3)",
    )
    parser.add_argument(
        "--keep",
        metavar="F",
        type=float,
        default=0.34,
        help="fraction of candidates kept at each rung, in (0, 1] (default: 0.34)",
    )
    parser.add_argument(
        "--min-keep", metavar="N", type=positive_int, default=2, help="never fewer candidates than this (default: 2)"
    )


def run(args: argparse.Namespace) -> int:
    """Check everything, replay, write DIR/replay.csv and print the totals."""
    import os

    from pepr.cli.args import check_out_folder
    from pepr.results.adaptive import (
        Columns,
        Policy,
        is_peak,
        prepare_histories,
        replay,
    )
    from pepr.results.tableio import read_table, write_table

    out = os.path.join(args.out, "replay.csv")
    check_out_folder(args.out)
    policy = Policy(rungs=tuple(args.rungs), keep=args.keep, min_keep=args.min_keep)
    table, cols = prepare_histories(
        read_table(args.histories),
        Columns(
            by=tuple(args.by),
            model=args.model,
            seed=args.seed or "seed",
            epoch=args.epoch,
            select_by=args.select_by,
            performance=args.performance,
            resource=args.resource,
        ),
        policy,
        seed_given=args.seed is not None,
        source=f"'{args.histories}'",
    )
    result = replay(table, policy, cols, peak=is_peak(cols.resource))
    write_table(result, out)
    spent, full = result["spent"].sum(), result["full_spent"].sum()
    same = int((result["best_full"] == result["recommended"]).sum())
    print(
        f"pepr replay: {len(result)} group(s); rungs {','.join(map(str, policy.rungs))}, keep {policy.keep:g}, "
        f"min_keep {policy.min_keep}: spent {spent:.4g} of the full grid's {full:.4g} {cols.resource} "
        f"(share {spent / full if full else float('nan'):.3f}); recommended the full grid's best in {same} of "
        f"{len(result)} group(s), largest PePR regret {result['pepr_regret'].max():.4f}; wrote {out}"
    )
    return 0
