"""Synthetic scored results tables at the report's scale limits, for figure tests and the
report benchmark (bench/report_bench.py).

``scaled_sweep(root, n_models, n_groups, n_seeds)`` writes ``root/pepr.csv`` (the workflow's
pepr.csv columns, PePR scored within dataset x init x fraction by pepr.results.scoring.score) and,
optionally, ``root/histories.csv`` (the gathered per-epoch table). Model names are the paper's
131 timm models first (so colouring by the paper's type and efficiency flag is exercised), then
invented ones; parameters span 0.5M to 300M; energy grows with parameters over more than a
decade; accuracy rises weakly with size and saturates. 1 in 50 runs fails.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from pepr.results.scoring import score

RESOURCES = ["energy_kwh", "co2_kg", "train_time_s", "peak_memory_mb"]
METHOD = "measured: NVML + RAPL"
#: Group axes (dataset, init, fraction) by group count: 8 = the paper's cells; 12 the largest.
GROUPS = {
    1: [("pneumoniamnist", "imagenet", "1.0")],
    2: [("pneumoniamnist", init, "1.0") for init in ("scratch", "imagenet")],
    8: [(d, i, f) for d in ("pneumoniamnist", "lidc") for i in ("scratch", "imagenet") for f in ("1.0", "0.1")],
    12: [
        (d, i, f)
        for d in ("pneumoniamnist", "derma_mnist_224")
        for i in ("scratch", "imagenet")
        for f in ("1.0", "0.5", "0.1")
    ],
}


def model_names(n: int) -> list[tuple[str, float]]:
    """``n`` (model, params) pairs: the paper's models (with their parameter counts) first."""
    with resources.as_file(resources.files("pepr").joinpath("data", "paper_models.csv")) as path:
        paper = pd.read_csv(path)
    pairs = list(zip(paper["model"].astype(str), paper["num_param"].astype(float)))[:n]
    rng = np.random.default_rng(99)
    for i in range(len(pairs), n):
        pairs.append((f"custom_net{i:03d}", float(10 ** rng.uniform(5.7, 8.5))))
    return pairs


def scaled_table(
    n_models: int, n_groups: int, n_seeds: int, rng_seed: int = 3, epochs: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """(pepr.csv-like table, gathered histories or None when ``epochs`` is 0)."""
    rng = np.random.default_rng(rng_seed)
    models = model_names(n_models)
    groups = GROUPS.get(n_groups) or [
        ("synthetic", "imagenet", f"{1 - k / (n_groups + 1):.3f}") for k in range(n_groups)
    ]
    rows, index = [], 0
    for dataset, init, fraction in groups:
        frac = float(fraction)
        for model, params in models:
            size = np.log10(params)
            quality = rng.normal(0, 0.015)
            for seed in range(n_seeds):
                index += 1
                base = {
                    "dataset": dataset,
                    "init": init,
                    "fraction": fraction,
                    "model": model,
                    "seed": seed,
                    "params": int(params),
                }
                if index % 50 == 0:
                    rows.append(
                        {**base, "status": "failed", "reason": "RuntimeError: CUDA out of memory", "energy_method": ""}
                    )
                    continue
                accuracy = 0.80 + 0.025 * np.tanh(size - 6.5) + (0.05 if init == "imagenet" else 0) - 0.04 * (1 - frac)
                accuracy = float(np.clip(accuracy + quality + rng.normal(0, 0.008), 0.3, 0.995))
                time = float(40 * frac * (params / 1e6) ** 0.7 * rng.lognormal(0, 0.1))
                energy = time * 250 / 3.6e6 * rng.lognormal(0, 0.05)
                rows.append(
                    {
                        **base,
                        "status": "ok",
                        "reason": "",
                        "test_accuracy": accuracy,
                        "test_balanced_accuracy": accuracy - 0.03,
                        "test_auc": min(1.0, accuracy + 0.05),
                        "test_f1": accuracy - 0.02,
                        "energy_kwh": energy,
                        "co2_kg": energy * 0.2,
                        "train_time_s": time,
                        "peak_memory_mb": 300 + params / 2e4 * rng.lognormal(0, 0.05),
                        "energy_method": METHOD,
                        "device": "NVIDIA H100",
                        "host": "node01",
                    }
                )
    runs = pd.DataFrame(rows)
    ok = runs["status"] == "ok"
    scored = score(runs[ok], performance="test_accuracy", resources=RESOURCES, by=["dataset", "init", "fraction"])
    table = pd.concat([scored, runs[~ok]], ignore_index=True)
    if not epochs:
        return table, None
    good = table[table["status"] == "ok"]
    e = np.arange(1, epochs + 1)
    reps = np.repeat(np.arange(len(good)), epochs)
    epoch = np.tile(e, len(good))
    final = good["test_accuracy"].to_numpy()[reps]
    history = pd.DataFrame(
        {
            **{c: good[c].to_numpy()[reps] for c in ["dataset", "init", "fraction", "model", "seed"]},
            "epoch": epoch,
            "train_loss": 0.6 * np.exp(-0.4 * epoch),
            "val_accuracy": final - 0.1 * np.exp(-1.2 * (epoch - 1)) - 0.01,
            "test_accuracy": np.clip(final - 0.1 * np.exp(-1.2 * (epoch - 1)), 0, 1),
            "epoch_time_s": good["train_time_s"].to_numpy()[reps] / epochs,
            "cumulative_time_s": good["train_time_s"].to_numpy()[reps] * epoch / epochs,
            "cumulative_energy_kwh": good["energy_kwh"].to_numpy()[reps] * epoch / epochs,
        }
    )
    return table, history


def scaled_sweep(root: Path, n_models: int, n_groups: int, n_seeds: int, epochs: int = 0) -> tuple[Path, Path | None]:
    """Write ``root/pepr.csv`` (and ``root/histories.csv`` when ``epochs``); returns the paths."""
    root.mkdir(parents=True, exist_ok=True)
    table, history = scaled_table(n_models, n_groups, n_seeds, epochs=epochs)
    table.to_csv(root / "pepr.csv", index=False)
    if history is None:
        return root / "pepr.csv", None
    history.to_csv(root / "histories.csv", index=False)
    return root / "pepr.csv", root / "histories.csv"
