"""How pepr reads a CPU training's working set, side by side: as shipped (glibc's malloc pinned by
:func:`pepr.train.measure.pin_allocator`, the working set read as the C heap's bytes in use),
glibc's malloc unpinned (``default``), and the pinned allocator read from the resident set
(``rss``: the RSS high-water mark, pepr's measure before it read the heap, and its fallback off
glibc 2.33). Training speed and how reproducible the working set is.

Each candidate trains the same cell (resnet18, 640 synthetic 64 px images, at fractions 1.0 and
0.1 by default) in its own cold process, as the workflow runs them. The candidates are
interleaved in a shuffled order on every repeat. Reported: per candidate the spread (max/min -
1) of ``peak_memory_mb`` over every run, all fractions together (the data size must not move
it: target <= 2% as shipped), and the medians of the paired ratios of the first candidate to
each other of the epochs' wall time (``train_time_s``) and process CPU time (target <= 1.03:
the measure must cost no training speed worth naming; on a shared machine read the CPU ratio at
``--threads 1``, which OpenMP spin-waiting does not inflate). ``--hog`` runs a CPU-bound process
beside them, as on a busy machine.

    .venv/bin/python bench/allocator_bench.py [--repeats 4] [--hog] [--model resnet18]
    .venv/bin/python bench/allocator_bench.py --threads 1 --epochs 2 --fractions 1.0   # speed
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchlib import REPO_ROOT, machine_line

#: The child: ``pepr train`` in-process, with the pinning left out for ``default`` and the working
#: set read from the resident set (the RSS fallback, pepr's CPU measure before it read the heap's
#: bytes in use) for ``rss``.
CHILD = """
import sys
from pepr.train import measure
if sys.argv[1] == "default":
    measure.pin_allocator = lambda: None
if sys.argv[1] == "rss":
    measure.heap_reader = lambda: None
from pepr.cli import main
sys.exit(main(sys.argv[2:]))
"""


def _cell(variant: str, out: Path, args: argparse.Namespace, fraction: float, env: dict[str, str]) -> dict:
    argv = [
        "train",
        "--model",
        args.model,
        "--dataset",
        "synthetic:size=64,n_train=640,n_val=32,n_test=32",
        "--fraction",
        str(fraction),
        "--epochs",
        str(args.epochs),
        "--threads",
        str(args.threads),
        "--out",
        str(out),
    ]
    result = subprocess.run(
        [sys.executable, "-c", CHILD, variant, *argv], env=env, cwd=REPO_ROOT, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise RuntimeError(f"{variant} cell failed:\n{result.stderr[-4000:]}")
    return json.loads((out / "metrics.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--fractions", type=float, nargs="+", default=[1.0, 0.1])
    parser.add_argument("--hog", action="store_true", help="a CPU-bound process beside the cells (a busy machine)")
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=("pinned", "default", "rss"),
        default=["pinned", "default", "rss"],
        help="pinned: as shipped; default: glibc's malloc as it comes; rss: pinned, working set read from the RSS",
    )
    args = parser.parse_args()

    env = {key: value for key, value in os.environ.items() if key not in ("SLURM_JOB_ID", "PEPR_WARM_KEY")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT / "src"), env.get("PYTHONPATH", "")]))
    env["PEPR_WARM"] = "0"  # one cold process per cell
    variants = tuple(args.variants)
    memory: dict[str, list[float]] = {name: [] for name in variants}
    times: dict[tuple[str, float], list[float]] = {}
    shares: list[float] = []
    order_rng = random.Random(0)
    hog = subprocess.Popen([sys.executable, "-c", "while 1: pass"]) if args.hog else None
    try:
        with tempfile.TemporaryDirectory(prefix="pepr-allocator-") as scratch:
            for repeat in range(args.repeats):
                order = list(variants)
                order_rng.shuffle(order)
                for variant in order:
                    for fraction in args.fractions:
                        out = Path(scratch) / f"{variant}-{fraction}-{repeat}"
                        metrics = _cell(variant, out, args, fraction, env)
                        memory[variant].append(metrics["peak_memory_mb"])
                        share = metrics.get("cpu_share") or float("nan")
                        times.setdefault((variant, fraction), []).append(
                            (metrics["train_time_s"], share * metrics["train_time_s"] * args.threads)
                        )
                        shares.append(share)
                        print(
                            f"  {variant:8s} fraction {fraction}: peak_memory_mb {metrics['peak_memory_mb']:.1f}, "
                            f"train_time_s {metrics['train_time_s']:.2f}, cpu_share {metrics.get('cpu_share') or 0:.2f}",
                            flush=True,
                        )
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()

    print(machine_line())
    print(
        f"{args.model}, {args.epochs} epoch(s), {args.threads} thread(s), fractions {args.fractions}, "
        f"{args.repeats} interleaved repeats" + (", CPU hog beside" if args.hog else "")
    )
    for variant in variants:
        values = memory[variant]
        print(
            f"  {variant:8s} peak_memory_mb: {min(values):.1f}-{max(values):.1f} MiB, "
            f"spread {100 * (max(values) / min(values) - 1):.1f}%  ({', '.join(f'{v:.0f}' for v in values)})"
        )
    for other in variants[1:]:
        for index, what in enumerate(("wall", "CPU")):  # CPU: the epochs' process CPU time (cpu_share x wall x threads)
            ratios = [
                first[index] / second[index]
                for fraction in args.fractions
                for first, second in zip(times[(variants[0], fraction)], times[(other, fraction)])
            ]
            print(
                f"training {what} time {variants[0]}/{other}: median of paired ratios {statistics.median(ratios):.3f}"
                " (target <= 1.03)"
            )
    print(f"median cpu_share of the cells: {statistics.median(shares):.2f} (~1 = quiet machine)")


if __name__ == "__main__":
    main()
