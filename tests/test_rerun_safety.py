"""Issue 9 case 2: a MedMNIST file the user placed is never re-downloaded, deleted or overwritten.

The file is older than every script (as a file copied in months ago would be); a real sweep on it
must train from it, plan no download_data job, and leave it byte-for-byte unchanged.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest
import yaml

from test_workflow_local import TEST_CONFIG, check, planned_jobs, snakemake

pytestmark = pytest.mark.slow


def _write_medmnist_like(path, n=(60, 30, 30), seed=0):
    """A 2-class 28 px file with MedMNIST's keys (train/val/test images + labels)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, count in zip(("train", "val", "test"), n):
        labels = rng.integers(0, 2, size=(count, 1), dtype=np.int64)
        images = (rng.random((count, 28, 28)) * 80 + labels[:, :, None] * 120).astype(np.uint8)
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels
    np.savez(path, **arrays)


def test_user_placed_old_data_file_survives_a_real_run(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    placed = data / "pneumoniamnist.npz"
    _write_medmnist_like(placed)
    os.utime(placed, (1_000_000_000, 1_000_000_000))  # 2001: older than any script
    digest = hashlib.sha256(placed.read_bytes()).hexdigest()
    config = yaml.safe_load(TEST_CONFIG.read_text())
    config.update(datasets=["pneumoniamnist"], inits=["scratch"], fractions=[1.0], models=["mobilenetv3_small_050"])
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(config))

    assert "download_data" not in planned_jobs(tmp_path, configfile=config_file)
    check(snakemake(tmp_path, "--cores", "2", configfile=config_file))
    assert placed.exists() and hashlib.sha256(placed.read_bytes()).hexdigest() == digest
    assert placed.stat().st_mtime == 1_000_000_000
    assert list((tmp_path / "results").rglob("metrics.json"))
