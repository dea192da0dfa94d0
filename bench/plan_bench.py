"""Planning benchmark: ``snakemake -n`` on pepr's workflow vs a bare workflow with as many jobs.

For each grid (the paper config, ~1,200 jobs with its 1,040 training cells; and a generated
~25,000-job variant of it: every dataset x init crossed with 4 data fractions x 8 seeds), in one
run:

1. a cold dry run of pepr's workflow in a fresh working directory (config validation, timm
   catalogue, dataset checks: what the first ``snakemake -n`` of a new sweep pays);
2. warm dry runs of pepr's workflow (validated config cached in ``.snakemake/pepr``), interleaved
   with dry runs of a bare workflow (bench/bare_workflow.py) planning the same number of jobs.

Both are run as ``snakemake -n --quiet rules -c1`` in their own working directory; wall and CPU
seconds (user + sys of the child) are recorded. CPU time is the steadier figure on a shared
machine; the CPU share (CPU s per wall s of the candidates) and the load average at that moment
are printed with the ratios. Target (issue 11): pepr <= 1.15x bare at both sizes.

    .venv/bin/python bench/plan_bench.py [--grids paper 25k] [--repeats 3] [--profile] [--before REV]

``--before REV`` adds a third candidate: pepr's workflow (Snakefile, rules, scripts) of git
revision REV, same config, same working directory state, so a change of the workflow is
measured side by side with the current one. The paper config reads
``npz:data/lidc.npz`` (not redistributable): a small stand-in file is written in the working
directory, as ``tests/test_study_configs.py`` does.

``--profile`` additionally runs one warm pepr dry run under cProfile and prints the top
functions (where Snakemake spends the time).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

from bare_workflow import write_bare_workflow
from benchlib import (
    DRY_RUN,
    REPO_ROOT,
    cpu_share,
    interleave,
    machine_line,
    print_table,
    run_command,
    scaled_config,
    venv_bin,
    work_dir,
    workflow_at,
    workflow_command,
    write_stand_in_npz,
)

#: Issue 11's target: pepr plans at most this many times bare Snakemake's CPU time.
TARGET = 1.15
_TOTAL = re.compile(r"^total\s+(\d+)\s*$", re.MULTILINE)


def job_count(output: str) -> int:
    """Total jobs from a dry run's 'Job stats' table; RuntimeError when there is none."""
    match = _TOTAL.findall(output)
    if not match:
        raise RuntimeError(f"no 'total N' line in the dry run's output:\n{output[-2000:]}")
    return int(match[-1])


def pepr_dry_run(config: Path, workdir: Path, snakefile: Path = REPO_ROOT / "Snakefile") -> tuple[float, float, str]:
    """One ``snakemake -n`` of pepr's workflow (``snakefile``) on ``config`` in ``workdir``."""
    return run_command(workflow_command(config, workdir, *DRY_RUN, snakefile=snakefile), cwd=workdir)


def bare_dry_run(workdir: Path) -> tuple[float, float, str]:
    """One ``snakemake -n`` of the bare workflow in ``workdir``."""
    return run_command([venv_bin("snakemake"), *DRY_RUN], cwd=workdir)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grids", nargs="+", default=["paper", "25k"], choices=["paper", "25k"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--paper-config", type=Path, default=REPO_ROOT / "config" / "paper.yaml")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument(
        "--ladder",
        action="store_true",
        help="also time bare workflows with pepr's Snakemake features (2 outputs + log + input/params "
        "functions + resources on a shell: rule, then the same with script:), to attribute pepr's extra "
        "time to Snakemake features or to pepr's code",
    )
    parser.add_argument(
        "--before",
        metavar="REV",
        default=None,
        help="also time pepr's workflow with the train rules of this git revision",
    )
    parser.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: $TMPDIR/pepr-bench)")
    args = parser.parse_args()
    print(machine_line())
    rows = []
    ladder_rows = []
    summary = []
    for grid in args.grids:
        base, _ = work_dir(f"plan-{grid}", stamp=str(time.time()), base=args.workdir)  # always fresh
        if grid == "paper":
            config = args.paper_config.resolve()
        else:
            config = scaled_config(args.paper_config, [1.0, 0.5, 0.25, 0.1], list(range(8)), base / "config-25k.yaml")
        pepr_dir = base / "pepr"
        pepr_dir.mkdir()
        write_stand_in_npz(pepr_dir, config)
        cold_wall, cold_cpu, output = pepr_dry_run(config, pepr_dir)
        jobs = job_count(output)
        bare_dir = base / "bare"
        write_bare_workflow(bare_dir, jobs - 2)  # + aggregate + all = the same total
        _, _, bare_output = bare_dry_run(bare_dir)
        if job_count(bare_output) != jobs:
            raise RuntimeError(f"bare workflow plans {job_count(bare_output)} jobs, pepr {jobs}")
        candidates = {"pepr": lambda: pepr_dry_run(config, pepr_dir)[:2], "bare": lambda: bare_dry_run(bare_dir)[:2]}
        if args.before:
            # same working directory (validated-config cache shared), only the train rules differ
            old_snakefile = workflow_at(args.before, base / f"workflow-{args.before}")
            if job_count(pepr_dry_run(config, pepr_dir, old_snakefile)[2]) != jobs:
                raise RuntimeError(f"the workflow at {args.before} plans another number of jobs")
            candidates[f"pepr@{args.before}"] = lambda: pepr_dry_run(config, pepr_dir, old_snakefile)[:2]
        if args.ladder:
            # bare+rich: pepr's train rule features (2 outputs, log, input/params functions,
            # resources) on a shell: rule, as pepr's train rules are; +script: as they were
            for label, features in (("bare+rich", dict(rich=True)), ("bare+script+rich", dict(script=True, rich=True))):
                directory = base / label
                write_bare_workflow(directory, jobs - 2, **features)
                candidates[label] = (lambda d: lambda: bare_dry_run(d)[:2])(directory)
        load_before = os.getloadavg()[0]
        timings = interleave(candidates, args.repeats)
        load_after = os.getloadavg()[0]
        pepr_t, bare_t = timings["pepr"], timings["bare"]
        for label in [name for name in candidates if name.startswith("bare+")]:
            ladder_t = timings[label]
            ladder_rows.append(
                (
                    grid,
                    label,
                    f"{ladder_t.median:.1f} / {_median(ladder_t.cpu_s):.1f}",
                    f"{_median(ladder_t.cpu_s) / _median(bare_t.cpu_s):.2f}",
                    f"{_median(pepr_t.cpu_s) / _median(ladder_t.cpu_s):.2f}",
                )
            )
        cpu_ratio = _median(pepr_t.cpu_s) / _median(bare_t.cpu_s)
        wall_ratio = pepr_t.median / bare_t.median
        share = cpu_share(pepr_t), cpu_share(bare_t)
        rows.append(
            (
                grid,
                f"{jobs:,}",
                f"{cold_wall:.1f} / {cold_cpu:.1f}",
                f"{pepr_t.median:.1f} / {_median(pepr_t.cpu_s):.1f}",
                f"{bare_t.median:.1f} / {_median(bare_t.cpu_s):.1f}",
                f"{wall_ratio:.2f}",
                f"{cpu_ratio:.2f}",
                f"{share[0]:.2f} / {share[1]:.2f}",
                f"{load_before:.2f} -> {load_after:.2f}",
            )
        )
        summary.append(
            f"{grid}: pepr / bare = {cpu_ratio:.2f}x CPU, {wall_ratio:.2f}x wall "
            f"(target <= {TARGET}x: {'MET' if cpu_ratio <= TARGET else 'MISSED'}); CPU share "
            f"pepr {share[0]:.2f}, bare {share[1]:.2f}; load average {load_before:.2f} -> {load_after:.2f}"
        )
        for label in [name for name in candidates if name.startswith("pepr@")]:
            before_cpu = _median(timings[label].cpu_s)
            summary.append(
                f"{grid}: {label} / bare = {before_cpu / _median(bare_t.cpu_s):.2f}x CPU; "
                f"pepr / {label} = {_median(pepr_t.cpu_s) / before_cpu:.2f}x CPU"
            )
        if args.profile:
            _profile(config, pepr_dir)
    print_table(
        f"snakemake -n ({args.repeats} interleaved repeats, median; wall s / CPU s)",
        rows,
        (
            "grid",
            "jobs",
            "pepr cold",
            "pepr warm",
            "bare",
            "ratio wall",
            "ratio CPU",
            "CPU share pepr / bare",
            "load avg",
        ),
    )
    if ladder_rows:
        print_table(
            "Attribution: bare workflows with pepr's Snakemake features (wall s / CPU s; CPU ratios)",
            ladder_rows,
            ("grid", "workflow", "time", "vs bare", "pepr vs this"),
        )
    print()
    for line in summary:
        print(line)
    return 0


def _median(values: list[float]) -> float:
    import statistics

    return statistics.median(values)


def _profile(config: Path, workdir: Path) -> None:
    """One warm pepr dry run under cProfile: the 25 functions with the most cumulative time."""
    prof = workdir.parent / "plan.prof"
    profiled = [sys.executable, "-m", "cProfile", "-o", str(prof), "-m", "snakemake"]
    run_command(workflow_command(config, workdir, *DRY_RUN, launcher=profiled), cwd=workdir)
    import pstats

    print(f"\n#### cProfile of one warm pepr dry run ({config.name})\n")
    pstats.Stats(str(prof), stream=sys.stdout).sort_stats("cumulative").print_stats(25)


if __name__ == "__main__":
    sys.exit(main())
