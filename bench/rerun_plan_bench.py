"""Planning cost of issue 17's rerun check on a FINISHED paper sweep, side by side with 3a59573.

bench/plan_bench.py times planning of a sweep with nothing done; the content-based params record
(pepr.plan.rerun: the recorded text parsed and compared per finished cell, the data files' SHA-256)
only works for cells that are finished. This bench makes the paper grid (1,040 cells + their
inputs) finished: every training output exists and Snakemake's metadata is recorded by the
workflow of ``--before`` (``snakemake --touch``, as a sweep finished before the upgrade), then
times, interleaved, warm ``snakemake -n results/runs.csv`` of

* the workflow of ``--before`` (plain text comparison of params),
* this checkout's workflow (record_text: parse + compare per cell; data digests cached),
* this checkout's workflow right after ``touch`` of every data file (one SHA-256 per file again).

Each candidate must plan 0 training jobs (checked). CPU seconds of the child are the measure.

    .venv/bin/python bench/rerun_plan_bench.py [--repeats 3] [--before 3a59573]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from pathlib import Path

import yaml
from benchlib import (
    DRY_RUN,
    REPO_ROOT,
    machine_line,
    print_table,
    run_command,
    work_dir,
    workflow_at,
    workflow_command,
    write_stand_in_npz,
)


def finished_outputs(config_path: Path, workdir: Path) -> tuple[list[str], list[str]]:
    """(training outputs, other files a finished sweep has) of the config, via pepr.plan.prepare."""
    from pepr.plan.prepare import prepare_grid

    config = yaml.safe_load(config_path.read_text())
    cwd = os.getcwd()
    os.chdir(workdir)
    try:
        grid = prepare_grid(config, REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml", None, validate=False)
    finally:
        os.chdir(cwd)
    outputs = []
    for metrics in grid.metrics_files + grid.pretrain_metrics_files:
        outputs += [metrics, metrics.replace("metrics.json", "history.csv")]
    extra = [job.checkpoint for job in grid.pretrain_jobs]
    extra += [f"results/weights/{model}.json" for model in grid.imagenet_models]
    extra += list(grid.medmnist_files)
    return outputs, extra


def write_medmnist_stand_in(path: Path) -> None:
    """A small file shaped like the MedMNIST flag its name says (``dermamnist_224.npz``)."""
    import numpy as np

    from pepr.datasets.core import medmnist_info

    stem = path.stem
    flag, _, size = stem.partition("_")
    size = int(size or 28)
    info = medmnist_info(flag)
    channels, classes = int(info["n_channels"]), len(info["label"])
    rng = np.random.default_rng(0)
    arrays = {}
    for split, count in (("train", 40), ("val", 20), ("test", 20)):
        shape = (count, size, size) + ((channels,) if channels > 1 else ())
        arrays[f"{split}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(count) % classes).reshape(count, 1).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)


def dry_run(snakefile: Path, config: Path, workdir: Path) -> tuple[float, float, str]:
    """One ``snakemake -n results/runs.csv`` of the workflow ``snakefile`` on ``config`` in ``workdir``."""
    return run_command(
        workflow_command(config, workdir, *DRY_RUN, "results/runs.csv", snakefile=snakefile), cwd=workdir
    )


def training_jobs(output: str) -> int:
    found = re.findall(r"^(train_model|pretrain_source)\s+(\d+)\s*$", output, re.MULTILINE)
    return sum(int(n) for _, n in found)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--before", default="3a59573")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    print(machine_line())
    base, _ = work_dir("rerun-plan", stamp=str(time.time()), base=args.workdir)
    config = (REPO_ROOT / "config" / "paper.yaml").resolve()
    workdir = base / "sweep"
    workdir.mkdir(parents=True)
    write_stand_in_npz(workdir, config)
    before = workflow_at(args.before, base / "before")
    outputs, extra = finished_outputs(config, workdir)
    medmnist = [p for p in extra if p.endswith(".npz")]
    for path in medmnist:  # stand-in MedMNIST files (planning reads headers, digests the bytes)
        write_medmnist_stand_in(workdir / path)
    stamp = time.time() - 3600
    for path in extra + outputs:
        target = workdir / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            target.write_text(json.dumps({"status": "ok"}) if path.endswith(".json") else "x\n")
    for path in medmnist + [p for p in extra if p.endswith(".pt")]:
        os.utime(workdir / path, (stamp, stamp))  # data older than the results, as after a sweep
    touch = workflow_command(config, workdir, "--touch", *outputs, "--quiet", "all", "-c1", snakefile=before)
    wall, cpu, out = run_command(touch, cwd=workdir)
    print(f"recorded metadata of {len(outputs)} outputs with {args.before}'s workflow ({wall:.0f} s)")
    candidates = {
        f"{args.before} workflow": lambda: dry_run(before, config, workdir),
        "this workflow": lambda: dry_run(REPO_ROOT / "Snakefile", config, workdir),
    }
    for name, run in candidates.items():  # warm caches (validation, timm catalogue, digests)
        _, _, output = run()
        jobs = training_jobs(output)
        if jobs:
            raise SystemExit(f"{name} plans {jobs} training jobs on the finished sweep:\n{output[-3000:]}")
    rows = []
    for repeat in range(args.repeats):
        for name, run in candidates.items():
            wall, cpu, _ = run()
            rows.append((name, repeat, wall, cpu))
        for path in medmnist:
            os.utime(workdir / path, None)  # `touch`: every data file newer than the results
        wall, cpu, output = dry_run(REPO_ROOT / "Snakefile", config, workdir)
        if training_jobs(output):
            raise SystemExit(f"after touch, this workflow plans training jobs:\n{output[-3000:]}")
        rows.append(("this workflow, after touch of the data files", repeat, wall, cpu))
    table = {}
    for name, _, wall, cpu in rows:
        table.setdefault(name, []).append((wall, cpu))
    reference = min(c for _, c in table[f"{args.before} workflow"])
    print_table(
        "Planning a finished paper sweep (snakemake -n results/runs.csv)",
        [
            (
                name,
                f"{min(w for w, _ in v):.2f}",
                f"{min(c for _, c in v):.2f}",
                f"{min(c for _, c in v) / reference:.2f}x",
            )
            for name, v in table.items()
        ],
        ("candidate", "best wall s", "best CPU s", "CPU vs before"),
    )
    sizes = sum((workdir / p).stat().st_size for p in medmnist)
    print(
        f"{len(outputs) // 2} finished jobs, {len(medmnist)} MedMNIST stand-in files ({sizes / 1e6:.1f} MB), "
        "0 training jobs planned by every candidate"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
