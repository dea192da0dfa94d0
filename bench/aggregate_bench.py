"""Aggregation benchmark: 24,000 metrics.json files -> runs.csv -> pepr.csv with pepr.aggregate.

Side by side in one run, interleaved:

* ``pepr``: :func:`pepr.aggregate.aggregate_to_csv` (runs.csv) then
  :func:`pepr.aggregate.score_to_csv` (pepr.csv), exactly what the workflow's rules call;
* ``floor``: the unavoidable part, ``json.load`` of every file into one DataFrame written as CSV.

Prints both medians and their ratio. Target (issue 6): pepr <= 10 s for 24,000 runs here.

    .venv/bin/python bench/aggregate_bench.py [--runs-per-model-cell 8] [--repeats 3] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import statistics
import sys
import pickle
import time
from pathlib import Path

from benchlib import interleave, machine_line, mark_ready, print_table, work_dir
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
    from pepr.aggregate import aggregate_to_csv, score_to_csv

    aggregate_to_csv(files, out_dir / "runs.csv", pretrain_files=pretrain, runs_root=runs_root)
    score_to_csv(out_dir / "runs.csv", out_dir / "pepr.csv")


def pepr_stages(files: list[Path], pretrain: list[Path], runs_root: Path, out_dir: Path) -> list[tuple[str, float]]:
    """One pepr aggregation, timed stage by stage (where the time goes)."""
    from pepr.aggregate import collect_runs, score_runs
    from pepr.tableio import read_table, write_table

    stages = []
    start = time.perf_counter()
    frame = collect_runs(files, pretrain, runs_root)
    stages.append(("collect_runs (read + parse metrics.json)", time.perf_counter() - start))
    start = time.perf_counter()
    write_table(frame, out_dir / "runs.csv")
    stages.append(("write runs.csv (tableio.write_table)", time.perf_counter() - start))
    start = time.perf_counter()
    runs = read_table(out_dir / "runs.csv")
    stages.append(("read runs.csv", time.perf_counter() - start))
    start = time.perf_counter()
    scored = score_runs(runs)
    stages.append(("score_runs", time.perf_counter() - start))
    start = time.perf_counter()
    write_table(scored, out_dir / "pepr.csv")
    stages.append(("write pepr.csv (tableio.write_table)", time.perf_counter() - start))
    return stages


def pyarrow_write_table(df, path) -> None:
    """What-if: tableio.write_table with pyarrow's CSV writer (same atomic write, same values)."""
    import os
    import tempfile

    import pyarrow as pa
    import pyarrow.csv as pa_csv

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    pa_csv.write_csv(pa.Table.from_pandas(df, preserve_index=False), tmp)
    os.replace(tmp, path)


def with_pyarrow_writer(call):
    """Run ``call`` with pepr.tableio.write_table swapped for :func:`pyarrow_write_table`."""
    import pepr.tableio

    original = pepr.tableio.write_table
    pepr.tableio.write_table = pyarrow_write_table
    try:
        call()
    finally:
        pepr.tableio.write_table = original


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=8, help="seeds per cell x model (8 -> 24,000 runs)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="print the top functions of one pepr aggregation")
    parser.add_argument("--what-if-pyarrow", action="store_true",
                        help="also time pepr with tableio.write_table using pyarrow's CSV writer (a proposed fix)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where the synthetic runs are kept for reuse (default: $TMPDIR/pepr-bench)")
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
        print(f"wrote {len(runs.metrics)} metrics.json (+{len(runs.pretrain_metrics)} pretraining) in "
              f"{time.perf_counter() - start:.1f} s to {tmp_path} (kept for the next run)")
    # Import pandas and pepr once up front so that neither candidate pays the import.
    import pandas  # noqa: F401

    import pepr.aggregate  # noqa: F401

    out = tmp_path / "out"
    out.mkdir(exist_ok=True)

    def timed(call):
        def run() -> tuple[float, float]:
            wall0, cpu0 = time.perf_counter(), time.process_time()
            call()
            return time.perf_counter() - wall0, time.process_time() - cpu0
        return run

    candidates = {
        "pepr": timed(lambda: pepr_aggregate(runs.metrics, runs.pretrain_metrics, runs.runs_root, out)),
        "floor": timed(lambda: floor_aggregate(runs.metrics, out / "floor.csv")),
    }
    if args.what_if_pyarrow:
        what_if = out / "what-if"
        what_if.mkdir(exist_ok=True)
        candidates["pepr, pyarrow CSV writer"] = timed(lambda: with_pyarrow_writer(
            lambda: pepr_aggregate(runs.metrics, runs.pretrain_metrics, runs.runs_root, what_if)))
    timings = interleave(candidates, args.repeats)
    import pandas as pd

    n_rows = len(pd.read_csv(out / "pepr.csv"))
    pepr_t, floor_t = timings["pepr"], timings["floor"]
    print_table(
        f"Aggregation of {len(runs.metrics):,} runs ({args.repeats} interleaved repeats, median)",
        [
            (label, f"{t.median:.2f}", t.spread, f"{statistics.median(t.cpu_s):.2f}", f"{t.median / pepr_t.median:.2f}")
            for label, t in timings.items()
        ],
        ("candidate", "median wall s", "min-max s", "median CPU s", "wall vs pepr"),
    )
    ratio = pepr_t.median / floor_t.median
    pepr_cpu = statistics.median(pepr_t.cpu_s)
    print(f"\npepr / floor = {ratio:.2f}x; pepr.csv rows: {n_rows}; target pepr <= 10 s: wall "
          f"{'MET' if pepr_t.median <= 10 else 'MISSED'} ({pepr_t.median:.2f} s), CPU "
          f"{'MET' if pepr_cpu <= 10 else 'MISSED'} ({pepr_cpu:.2f} s)")
    stages = pepr_stages(runs.metrics, runs.pretrain_metrics, runs.runs_root, out)
    total = sum(t for _, t in stages)
    print_table("Where pepr's aggregation time goes (one extra run)",
                [(name, f"{t:.2f}", f"{t / total:.0%}") for name, t in stages], ("stage", "s", "share"))
    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        pepr_aggregate(runs.metrics, runs.pretrain_metrics, runs.runs_root, out)
        profiler.disable()
        pstats.Stats(profiler, stream=sys.stdout).sort_stats("cumulative").print_stats(20)
    return 0


if __name__ == "__main__":
    sys.exit(main())
