"""A seeded, realistic sweep (pepr.csv + per-run histories) for the report tests.

Shaped like the workflow's outputs (ARCHITECTURE.md): one row per run, failed runs with a reason
and empty scores, PePR columns scored within dataset x init x fraction by pepr.results.scoring.score.
Larger models cost more energy; pretraining helps; 10% data costs accuracy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pepr.results.scoring import score

#: model -> trainable parameters (1 channel, 2 classes); the last one is not in the paper's table.
MODELS = {
    "mobilenetv3_small_050": 570_000,
    "regnetx_002": 2_320_000,
    "efficientnet_b0": 4_010_000,
    "convnext_atto": 3_370_000,
    "resnet18": 11_170_000,
    "densenet121": 6_950_000,
    "resnet50": 23_510_000,
    "toynet_custom7": 40_000_000,
}
RESOURCES = ["energy_kwh", "co2_kg", "train_time_s", "peak_memory_mb"]
METHOD = "estimated: CodeCarbon cpu_load/TDP + constant RAM"
EPOCHS = 5


def make_sweep(
    root: Path,
    seeds: tuple[int, ...] = (0, 1, 2),
    inits: tuple[str, ...] = ("scratch", "imagenet"),
    fractions: tuple[str, ...] = ("1.0", "0.1"),
    rng_seed: int = 7,
) -> Path:
    """Write ``root/pepr.csv`` and ``root/runs/.../history.csv``; returns the pepr.csv path.

    convnext_atto fails in every cell (kernel larger than the 28 px input), like on real data.
    """
    rng = np.random.default_rng(rng_seed)
    rows = []
    for init in inits:
        for fraction in fractions:
            for model, params in MODELS.items():
                for seed in seeds:
                    rows.append(_run(root, rng, init, fraction, model, params, seed))
    runs = pd.DataFrame(rows)
    ok = runs["status"] == "ok"
    scored = score(runs[ok], performance="test_accuracy", resources=RESOURCES, by=["dataset", "init", "fraction"])
    table = pd.concat([scored, runs[~ok]], ignore_index=True)
    path = root / "pepr.csv"
    table.to_csv(path, index=False)
    return path


def _run(root: Path, rng: np.random.Generator, init: str, fraction: str, model: str, params: int, seed: int) -> dict:
    base = {
        "dataset": "pneumoniamnist",
        "init": init,
        "fraction": fraction,
        "model": model,
        "seed": seed,
        "params": params,
    }
    if model == "convnext_atto":
        return {
            **base,
            "status": "failed",
            "reason": "RuntimeError: Kernel size can't be greater than actual input size",
            "energy_method": "",
        }
    size = np.log10(params)
    accuracy_final = 0.78 + 0.02 * (size - 5.7) + (0.06 if init == "imagenet" else 0.0)
    accuracy_final -= 0.05 if fraction == "0.1" and init == "scratch" else (0.02 if fraction == "0.1" else 0.0)
    accuracy_final = float(np.clip(accuracy_final + rng.normal(0, 0.01), 0.5, 0.99))
    epoch_time = (0.4 + params / 2e6) * (0.1 if fraction == "0.1" else 1.0) * (1 + rng.normal(0, 0.03))
    epoch_energy = epoch_time * 7.8e-6
    # Accuracy saturates: most of the gain comes in the first epochs.
    epochs = np.arange(1, EPOCHS + 1)
    accuracy = accuracy_final - 0.12 * np.exp(-1.3 * (epochs - 1)) + rng.normal(0, 0.004, EPOCHS)
    history = pd.DataFrame(
        {
            "epoch": epochs,
            "train_loss": 0.6 * np.exp(-0.4 * epochs),
            "val_accuracy": accuracy - 0.01,
            "test_accuracy": np.clip(accuracy, 0, 1),
            "epoch_time_s": np.full(EPOCHS, epoch_time),
            "cumulative_time_s": epoch_time * epochs,
            "cumulative_energy_kwh": epoch_energy * epochs,
        }
    )
    folder = root / "runs" / base["dataset"] / init / fraction / model / f"seed{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    history.to_csv(folder / "history.csv", index=False)
    energy = float(history["cumulative_energy_kwh"].iloc[-1])
    return {
        **base,
        "status": "ok",
        "reason": "",
        "test_accuracy": float(history["test_accuracy"].iloc[-1]),
        "test_balanced_accuracy": float(history["test_accuracy"].iloc[-1]) - 0.05,
        "test_auc": min(1.0, float(history["test_accuracy"].iloc[-1]) + 0.08),
        "test_f1": float(history["test_accuracy"].iloc[-1]) - 0.02,
        "energy_kwh": energy,
        "co2_kg": energy * 0.1517,
        "train_time_s": epoch_time * EPOCHS,
        "peak_memory_mb": 300 + params / 2e4 + rng.normal(0, 5),
        "energy_method": METHOD,
    }
