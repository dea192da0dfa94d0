"""``pepr score``: add PePR columns to a results table (CSV or Parquet)."""

from __future__ import annotations

import argparse
import sys

HELP = "add PePR scores to a results table"

DESCRIPTION = """\
Add PePR scores to a results table (CSV or Parquet).

For each run i of a cell (the rows sharing the --by columns) and each --resource column X:

    X_norm_i = (X_i - min X) / (max X - min X)    over the cell's rows
    pepr_X_i = P_i / (1 + X_norm_i)               P = the --performance column, in [0, 1]

The output is the input table, rows and columns unchanged and in the same order, plus the
columns X_norm and pepr_X for each resource. A table with a `status` column (pepr's own
results/runs.csv) is scored over its rows whose status is "ok" (any case); the other rows (failed
runs, whose performance is empty) keep empty scores, as in results/pepr.csv. Without a `status`
column every row is scored, so a missing value is an error. The cheapest run of a cell scores exactly P, the
most expensive P/2. A cell whose resource is constant (all equal, or a single run) gets
X_norm = 0 for all its runs. Without --by the whole table is one cell.

Bad input is reported on stderr in one line with exit code 2, and no output file is written
then: an unknown, repeated or list-valued column, missing values, performance outside [0, 1]
or boolean, negative, non-numeric, boolean or date resources, an input column that a generated
column would overwrite (e.g. energy_kwh_norm), an empty or unreadable table, an output that is a
folder, in a read-only folder or on a full disk (checked before the table is read).

example:
  pepr score results/runs.csv --performance test_accuracy \\
      --resource energy_kwh --resource train_time_s --by dataset --by init --by fraction \\
      -o results/pepr.csv
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare ``pepr score``'s arguments."""
    parser.add_argument("table", metavar="TABLE", help="input table, .csv or .parquet")
    parser.add_argument(
        "--performance",
        metavar="COL",
        required=True,
        help="column holding the performance P, a number in [0, 1] (e.g. test_accuracy)",
    )
    parser.add_argument(
        "--resource",
        metavar="COL",
        action="append",
        default=[],
        help="resource column to score against (non-negative numbers, e.g. energy_kwh); "
        "repeat for several: each gets X_norm and pepr_X columns",
    )
    parser.add_argument(
        "--by",
        metavar="COL",
        action="append",
        default=[],
        help="column defining the experiment cell within which resources are normalised; "
        "repeat for several (e.g. --by dataset --by init --by fraction); default: whole table",
    )
    parser.add_argument(
        "-o",
        "--output",
        metavar="OUT",
        default=None,
        help="write the scored table here (.csv or .parquet, chosen by extension); default: CSV on stdout",
    )


def run(args: argparse.Namespace) -> int:
    """Score the table named on the command line; raise PeprInputError on bad input."""
    from pepr.errors import PeprInputError
    from pepr.results.scoring import score
    from pepr.results.tableio import check_writable, read_table, write_table

    if not args.resource:
        raise PeprInputError("no --resource given: name at least one resource column, e.g. --resource energy_kwh")
    if args.output is not None:
        check_writable(args.output, "--output")  # a wrong or read-only output fails before any work
    table = read_table(args.table)
    if "status" in table.columns:
        scored = _score_ok_rows(table, args)
    else:
        scored = score(table, performance=args.performance, resources=args.resource, by=args.by)
    if args.output is None:
        try:
            scored.to_csv(sys.stdout, index=False)
            sys.stdout.flush()
        except OSError as exc:
            raise PeprInputError(
                f"cannot write the scored table to standard output ({exc.strerror or exc}); "
                "free some space or write to a file with -o OUT"
            ) from None
    else:
        write_table(scored, args.output)
    return 0


def _score_ok_rows(table, args: argparse.Namespace):
    """Score the rows whose ``status`` is "ok"; the others keep empty scores (as pepr.csv does).

    Every named column must still exist (checked on the whole table, so a typo is reported even
    when no row is ok), and a table without any ok row is an error rather than an all-empty result.
    """
    from pepr.errors import PeprInputError
    from pepr.results.aggregate import score_runs
    from pepr.results.runs import normalise_status

    unknown = [c for c in dict.fromkeys([args.performance, *args.resource, *args.by]) if c not in table.columns]
    if unknown:
        raise PeprInputError(
            f"unknown column(s) {', '.join(repr(c) for c in unknown)}; "
            f"available columns: {', '.join(map(str, table.columns))}"
        )
    status = normalise_status(table["status"], where=f"{args.table}: column 'status'")
    ok = int((status == "ok").sum())
    if ok == 0:
        raise PeprInputError(
            f"{args.table}: no row has status 'ok' ({len(table)} rows, all failed): there is nothing to score"
        )
    scored = score_runs(table, performance=args.performance, resources=args.resource, amortised=(), by=args.by)
    if ok < len(table):
        print(
            f"pepr score: scored the {ok} rows with status 'ok'; the {len(table) - ok} other rows "
            "(failed runs) keep empty scores",
            file=sys.stderr,
        )
    return scored
