"""Synthetic ``metrics.json`` files for the aggregation benchmark, following ARCHITECTURE.md.

``write_synthetic_runs(root, ...)`` lays out ``root/runs/{dataset}/{init}/{fraction}/{model}/
seed{seed}/metrics.json`` (optionally with ``history.csv``) for every combination of the given
axes, with plausible values for every key of the metrics.json contract and a small share of
``status: failed`` runs, so that aggregation does the same work it does on a real sweep.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import product
from pathlib import Path

#: The default axes give 2 x 3 x 4 x 125 x 8 = 24,000 runs.
DEFAULT_DATASETS = ("pneumoniamnist", "breastmnist")
DEFAULT_INITS = ("scratch", "imagenet", "transfer")
DEFAULT_FRACTIONS = (0.1, 0.25, 0.5, 1.0)
DEFAULT_N_MODELS = 125
DEFAULT_SEEDS = tuple(range(8))
#: One run in this many is written as failed (the model cannot run at that input size).
FAILED_EVERY = 40


@dataclass(frozen=True)
class SyntheticGrid:
    """Axes of a synthetic sweep; ``n_runs`` is the product of their lengths."""

    datasets: Sequence[str] = DEFAULT_DATASETS
    inits: Sequence[str] = DEFAULT_INITS
    fractions: Sequence[float] = DEFAULT_FRACTIONS
    models: Sequence[str] = tuple(f"model{i:03d}" for i in range(DEFAULT_N_MODELS))
    seeds: Sequence[int] = DEFAULT_SEEDS

    @property
    def n_runs(self) -> int:
        """Number of runs (cells x models x seeds) this grid lays out."""
        return len(self.datasets) * len(self.inits) * len(self.fractions) * len(self.models) * len(self.seeds)


def synthetic_metrics(
    dataset: str, init: str, fraction: float, model: str, seed: int, index: int, rng: random.Random
) -> dict:
    """One metrics.json payload with every key of the ARCHITECTURE.md contract."""
    failed = index % FAILED_EVERY == FAILED_EVERY - 1
    epochs = 10
    train_time = rng.uniform(20, 2000) * fraction
    energy = train_time * rng.uniform(30, 300) / 3.6e6
    cpu_energy, gpu_energy = energy * 0.2, energy * 0.65
    accuracy = rng.uniform(0.6, 0.97)
    payload = {
        "status": "failed" if failed else "ok",
        "reason": "kernel size can't be greater than actual input size" if failed else "",
        "model": model,
        "dataset": dataset,
        "init": init,
        "fraction": fraction,
        "seed": seed,
        "params": rng.randint(300_000, 90_000_000),
        "epochs": epochs,
        "image_size": 28,
        "batch_size": 32,
        "lr": 1e-3,
        "device": "cuda",
        "host": "node01",
        "country": "DNK",
        "energy_method": "measured: NVML + RAPL",
        "n_train": int(3882 * fraction),
    }
    if not failed:
        payload.update(
            test_accuracy=accuracy,
            test_balanced_accuracy=accuracy * 0.95,
            test_auc=min(1.0, accuracy + 0.02),
            test_f1=accuracy * 0.97,
            val_accuracy=accuracy + rng.uniform(-0.02, 0.02),
            best_val_epoch=rng.randint(0, epochs - 1),
            energy_kwh=energy,
            cpu_energy_kwh=cpu_energy,
            gpu_energy_kwh=gpu_energy,
            ram_energy_kwh=energy - cpu_energy - gpu_energy,
            co2_kg=energy * 0.1517,
            train_time_s=train_time,
            peak_memory_mb=rng.uniform(200, 20_000),
            flops_per_image=rng.uniform(1e6, 5e9),
            inference_ms_per_image=rng.uniform(0.01, 3.0),
            cpu_share=rng.uniform(0.8, 1.0),
        )
        payload["config"] = {"model": model, "dataset": dataset, "epochs": epochs}
        payload["versions"] = {"torch": "2.14.1", "timm": "1.0.31", "codecarbon": "3.3.2"}
        payload["energy_per_epoch"] = [energy / epochs] * epochs
    return payload


def _history_csv(payload: dict) -> str:
    epochs = payload["epochs"]
    lines = ["epoch,train_loss,val_accuracy,test_accuracy,epoch_time_s,cumulative_time_s,cumulative_energy_kwh"]
    per_epoch_t = payload.get("train_time_s", 0.0) / epochs
    per_epoch_e = payload.get("energy_kwh", 0.0) / epochs
    for epoch in range(epochs):
        lines.append(
            f"{epoch},{1.0 / (epoch + 1):.4f},{payload.get('val_accuracy', 0.0):.4f},"
            f"{payload.get('test_accuracy', 0.0):.4f},{per_epoch_t:.3f},{per_epoch_t * (epoch + 1):.3f},"
            f"{per_epoch_e * (epoch + 1):.6g}"
        )
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class SyntheticRuns:
    """Paths written by :func:`write_synthetic_runs`."""

    metrics: list[Path]
    pretrain_metrics: list[Path]
    runs_root: Path


def write_synthetic_runs(
    results_dir: Path,
    grid: SyntheticGrid = SyntheticGrid(),
    *,
    seed: int = 0,
    with_history: bool = False,
    pretrain_source: str = "synthetic-classes4-seed1",
) -> SyntheticRuns:
    """Write one metrics.json per run of ``grid`` under ``results_dir/runs``.

    When the grid has the ``transfer`` init, one pretraining run per model is written too
    (``results_dir/pretrain/{pretrain_source}/{model}/metrics.json``), as the workflow does.
    """
    rng = random.Random(seed)
    paths: list[Path] = []
    pretrain_paths: list[Path] = []
    if "transfer" in grid.inits:
        for index, model in enumerate(grid.models):
            run_dir = results_dir / "pretrain" / pretrain_source / model
            run_dir.mkdir(parents=True, exist_ok=True)
            payload = synthetic_metrics(pretrain_source, "scratch", 1.0, model, 0, index * FAILED_EVERY, rng)
            path = run_dir / "metrics.json"
            path.write_text(json.dumps(payload))
            pretrain_paths.append(path)
    axes = product(grid.datasets, grid.inits, grid.fractions, grid.models, grid.seeds)
    for index, (dataset, init, fraction, model, run_seed) in enumerate(axes):
        run_dir = results_dir / "runs" / dataset / init / str(fraction) / model / f"seed{run_seed}"
        run_dir.mkdir(parents=True, exist_ok=True)
        payload = synthetic_metrics(dataset, init, fraction, model, run_seed, index, rng)
        path = run_dir / "metrics.json"
        path.write_text(json.dumps(payload))
        if with_history:
            (run_dir / "history.csv").write_text(_history_csv(payload))
        paths.append(path)
    return SyntheticRuns(metrics=paths, pretrain_metrics=pretrain_paths, runs_root=results_dir / "runs")
