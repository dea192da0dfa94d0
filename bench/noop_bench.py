"""No-op rerun benchmark: a finished sweep run again must schedule 0 jobs, quickly.

Prepares (once, kept for reuse in ``$TMPDIR/pepr-bench/noop``) a finished sweep of the tiny test
config (``.test/config.yaml``, ~1-3 minutes on 2 cores), or copies a finished one you name with
``--results-from`` (e.g. the demo's: ``--results-from . --config config/config.yaml``; only
``results/`` and ``.snakemake/`` metadata are copied, timestamps kept). Then, interleaved:

* ``pepr``: ``snakemake --cores 2`` on the finished sweep (a real run, not a dry run): it must
  print "Nothing to be done" and execute no job;
* ``bare``: the same on a finished bare workflow (bench/bare_workflow.py) with as many jobs.

Target (issue 6): <= 10 s for the demo.

    .venv/bin/python bench/noop_bench.py [--repeats 3] [--results-from DIR --config FILE]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

from bare_workflow import write_bare_workflow
from benchlib import REPO_ROOT, interleave, machine_line, mark_ready, print_table, run_command, venv_bin, work_dir

_TOTAL = re.compile(r"^total\s+(\d+)\s*$", re.MULTILINE)


def snakemake_cmd(workdir: Path, config: Path | None, *extra: str) -> list[str]:
    """``snakemake`` on pepr's workflow (or the bare one when ``config`` is None) in ``workdir``."""
    cmd = [venv_bin("snakemake"), "-d", str(workdir), "--cores", "2", *extra]
    if config is not None:
        cmd[1:1] = ["-s", str(REPO_ROOT / "Snakefile")]
        cmd += ["--configfile", str(config)]
    return cmd


def noop(workdir: Path, config: Path | None) -> tuple[float, float]:
    """One rerun of a finished workflow; RuntimeError unless it had nothing to do."""
    wall, cpu, output = run_command(snakemake_cmd(workdir, config), cwd=workdir)
    if "Nothing to be done" not in output or "Execute " in output:
        raise RuntimeError(f"the rerun was not a no-op in {workdir}:\n{output[-3000:]}")
    return wall, cpu


def planned_jobs(workdir: Path, config: Path | None) -> int:
    """Jobs of the whole workflow (``--forceall -n``), to size the bare baseline."""
    _, _, output = run_command(snakemake_cmd(workdir, config, "-n", "--forceall", "--quiet", "rules"), cwd=workdir)
    return int(_TOTAL.findall(output)[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--results-from",
        type=Path,
        default=None,
        help="folder holding a finished sweep's results/ and .snakemake/ (e.g. the repo after `make demo`)",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=REPO_ROOT / ".test" / "config.yaml",
        help="the config of that sweep (default: .test/config.yaml, run here if needed)",
    )
    parser.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: $TMPDIR/pepr-bench)")
    args = parser.parse_args()
    print(machine_line())
    config = args.config.resolve()
    label = "copied" if args.results_from else "tiny"
    base, ready = work_dir(f"noop-{label}", stamp=f"{config}:{args.results_from}", base=args.workdir)
    sweep = base / "sweep"
    if not ready:
        sweep.mkdir()
        if args.results_from is not None:
            source = args.results_from.resolve()
            for name in ("results", ".snakemake"):
                if not (source / name).is_dir():
                    raise SystemExit(f"{source / name} does not exist: run the sweep there first")
                shutil.copytree(
                    source / name, sweep / name, symlinks=True, ignore=shutil.ignore_patterns("locks", "incomplete")
                )
            print(f"copied the finished sweep from {source}")
        else:
            print(f"running the tiny sweep ({config.name}) once in {sweep} ...", flush=True)
            subprocess.run(snakemake_cmd(sweep, config, "--quiet"), cwd=sweep, check=True)
        mark_ready(base, f"{config}:{args.results_from}")
    jobs = planned_jobs(sweep, config)
    bare = base / "bare"
    if not (bare / "results" / "runs.csv").exists():
        write_bare_workflow(bare, jobs - 2)
        subprocess.run(snakemake_cmd(bare, None, "--quiet"), cwd=bare, check=True)
    timings = interleave({"pepr": lambda: noop(sweep, config), "bare": lambda: noop(bare, None)}, args.repeats)
    pepr_t, bare_t = timings["pepr"], timings["bare"]
    print_table(
        f"No-op rerun of a finished sweep ({config.name}, {jobs} jobs; {args.repeats} interleaved repeats, median)",
        [
            ("pepr", f"{pepr_t.median:.2f}", pepr_t.spread, f"{_median(pepr_t.cpu_s):.2f}"),
            ("bare, same job count", f"{bare_t.median:.2f}", bare_t.spread, f"{_median(bare_t.cpu_s):.2f}"),
        ],
        ("workflow", "median wall s", "min-max s", "median CPU s"),
    )
    print(
        f"\npepr / bare = {pepr_t.median / bare_t.median:.2f}x wall, "
        f"{_median(pepr_t.cpu_s) / _median(bare_t.cpu_s):.2f}x CPU; 0 jobs scheduled; target <= 10 s: "
        f"{'MET' if pepr_t.median <= 10 else 'MISSED'} ({pepr_t.median:.2f} s)"
    )
    return 0


def _median(values: list[float]) -> float:
    import statistics

    return statistics.median(values)


if __name__ == "__main__":
    sys.exit(main())
