"""``pepr report``: a PePR report (scores, tables, figures, summary, HTML page) from any runs table."""

from __future__ import annotations

import argparse
import os

from pepr.columns import GROUP_COLUMNS, REPORT_RESOURCES, SCORED_RESOURCES

HELP = "report on any runs table: pepr.csv, tables, figures, summary.md, report.html"

DESCRIPTION = """\
Build a PePR report from any runs table (CSV or Parquet): one row per run, with a model
column, a performance in [0, 1] and one or more resource columns (energy, time, ...).

Writes, under --out DIR:
  DIR/pepr.csv            the table plus X_norm and pepr_X per resource (scored within groups)
  DIR/summary.md          the decision per group first, the sweep's footprint, then the evidence
  DIR/tables/*.csv        decision (with contenders), intervals, footprint, measurement_checks,
                          excluded_runs, verdict_changes, top_k, small_vs_large, size_trend,
                          paired_init, paired_fraction, data_need, seed_ci, rank_ci, ...
  DIR/figures/*           PNG/PDF figures
  DIR/report.html         one self-contained page (opens offline)

Group columns (--by) are the normalisation groups: PePR compares runs only within one. The
names init and fraction carry meaning (pretrained vs scratch, data fractions): --rename your
columns to them to get those comparisons. A status column (ok/failed, any case) is optional:
failed runs are listed and left out of the scores. Without a parameter column the size-based
analyses are skipped and the summary says so.

Everything is checked before DIR is created: a bad table, flag or column exits 2 with one
line and writes nothing.

example (a table that is not pepr's own: name, acc, kwh, n_params, task):
  pepr report results.csv --model name --performance acc --resource kwh \\
      --params n_params --by task --out report/
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare ``pepr report``'s arguments."""
    parser.add_argument("table", metavar="TABLE", help="runs table, .csv or .parquet (one row per run)")
    parser.add_argument("--out", metavar="DIR", required=True, help="folder to write the report into")
    parser.add_argument(
        "--performance",
        metavar="COL",
        default=None,
        help="performance column, values in [0, 1], or COL:%% for percentages (default: test_accuracy)",
    )
    parser.add_argument(
        "--resource",
        metavar="COL",
        action="append",
        default=[],
        help="resource column, COL or COL:UNIT (kWh, Wh, J, kg, g, s, min, h, MB, ...: totals are "
        "converted to kWh / kg CO2 / hours) (repeatable; the first is the headline); default: the workflow's "
        f"resources present ({', '.join(SCORED_RESOURCES)} and amortised forms); also "
        f"{', '.join(f'{r.column} ({r.label})' for r in REPORT_RESOURCES)}",
    )
    parser.add_argument(
        "--combine",
        metavar="COL[:W],COL[:W]",
        default=None,
        help="a combined PePR over scored resources: R = sum w_j R_j / sum w_j of their normalised "
        "values (weights default 1), PePR = P / (1 + R), e.g. --combine energy_kwh:2,train_time_s:1 "
        "(default: report.combine, none)",
    )
    parser.add_argument(
        "--by",
        metavar="COL",
        action="append",
        default=[],
        help="group column PePR is normalised within (repeatable); default: those of "
        f"{', '.join(GROUP_COLUMNS)} present (none: the whole table is one group)",
    )
    parser.add_argument("--model", metavar="COL", default=None, help="model column (default: model)")
    parser.add_argument(
        "--params",
        metavar="COL",
        default=None,
        help="parameter-count column (default: params when present; without one, size-based analyses are skipped)",
    )
    parser.add_argument(
        "--seed",
        metavar="COL",
        default=None,
        help="seed column (default: seed when present; without one, each model has one run per group)",
    )
    parser.add_argument(
        "--histories",
        metavar="TABLE",
        default=None,
        help="optional per-epoch table (group columns, model, seed, epoch, test_accuracy, "
        "cumulative_energy_kwh) for the epoch curves",
    )
    parser.add_argument(
        "--n-test",
        metavar="COL",
        default=None,
        help="column of test-set sizes: binomial 95%% intervals where a model has one run and no "
        "test predictions (default: n_test when present)",
    )
    parser.add_argument(
        "--runs",
        metavar="DIR",
        default=None,
        help="the workflow's results/runs folder: the runs' test_predictions.npz give paired "
        "bootstrap intervals (the table needs dataset, init, fraction, model, seed)",
    )
    parser.add_argument(
        "--bootstrap",
        metavar="N",
        type=int,
        default=None,
        help="bootstrap resamples for intervals and rank intervals (default 2000, at least 100)",
    )
    parser.add_argument(
        "--margin",
        metavar="M",
        type=float,
        default=None,
        help="non-inferiority margin of performance, e.g. 0.02 (default: report.equivalence_margin, 0.02)",
    )
    parser.add_argument(
        "--exclude-flagged",
        action="store_true",
        help="score and report without the runs a measurement check flags as harmful (copied, "
        "duplicated, contended, implausible); the summary says how many and which verdicts changed",
    )
    parser.add_argument(
        "--rename",
        metavar="OLD=NEW",
        action="append",
        default=[],
        help="rename a column before anything else (repeatable), e.g. --rename acc=test_accuracy",
    )


def _renames(values: list[str]) -> tuple[tuple[str, str], ...]:
    from pepr.errors import PeprInputError

    pairs = []
    for value in values:
        old, sep, new = value.partition("=")
        if not sep or not old.strip() or not new.strip():
            raise PeprInputError(f"--rename {value!r}: write OLD=NEW, e.g. --rename acc=test_accuracy")
        pairs.append((old.strip(), new.strip()))
    return tuple(pairs)


def _check_out(out: str) -> None:
    """The output folder must be creatable and writable, and hold no other files than an earlier
    report; checked without creating it."""
    from pathlib import Path

    from pepr.cli.args import check_out_folder
    from pepr.errors import PeprInputError

    path = Path(out)
    # A folder of other files is not ours to write into (a previous report is: it is rebuilt).
    if path.is_dir() and any(path.iterdir()) and not (path / "summary.md").is_file():
        raise PeprInputError(
            f"--out '{out}' already holds other files; choose a new or empty folder "
            "(a folder with an earlier pepr report is rebuilt in place)"
        )
    check_out_folder(out)


def run(args: argparse.Namespace) -> int:
    """Check everything, then write the report; raise PeprInputError on bad input."""
    os.environ.setdefault("MPLBACKEND", "Agg")  # headless: never look for a display
    from pepr.errors import PeprInputError
    from pepr.report.build import write_report
    from pepr.report.config import ReportConfig
    from pepr.report.data import TableSpec

    _check_out(args.out)
    from pepr.report.units import split_unit

    performance, percent = split_unit(args.performance, "--performance") if args.performance else (None, None)
    resources = [split_unit(value, "--resource") for value in args.resource]
    spec = TableSpec(
        performance=performance,
        resources=tuple(c for c, _ in resources),
        by=tuple(args.by),
        model=args.model,
        params=args.params,
        seed=args.seed,
        rename=_renames(args.rename),
    )
    settings = {
        "bootstrap_resamples": args.bootstrap,
        "equivalence_margin": args.margin,
        "combine": args.combine,
        "exclude_flagged": True if args.exclude_flagged else None,
    }
    try:
        cfg = ReportConfig(**{k: v for k, v in settings.items() if v is not None})
    except PeprInputError as exc:  # named as the flags, not the config keys
        raise PeprInputError(
            str(exc)
            .replace("report.bootstrap_resamples", "--bootstrap")
            .replace("report.equivalence_margin", "--margin")
            .replace("report.combine", "--combine")
        ) from None
    paths = write_report(
        args.table,
        args.out,
        spec,
        cfg,
        histories=args.histories,
        n_test=args.n_test,
        runs_root=args.runs,
        units={c: u for c, u in resources if u is not None},
        performance_percent=percent == "%",
    )
    print(
        f"pepr report: wrote {len(paths)} files under {args.out} (start with {os.path.join(args.out, 'summary.md')} "
        f"or {os.path.join(args.out, 'report.html')})"
    )
    return 0
