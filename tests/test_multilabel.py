"""Multi-label tasks: chestmnist (all MedMNIST sizes), (N, L) npz labels and multi-label CSV
manifests train with BCE-with-logits and are scored as MedMNIST scores them (mean AUC over
labels, mean per-label accuracy at 0.5) plus macro F1. The workflow test in test_images.py
sweeps a multi-label CSV and a chestmnist-layout npz into runs.csv and pepr.csv.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pepr.datasets.core import (
    MEDMNIST_SIZES,
    dataset_name,
    dataset_problems,
    load_dataset,
    parse_dataset_spec,
    stratified_subset,
)
from pepr.datasets.medmnist import _medmnist_info
from pepr.errors import PeprInputError
from pepr.train.metrics import multilabel_metrics

FLAGS_2D = [
    "pathmnist",
    "chestmnist",
    "dermamnist",
    "octmnist",
    "pneumoniamnist",
    "retinamnist",
    "breastmnist",
    "bloodmnist",
    "tissuemnist",
    "organamnist",
    "organcmnist",
    "organsmnist",
]


def test_multilabel_metrics_against_hand_computed():
    y = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    scores = np.array([[0.9, 0.2], [0.4, 0.6], [0.3, 0.8], [0.1, 0.7]])
    found = multilabel_metrics(y, scores)
    # label 0: predictions 1,0,0,0 -> 3/4 right; label 1: 0,1,1,1 -> 3/4 right
    assert found["accuracy"] == pytest.approx(0.75)
    # AUC label 0: positives 0.9, 0.3 vs negatives 0.4, 0.1 -> 3/4; label 1: 0.6, 0.8 vs 0.2, 0.7 -> 3/4
    assert found["auc"] == pytest.approx(0.75)
    # F1 label 0: tp 1, fp 0, fn 1 -> 2/3; label 1: tp 2, fp 1, fn 0 -> 4/5
    assert found["f1"] == pytest.approx((2 / 3 + 4 / 5) / 2)
    # balanced: label 0 (1/2 + 2/2) / 2; label 1 (2/2 + 1/2) / 2
    assert found["balanced_accuracy"] == pytest.approx(0.75)


def test_multilabel_metrics_match_sklearn_when_present():
    metrics = pytest.importorskip(
        "sklearn.metrics", reason="scikit-learn not installed (optional cross-check): pip install scikit-learn"
    )
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, (200, 5))
    scores = np.clip(y * 0.3 + rng.random((200, 5)) * 0.7, 0, 1)
    found = multilabel_metrics(y, scores)
    assert found["auc"] == pytest.approx(np.mean([metrics.roc_auc_score(y[:, i], scores[:, i]) for i in range(5)]))
    assert found["f1"] == pytest.approx(metrics.f1_score(y, scores > 0.5, average="macro"))


@pytest.mark.parametrize("flag", FLAGS_2D)
def test_every_medmnist_2d_flag_at_every_size(flag):
    for size in MEDMNIST_SIZES:
        parsed = parse_dataset_spec(f"{flag}@{size}")
        assert (parsed.kind, parsed.flag, parsed.size) == ("medmnist", flag, size)
        assert dataset_name(f"{flag}@{size}") == (flag if size == 28 else f"{flag}_{size}")


def test_unknown_flag_lists_only_valid_flags():
    with pytest.raises(PeprInputError) as info:
        parse_dataset_spec("nosuchmnist")
    listed = str(info.value).split("MedMNIST 2D flag (", 1)[1].split(")", 1)[0].split(", ")
    assert sorted(listed) == sorted(FLAGS_2D)
    assert sorted(flag for flag in _medmnist_info() if not flag.endswith("3d")) == sorted(FLAGS_2D)


def write_multilabel_npz(path: Path, n=(60, 20, 20), labels=3, size=28, seed=0) -> Path:
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, count in zip(("train", "val", "test"), n):
        y = rng.integers(0, 2, (count, labels)).astype(np.uint8)
        y[0] = 1  # every label positive somewhere
        x = rng.integers(0, 60, (count, size, size)).astype(np.uint8)
        for label in range(labels):  # a learnable signal: a bright band per positive label
            x[y[:, label] == 1, label * 4 : label * 4 + 3, :] = 230
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = x, y
    np.savez(path, **arrays)
    return path


def test_npz_with_label_rows_is_multilabel(tmp_path):
    path = write_multilabel_npz(tmp_path / "ml.npz")
    assert dataset_problems(f"npz:{path}", None) == []
    data = load_dataset(f"npz:{path}")
    assert data.multi_label and data.num_classes == 3 and data.train_y.shape == (60, 3)


def test_bad_multilabel_npz(tmp_path):
    arrays = dict(np.load(write_multilabel_npz(tmp_path / "ml.npz")))
    arrays["val_labels"] = arrays["val_labels"] * 2
    np.savez(tmp_path / "values.npz", **arrays)
    assert any("values other than 0 and 1" in p for p in dataset_problems(f"npz:{tmp_path / 'values.npz'}", None))
    arrays = dict(np.load(write_multilabel_npz(tmp_path / "ml.npz")))
    arrays["train_labels"][:, 2] = 0
    np.savez(tmp_path / "never.npz", **arrays)
    assert any("labels [2] are never positive" in p for p in dataset_problems(f"npz:{tmp_path / 'never.npz'}", None))


def test_multilabel_fraction_is_seeded_nested_and_sized():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, (400, 4))
    half, tenth = stratified_subset(y, 0.5, seed=3), stratified_subset(y, 0.1, seed=3)
    assert abs(len(half) - 200) <= 5 and abs(len(tenth) - 40) <= 5
    assert set(tenth) <= set(half)
    np.testing.assert_array_equal(half, stratified_subset(y, 0.5, seed=3))


def write_multilabel_csv(root: Path, n: int = 40, style: str = "labels") -> Path:
    """A manifest of n 16 px PNGs with labels among (effusion, mass, nodule)."""
    names = ("effusion", "mass", "nodule")
    rng = np.random.default_rng(0)
    (root / "png").mkdir(parents=True)
    manifest = root / "findings.csv"
    with open(manifest, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "labels", "split"] if style == "labels" else ["path", *names, "split"])
        for i in range(n):
            y = rng.integers(0, 2, 3)
            if i < 3:
                y[:] = 1
            image = rng.integers(0, 60, (16, 16)).astype(np.uint8)
            for label in np.flatnonzero(y):
                image[label * 5 : label * 5 + 3] = 230
            Image.fromarray(image).save(root / "png" / f"{i}.png")
            split = ("train", "train", "train", "val", "test")[i % 5] if i >= 3 else "train"
            if style == "labels":
                writer.writerow([f"png/{i}.png", ";".join(names[j] for j in np.flatnonzero(y)), split])
            else:
                writer.writerow([f"png/{i}.png", *map(int, y), split])
    return manifest


@pytest.mark.parametrize("style", ["labels", "columns"])
def test_multilabel_csv(tmp_path, style):
    manifest = write_multilabel_csv(tmp_path, style=style)
    data = load_dataset(f"csv:{manifest}", tmp_path / "data")
    assert data.multi_label and data.class_names == ("effusion", "mass", "nodule")
    assert data.train_y.shape[1] == 3 and data.details["task"] == "multi-label"


@pytest.mark.slow
def test_chestmnist_layout_npz_trains_with_bce(tmp_path):
    from pepr.train.run import TrainConfig, run_training

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    write_multilabel_npz(data_dir / "chestmnist.npz", labels=14)
    out = tmp_path / "run"
    metrics = run_training(
        TrainConfig(
            model="test_resnet",
            dataset="chestmnist",
            data_dir=data_dir,
            out_dir=out,
            epochs=1,
            batch_size=16,
            threads=1,
        ),
        log=lambda message: None,
    )
    assert metrics["status"] == "ok" and metrics["task"] == "multi-label" and metrics["num_classes"] == 14
    assert metrics["class_names"].split("; ")[:2] == ["atelectasis", "cardiomegaly"]
    for key in ("test_accuracy", "test_auc", "test_f1", "test_balanced_accuracy"):
        assert 0.0 <= metrics[key] <= 1.0, key
    history = (out / "history.csv").read_text().splitlines()
    assert len(history) == 2 and json.loads((out / "metrics.json").read_text())["task"] == "multi-label"
