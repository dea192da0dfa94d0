"""An adaptive sweep next to the full grid on real data: resource share and PePR regret per group.

Runs the same config twice with the workflow (local executor): once as a full grid, once with
``adaptive:`` (successive halving by projected PePR), on PneumoniaMNIST at 28 px (found under a
``shared/data/medmnist`` folder above this checkout, or ``--data-dir``) with 8 timm models of
0.57-21M parameters. Then, per group (dataset x init x fraction):

* ``resource share`` = energy the adaptive sweep spent (every run: finished, stopped, failed) /
  energy the full grid spent, both as measured (CodeCarbon);
* ``PePR regret`` = PePR-E of the full grid's best model minus PePR-E of the adaptive sweep's
  recommendation (the best PePR among its finished runs, scored as its pepr.csv is), both scored
  on the full grid;
* ``pepr replay`` on the full grid's results/histories.csv with the same rungs/keep: its
  recommendation and share, and whether it agrees with the adaptive run's choice.

Targets (issue 23): share <= 0.35 and regret <= 0.02 in every group. Wall time of both runs is
printed too (an adaptive sweep starts more processes: one per segment). Results differ run to run
(energy is measured on a shared machine); run it on a quiet machine, under ``nice`` otherwise.

    .venv/bin/python bench/adaptive_bench.py [--epochs 10] [--rungs 1,3] [--keep 0.34] [--min-keep 1]
        [--fractions 0.5] [--cores 2] [--work DIR]

The defaults are the issue's setting (10 epochs, rungs 1 and 3, keep a third); ``--fractions``
(comma-separated) gives one group per fraction. The default, 0.5 (1,941 training images, 30
optimizer steps per epoch), is the smallest where an epoch is real training (at 0.05-0.15 no model
leaves the majority class by epoch 3, see BENCHMARKS.md); both runs take ~15 minutes on a loaded
2-core CPU machine.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import REPO_ROOT, machine_line, print_table

MODELS = [
    "mobilenetv3_small_050",
    "mobilenetv2_050",
    "regnetx_002",
    "mnasnet_100",
    "efficientnet_b0",
    "resnet10t",
    "resnet18",
    "resnet34",
]
GROUP = ["dataset", "init", "fraction"]


def find_data_dir() -> Path | None:
    """The shared MedMNIST folder: $PEPR_SHARED_DATA, else shared/data/medmnist in a parent folder."""
    given = os.environ.get("PEPR_SHARED_DATA")
    if given:
        return Path(given)
    for parent in REPO_ROOT.parents:
        candidate = parent / "shared" / "data" / "medmnist"
        if (candidate / "pneumoniamnist.npz").is_file():
            return candidate
    return None


def sweep_config(args: argparse.Namespace, data_dir: Path, adaptive: bool) -> dict:
    config = {
        "models": MODELS,
        "datasets": ["pneumoniamnist"],
        "inits": ["scratch"],
        "fractions": args.fractions,
        "seeds": [0],
        "epochs": args.epochs,
        "batch_size": 64,
        "device": "cpu",
        "data_dir": str(data_dir),
        "resources": {
            kind: {"cpus": 1, "gpu": 0, "mem_mb": 3000, "runtime": 60} for kind in ("train", "pretrain", "default")
        },
    }
    if adaptive:
        config["adaptive"] = {"rungs": args.rungs, "keep": args.keep, "min_keep": args.min_keep}
    return config


def run_sweep(work: Path, name: str, config: dict, cores: int, targets: list[str]) -> float:
    folder = work / name
    folder.mkdir(parents=True, exist_ok=True)
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    started = time.perf_counter()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-s",
            str(REPO_ROOT / "Snakefile"),
            "--directory",
            str(folder),
            "--configfile",
            str(path),
            "--cores",
            str(cores),
            *targets,
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"{name} sweep failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return time.perf_counter() - started


def best_model(runs: pd.DataFrame) -> tuple[str, pd.Series]:
    """Best model by PePR-E (test accuracy, energy) over the ok runs, scored as the workflow's
    pepr.csv is (an adaptive sweep's stopped runs widen the range at their projected full cost),
    and every finished model's PePR."""
    from pepr.results.aggregate import score_runs

    scored = score_runs(runs, performance="test_accuracy", resources=["energy_kwh"], amortised=(), by=GROUP)
    pepr = scored[scored["status"] == "ok"].groupby("model")["pepr_energy_kwh"].mean()
    return min(pepr.index, key=lambda m: (-pepr[m], m)), pepr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--rungs", type=lambda t: [int(x) for x in t.split(",")], default=[1, 3])
    parser.add_argument("--keep", type=float, default=0.34)
    parser.add_argument("--min-keep", type=int, default=1)
    parser.add_argument("--fractions", type=lambda t: [float(x) for x in t.split(",")], default=[0.5])
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a new temporary one)")
    args = parser.parse_args()
    data_dir = args.data_dir or find_data_dir()
    if data_dir is None or not (data_dir / "pneumoniamnist.npz").is_file():
        raise SystemExit("pneumoniamnist.npz not found: pass --data-dir or set PEPR_SHARED_DATA")
    work = args.work or Path(tempfile.mkdtemp(prefix="pepr-adaptive-bench-"))
    print(machine_line())
    print(
        f"work folder: {work}; {len(MODELS)} models, PneumoniaMNIST 28 px, fractions {args.fractions}, "
        f"{args.epochs} epochs; adaptive rungs {args.rungs}, keep {args.keep}, min_keep {args.min_keep}"
    )
    full_s = run_sweep(
        work, "full", sweep_config(args, data_dir, False), args.cores, ["results/runs.csv", "results/histories.csv"]
    )
    adaptive_s = run_sweep(work, "adaptive", sweep_config(args, data_dir, True), args.cores, ["results/runs.csv"])
    full = pd.read_csv(work / "full" / "results" / "runs.csv")
    adaptive = pd.read_csv(work / "adaptive" / "results" / "runs.csv")
    replay_dir = work / "replay"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pepr.cli",
            "replay",
            str(work / "full" / "results" / "histories.csv"),
            "--rungs",
            ",".join(map(str, args.rungs)),
            "--keep",
            str(args.keep),
            "--min-keep",
            str(args.min_keep),
            "--out",
            str(replay_dir),
        ],
        check=True,
    )
    replayed = pd.read_csv(replay_dir / "replay.csv")
    rows = []
    for key, full_group in full.groupby(GROUP):
        part = adaptive.set_index(GROUP).loc[key].reset_index()
        best_full, full_pepr = best_model(full_group)
        recommended, _ = best_model(part)
        share = part["energy_kwh"].sum() / full_group["energy_kwh"].sum()
        regret = full_pepr[best_full] - full_pepr[recommended]
        replay_row = replayed[
            (replayed["dataset"] == key[0]) & (replayed["init"] == key[1]) & (replayed["fraction"] == key[2])
        ].iloc[0]
        stopped = part.loc[part["status"] == "stopped", ["model", "rung"]]
        # the finished runs trained exactly as in the full grid: their energy ratio is the
        # measurement's own repeatability, the noise any regret here sits on
        both = part[part["status"] == "ok"].merge(full_group, on="model", suffixes=("_adaptive", "_full"))
        ratios = both["energy_kwh_adaptive"] / both["energy_kwh_full"]
        repeat = f"{ratios.min():.2f}-{ratios.max():.2f}" if len(ratios) else "-"
        rows.append(
            (
                "/".join(map(str, key)),
                best_full,
                recommended,
                f"{share:.3f}",
                f"{regret:.4f}",
                replay_row["recommended"],
                f"{replay_row['resource_share']:.3f}",
                "yes" if replay_row["recommended"] == recommended else "no",
                repeat,
                ", ".join(f"{m}@{int(r)}" for m, r in stopped.itertuples(index=False)),
            )
        )
    print_table(
        "Adaptive sweep vs full grid (energy, PePR-E)",
        rows,
        (
            "group",
            "best (full)",
            "recommended (adaptive)",
            "resource share",
            "PePR regret",
            "replay recommends",
            "replay share",
            "replay agrees",
            "same training, energy adaptive/full",
            "stopped at rung",
        ),
    )
    print(
        f"\nwall time: full grid {full_s:.0f} s, adaptive {adaptive_s:.0f} s (ratio {adaptive_s / full_s:.2f}); "
        f"energy: full {full['energy_kwh'].sum():.4g} kWh, adaptive {adaptive['energy_kwh'].sum():.4g} kWh"
    )


if __name__ == "__main__":
    main()
