"""Aggregation benchmark: 24,000 metrics.json files -> runs.csv -> pepr.csv with pepr.results.aggregate.

Side by side in one run, interleaved:

* ``new``: :func:`pepr.results.aggregate.aggregate_to_csv` (runs.csv) then
  :func:`pepr.results.aggregate.score_to_csv` (pepr.csv), exactly what the workflow's rules call, with
  tableio's pyarrow CSV writer;
* ``old``: the same calls with tableio's CSV writer swapped back to pandas' ``DataFrame.to_csv``
  (the writer before issue 11; everything else identical);
* ``floor``: the unavoidable part, ``json.load`` of every file into one DataFrame written as CSV.

Prints the medians, the new/old ratio, each candidate's CPU share (CPU s / wall s: ~1.0 when it
had a core to itself) and the machine's CPU use during the runs (/proc/stat, all cores, so
other work on the machine shows). Checks that both writers' pepr.csv read back to the same
values. Target (issue 11): new <= 4 s for 24,000 runs.

    .venv/bin/python bench/aggregate_bench.py [--seeds 8] [--repeats 3] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pickle
import pstats
import statistics
import sys
import time
from pathlib import Path

from benchlib import cpu_share, interleave, machine_line, mark_ready, print_table, work_dir
from synthetic_runs import SyntheticGrid, write_synthetic_runs


def floor_aggregate(files: list[Path], output: Path) -> None:
    """Read every metrics.json with json.load and write one CSV: the cost any aggregation pays."""
    import pandas as pd

    records = []
    for path in files:
        with open(path, "rb") as handle:
            data = json.load(handle)
        records.append({k: v for k, v in data.items() if not isinstance(v, (dict, list))})
    pd.DataFrame.from_records(records).to_csv(output, index=False)


def pepr_aggregate(files: list[Path], pretrain: list[Path], runs_root: Path, out_dir: Path) -> None:
    """What the workflow's aggregate_runs and score_runs rules do."""
    from pepr.results.aggregate import aggregate_to_csv, score_to_csv

    aggregate_to_csv(files, out_dir / "runs.csv", pretrain_files=pretrain, runs_root=runs_root)
    score_to_csv(out_dir / "runs.csv", out_dir / "pepr.csv")


def pepr_stages(files: list[Path], pretrain: list[Path], runs_root: Path, out_dir: Path) -> list[tuple[str, float]]:
    """One pepr aggregation, timed stage by stage (where the time goes)."""
    from pepr.results.aggregate import collect_runs, score_runs
    from pepr.results.tableio import read_table, write_table

    stages = []
    start = time.perf_counter()
    frame = collect_runs(files, pretrain, runs_root)
    stages.append(("collect_runs (read + parse metrics.json)", time.perf_counter() - start))
    start = time.perf_counter()
    write_table(frame, out_dir / "runs.csv")
    stages.append(("write runs.csv (tableio.write_table, pyarrow)", time.perf_counter() - start))
    start = time.perf_counter()
    runs = read_table(out_dir / "runs.csv")
    stages.append(("read runs.csv", time.perf_counter() - start))
    start = time.perf_counter()
    scored = score_runs(runs)
    stages.append(("score_runs", time.perf_counter() - start))
    start = time.perf_counter()
    write_table(scored, out_dir / "pepr.csv")
    stages.append(("write pepr.csv (tableio.write_table, pyarrow)", time.perf_counter() - start))
    return stages


def pandas_write_csv(df, path) -> None:
    """The CSV writer tableio used before (pandas ``DataFrame.to_csv``), for the side-by-side run."""
    df.to_csv(path, index=False)


def with_writer(writer, call):
    """Run ``call`` with pepr.results.tableio's CSV writer swapped for ``writer`` (same atomic write, checks, layout)."""
    import pepr.results.tableio

    original = pepr.results.tableio.write_csv
    pepr.results.tableio.write_csv = writer
    try:
        call()
    finally:
        pepr.results.tableio.write_csv = original


def cpu_times() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, all cores, from /proc/stat."""
    import os

    with open("/proc/stat", encoding="ascii") as handle:
        fields = [float(v) for v in handle.readline().split()[1:]]
    ticks = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    return (sum(fields) - idle) / ticks, sum(fields) / ticks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=8, help="seeds per cell x model (8 -> 24,000 runs)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="print the top functions of one pepr aggregation")
    parser.add_argument("--target-s", type=float, default=4.0, help="target wall seconds for new (default 4)")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="where the synthetic runs are kept for reuse (default: $TMPDIR/pepr-bench)",
    )
    args = parser.parse_args()
    print(machine_line())
    grid = SyntheticGrid(seeds=tuple(range(args.seeds)))
    tmp_path, ready = work_dir("aggregate", stamp=repr(grid), base=args.workdir)
    if ready:
        with open(tmp_path / "runs.pickle", "rb") as handle:
            runs = pickle.load(handle)
        print(f"reusing {len(runs.metrics)} synthetic runs in {tmp_path}")
    else:
        start = time.perf_counter()
        runs = write_synthetic_runs(tmp_path / "results", grid)
        with open(tmp_path / "runs.pickle", "wb") as handle:
            pickle.dump(runs, handle)
        mark_ready(tmp_path, repr(grid))
        print(
            f"wrote {len(runs.metrics)} metrics.json (+{len(runs.pretrain_metrics)} pretraining) in "
            f"{time.perf_counter() - start:.1f} s to {tmp_path} (kept for the next run)"
        )
    # Import pandas and pepr once up front so that neither candidate pays the import.
    import pandas  # noqa: F401

    import pepr.results.aggregate  # noqa: F401

    out = tmp_path / "out"
    out.mkdir(exist_ok=True)

    def timed(call):
        def run() -> tuple[float, float]:
            wall0, cpu0 = time.perf_counter(), time.process_time()
            call()
            return time.perf_counter() - wall0, time.process_time() - cpu0

        return run

    old_dir = out / "old"
    old_dir.mkdir(exist_ok=True)
    candidates = {
        "new (pyarrow CSV writer)": timed(
            lambda: pepr_aggregate(runs.metrics, runs.pretrain_metrics, runs.runs_root, out)
        ),
        "old (pandas to_csv writer)": timed(
            lambda: with_writer(
                pandas_write_csv, lambda: pepr_aggregate(runs.metrics, runs.pretrain_metrics, runs.runs_root, old_dir)
            )
        ),
        "floor (json.load + to_csv)": timed(lambda: floor_aggregate(runs.metrics, out / "floor.csv")),
    }
    busy0, total0 = cpu_times()
    timings = interleave(candidates, args.repeats)
    busy1, total1 = cpu_times()
    import os

    import pandas as pd

    new_csv, old_csv = pd.read_csv(out / "pepr.csv"), pd.read_csv(old_dir / "pepr.csv")
    pd.testing.assert_frame_equal(new_csv, old_csv)  # same values on re-read, whichever writer
    pd.testing.assert_frame_equal(pd.read_csv(out / "runs.csv"), pd.read_csv(old_dir / "runs.csv"))
    new_t, old_t = timings["new (pyarrow CSV writer)"], timings["old (pandas to_csv writer)"]
    print_table(
        f"Aggregation of {len(runs.metrics):,} runs -> runs.csv + pepr.csv ({args.repeats} interleaved repeats, median)",
        [
            (
                label,
                f"{t.median:.2f}",
                t.spread,
                f"{statistics.median(t.cpu_s):.2f}",
                f"{cpu_share(t):.0%}",
                f"{t.median / old_t.median:.2f}",
            )
            for label, t in timings.items()
        ],
        ("candidate", "median wall s", "min-max s", "median CPU s", "CPU share", "wall vs old"),
    )
    machine_busy = (busy1 - busy0) / (total1 - total0) if total1 > total0 else float("nan")
    print(
        f"\nmachine CPU use during the runs: {machine_busy:.0%} of {os.cpu_count()} cores "
        f"(this benchmark alone would be ~{1 / os.cpu_count():.0%}); {machine_line()}"
    )
    print(
        f"new / old = {new_t.median / old_t.median:.2f}x; runs.csv and pepr.csv: {len(new_csv)} rows, identical values from "
        f"both writers; target new <= {args.target_s:g} s: {'MET' if new_t.median <= args.target_s else 'MISSED'} "
        f"({new_t.median:.2f} s wall, {statistics.median(new_t.cpu_s):.2f} s CPU)"
    )
    stages = pepr_stages(runs.metrics, runs.pretrain_metrics, runs.runs_root, out)
    total = sum(t for _, t in stages)
    print_table(
        "Where pepr's aggregation time goes (one extra run)",
        [(name, f"{t:.2f}", f"{t / total:.0%}") for name, t in stages],
        ("stage", "s", "share"),
    )
    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        pepr_aggregate(runs.metrics, runs.pretrain_metrics, runs.runs_root, out)
        profiler.disable()
        pstats.Stats(profiler, stream=sys.stdout).sort_stats("cumulative").print_stats(20)
    return 0


if __name__ == "__main__":
    sys.exit(main())
