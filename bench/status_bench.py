"""`pepr status` on a 25,000-cell sweep, half finished: cold (no cache) vs warm (stat-only) vs
the floor (json.load of every finished metrics.json, nothing else).

Builds, in a temporary folder, a sweep config of 250 models x 2 inits x 5 fractions x 10 seeds
= 25,000 cells (no pretraining), and its results folder as the workflow leaves it mid-sweep:
60% of the cells with a realistic metrics.json (5% of them failed records), 40 running
(Snakemake incomplete markers + a lock), the rest not started. Then, interleaved in one run:

* ``cold``: ``pepr status`` as a fresh process with its cache deleted first (reads every
  metrics.json);
* ``warm``: ``pepr status`` as a fresh process with the cache of the previous call (a stat per
  cell, reads only what changed);
* ``floor``: a fresh process that only ``json.load``s every present metrics.json.

Prints medians, ratios and the CPU share of each (CPU s / wall s).

    .venv/bin/python bench/status_bench.py [--models 250] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import REPO_ROOT, cpu_share, interleave, machine_line, print_table, run_command  # noqa: E402

INITS = ("scratch", "imagenet")
FRACTIONS = (1.0, 0.5, 0.25, 0.1, 0.05)
SEEDS = 10


def build_sweep(root: Path, n_models: int) -> int:
    """Write config.yaml and the half-finished results folder; return the number of cells."""
    sys.path.insert(0, str(REPO_ROOT / "src"))
    from pepr.results.status import incomplete_marker

    models = [f"model{i:03d}" for i in range(n_models)]
    (root / "config.yaml").write_text(
        "models: [" + ", ".join(models) + "]\n"
        "datasets: [pneumoniamnist]\n"
        f"inits: [{', '.join(INITS)}]\n"
        f"fractions: [{', '.join(map(str, FRACTIONS))}]\n"
        f"seeds: [{', '.join(str(s) for s in range(SEEDS))}]\n"
    )
    cells = [(m, i, f, s) for m in models for i in INITS for f in FRACTIONS for s in range(SEEDS)]
    (root / ".snakemake" / "locks").mkdir(parents=True)
    (root / ".snakemake" / "locks" / "0.output.lock").write_text("results/x\n")
    finished = int(len(cells) * 0.6)
    for index, (model, init, fraction, seed) in enumerate(cells):
        folder = root / "results" / "runs" / "pneumoniamnist" / init / repr(fraction) / model / f"seed{seed}"
        if index < finished:
            folder.mkdir(parents=True)
            failed = index % 20 == 0
            record = {
                "status": "failed" if failed else "ok",
                "reason": "Kernel size can't be greater than actual input size" if failed else "",
                "model": model,
                "dataset": "pneumoniamnist",
                "init": init,
                "fraction": fraction,
                "seed": seed,
                "epochs": 10,
                "params": 1_000_000 + index,
                "test_accuracy": None if failed else 0.8,
                "test_balanced_accuracy": None if failed else 0.75,
                "test_auc": None if failed else 0.9,
                "test_f1": None if failed else 0.7,
                "energy_kwh": None if failed else 0.01,
                "cpu_energy_kwh": 0.008,
                "gpu_energy_kwh": 0.0,
                "ram_energy_kwh": 0.002,
                "co2_kg": None if failed else 0.0015,
                "energy_method": "measured: NVML + RAPL",
                "train_time_s": None if failed else 120.0 + index % 7,
                "peak_memory_mb": 900.0,
                "config": {"model": model, "epochs": 10, "batch_size": 32, "lr": 0.0005},
                "versions": {"torch": "2.14.1", "timm": "1.0.22", "pepr": "0.1.0"},
                "energy_per_epoch": [0.001] * 10,
            }
            (folder / "metrics.json").write_text(json.dumps(record, indent=2))
        elif index < finished + 40:
            marker = incomplete_marker(root / ".snakemake", f"{folder.relative_to(root)}/metrics.json")
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(json.dumps({"external_jobid": None}))
    return len(cells)


FLOOR = """
import json, os, sys
n = 0
for folder, _d, files in os.walk('results/runs'):
    if 'metrics.json' in files:
        with open(os.path.join(folder, 'metrics.json'), 'rb') as handle:
            json.loads(handle.read())
        n += 1
print(n)
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=250)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="pepr-status-bench-"))
    try:
        cells = build_sweep(root, args.models)
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")}
        status_cmd = [sys.executable, "-m", "pepr.cli", "status", "--configfile", "config.yaml", "--no-squeue"]
        cache = root / ".snakemake" / "pepr" / "status-cache.json"
        outputs: dict[str, str] = {}

        def cold():
            cache.unlink(missing_ok=True)
            wall, cpu, out = run_command(status_cmd, root, env)
            outputs["cold"] = out
            return wall, cpu

        def warm():
            if not cache.is_file():
                run_command(status_cmd, root, env)
            wall, cpu, out = run_command(status_cmd, root, env)
            outputs["warm"] = out
            return wall, cpu

        def floor():
            wall, cpu, _ = run_command([sys.executable, "-c", FLOOR], root, env)
            return wall, cpu

        timings = interleave({"cold": cold, "warm": warm, "floor": floor}, args.repeats)
        print(machine_line())
        print(f"{cells} cells, {int(cells * 0.6)} with metrics.json, 40 running; {args.repeats} repeats, interleaved")
        floor_s = timings["floor"].median
        rows = [
            (name, f"{t.median:.2f}", t.spread, f"{t.median / floor_s:.2f}x", f"{cpu_share(t):.2f}")
            for name, t in timings.items()
        ]
        print_table("pepr status, 25k cells", rows, ("candidate", "median s", "range", "vs floor", "CPU share"))
        print(f"warm / cold: {timings['warm'].median / timings['cold'].median:.2f}")
        print("status output (warm):")
        print(outputs.get("warm", "")[:600])
        same = outputs.get("warm", "").splitlines()[:2] == outputs.get("cold", "").splitlines()[:2]
        print(f"cold and warm agree on the counts: {same}")
        return 0 if same else 1
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
