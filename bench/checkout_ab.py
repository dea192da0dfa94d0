"""The same command in two checkouts of pepr, side by side: wall time and the CPU time of every
process it started, detached ones included.

For before/after measurements of a change that spans commits, e.g. the demo sweep or a slice of
the test suite before and after a start-up change::

    git worktree add --detach /tmp/before REV^ && git worktree add --detach /tmp/after REV
    .venv/bin/python bench/checkout_ab.py /tmp/before /tmp/after --repeats 1 \\
        --clean results --clean data --clean .snakemake -- snakemake --cores 2

Each checkout runs the command from its root with ``PYTHONPATH=<checkout>/src`` (so the shared
virtual environment runs that checkout's pepr) and this interpreter's ``bin`` first on ``PATH``;
runs alternate between the checkouts (ABAB...) so that a drift in the machine's load falls on
both. ``--clean`` folders are removed before every run (a sweep must start from nothing).

CPU time: this process makes itself a *child subreaper* (Linux ``prctl``), so a process the
command leaves behind (pepr's warm fork server detaches into its own session and outlives the
client that started it) is re-parented here and waited for; its CPU time is then in
``RUSAGE_CHILDREN`` with everything else's. Elsewhere detached processes are not counted (said
in the output). Medians over the repeats; the machine's load average is printed.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import machine_line, print_table

#: prctl option making this process the reaper of its orphaned descendants (linux/prctl.h).
PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Adopt orphaned descendants (Linux); False where the call is not available."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def reap_all() -> None:
    """Wait for every remaining descendant (adopted orphans included)."""
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_once(checkout: Path, command: list[str], clean: list[str]) -> tuple[float, float, int]:
    """Wall s, CPU s (all descendants) and exit status of ``command`` run in ``checkout``."""
    for folder in clean:
        shutil.rmtree(checkout / folder, ignore_errors=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = str(checkout / "src")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    cpu_before = children_cpu_s()
    started = time.perf_counter()
    status = subprocess.run(command, cwd=checkout, env=env, stdout=subprocess.DEVNULL, check=False).returncode
    wall = time.perf_counter() - started
    reap_all()  # detached servers end once their driver is gone; their CPU counts too
    return wall, children_cpu_s() - cpu_before, status


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("before", type=Path, help="checkout measured first (e.g. the commit before the change)")
    parser.add_argument("after", type=Path, help="checkout measured second")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--clean", action="append", default=[], help="folder (relative) removed before each run")
    argv = sys.argv[1:]
    if "--" not in argv or argv.index("--") == len(argv) - 1:
        parser.error("give the command after --")
    split = argv.index("--")
    args = parser.parse_args(argv[:split])
    command = argv[split + 1 :]
    for checkout in (args.before, args.after):
        if not (checkout / "src" / "pepr").is_dir():
            parser.error(f"{checkout} is not a pepr checkout (no src/pepr)")
    reaper = become_subreaper()
    print(machine_line())
    print(f"command: {' '.join(command)}; detached processes {'counted' if reaper else 'NOT counted (no prctl)'}")
    results: dict[str, list[tuple[float, float]]] = {"before": [], "after": []}
    for _ in range(args.repeats):
        for name, checkout in (("before", args.before), ("after", args.after)):
            wall, cpu, status = run_once(checkout.resolve(), command, args.clean)
            print(f"  {name}: wall {wall:.1f} s, CPU {cpu:.1f} s, exit {status}", flush=True)
            if status != 0:
                raise SystemExit(f"the command failed in {checkout} (exit {status})")
            results[name].append((wall, cpu))
    rows = []
    for name, checkout in (("before", args.before), ("after", args.after)):
        walls, cpus = zip(*results[name])
        rows.append((f"{name} ({checkout})", f"{statistics.median(walls):.1f}", f"{statistics.median(cpus):.1f}"))
    before_wall, before_cpu = (statistics.median(v) for v in zip(*results["before"]))
    after_wall, after_cpu = (statistics.median(v) for v in zip(*results["after"]))
    rows.append(("after / before", f"{after_wall / before_wall:.2f}", f"{after_cpu / before_cpu:.2f}"))
    print_table("Same command, two checkouts (medians)", rows, ("checkout", "wall s", "CPU s"))
    print(machine_line())


if __name__ == "__main__":
    main()
