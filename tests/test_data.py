"""pepr.datasets.core: spec grammar, names, file validation (every bad-file case), fractions, synthetic data.

No torch needed: these run in seconds.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from pepr.datasets.core import (
    SYNTHETIC_DEFAULTS,
    dataset_name,
    dataset_problems,
    load_dataset,
    make_synthetic,
    parse_dataset_spec,
    stratified_subset,
)
from pepr.errors import PeprInputError
from shared_data import PNEUMONIA, absent

# ------------------------------------------------------------------ spec grammar and names


@pytest.mark.parametrize(
    "spec, name",
    [
        ("pneumoniamnist", "pneumoniamnist"),
        ("pneumoniamnist@28", "pneumoniamnist"),
        ("dermamnist@64", "dermamnist_64"),
        ("PneumoniaMNIST@224", "pneumoniamnist_224"),
        ("npz:/some/where/my data.npz", "my_data"),
        ("npz:relative/cells.v2.npz", "cells.v2"),
        ("synthetic", "synthetic"),
        ("synthetic:size=28", "synthetic"),  # default values do not change the name
        ("synthetic:size=32,classes=3", "synthetic-classes3-size32"),
        ("synthetic:classes=3,size=32", "synthetic-classes3-size32"),  # order-independent
        ("synthetic:imbalance=2.5", "synthetic-imbalance2.5"),
    ],
)
def test_dataset_name(spec, name):
    assert dataset_name(spec) == name


def test_parse_kinds():
    medmnist = parse_dataset_spec("bloodmnist@128")
    assert (medmnist.kind, medmnist.flag, medmnist.size) == ("medmnist", "bloodmnist", 128)
    npz = parse_dataset_spec("npz:data/x.npz")
    assert npz.kind == "npz" and npz.path == Path("data/x.npz")
    synthetic = parse_dataset_spec("synthetic:classes=4,noise=0.2")
    assert synthetic.kind == "synthetic"
    assert synthetic.option("classes") == 4 and synthetic.option("noise") == 0.2
    assert synthetic.option("n_train") == SYNTHETIC_DEFAULTS["n_train"]


@pytest.mark.parametrize(
    "spec, words",
    [
        ("", "empty"),
        ("nosuchmnist", "unknown dataset"),
        ("pneumoniamnist_64", "did you mean 'pneumoniamnist@64'"),
        ("organmnist3d", "3D"),
        ("pneumoniamnist@50", "sizes"),
        ("pneumoniamnist@big", "size after '@'"),
        ("npz:", "give the file"),
        ("npz:data.csv", ".npz"),
        ("synthetic:", "nothing after"),
        ("synthetic:colour=1", "unknown synthetic option 'colour'"),
        ("synthetic:size", "not key=value"),
        ("synthetic:size=abc", "must be an integer"),
        ("synthetic:noise=x", "must be a number"),
        ("synthetic:classes=1", "out of range"),
        ("synthetic:channels=2", "1 (grey) or 3"),
        ("synthetic:size=28,size=32", "given twice"),
        ("synthetic:imbalance=nan", "out of range"),
    ],
)
def test_bad_specs(spec, words):
    with pytest.raises(PeprInputError, match=None) as info:
        parse_dataset_spec(spec)
    assert words in str(info.value)
    assert dataset_problems(spec, None) == [str(info.value)]


def test_spec_validation_does_not_import_torch():
    import subprocess

    code = (
        "import sys; from pepr.datasets.core import dataset_problems, dataset_name;"
        "dataset_name('pneumoniamnist@64'); dataset_problems('dermamnist', None);"
        "print('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


# ------------------------------------------------------------------ file validation


def write_npz(path: Path, **overrides) -> Path:
    """A valid tiny MedMNIST-layout file, with arrays replaced/removed by ``overrides`` (None removes)."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 20), ("val", 6), ("test", 8)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 12, 12), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 3).reshape(-1, 1).astype(np.uint8)
    arrays.update(overrides)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


def test_valid_npz_has_no_problems_and_loads(tmp_path):
    path = write_npz(tmp_path / "ok.npz")
    assert dataset_problems(f"npz:{path}", None) == []
    data = load_dataset(f"npz:{path}")
    assert data.train_x.shape == (20, 1, 12, 12) and data.train_x.dtype == np.uint8
    assert data.num_classes == 3 and data.channels == 1 and data.name == "ok"
    assert data.train_y.dtype == np.int64 and data.train_y.shape == (20,)


def test_colour_and_float_npz_load(tmp_path):
    rng = np.random.default_rng(1)
    path = write_npz(
        tmp_path / "colour.npz",
        train_images=rng.random((20, 12, 12, 3)).astype(np.float32),
        val_images=rng.random((6, 12, 12, 3)).astype(np.float32),
        test_images=rng.random((8, 12, 12, 3)).astype(np.float32),
    )
    data = load_dataset(f"npz:{path}")
    assert data.train_x.shape == (20, 3, 12, 12) and data.train_x.dtype == np.float32


BAD_FILES = {
    "missing_key": (dict(val_labels=None), "missing arrays val_labels"),
    "rank": (dict(train_images=np.zeros((20, 144), np.uint8)), "expected (N, H, W) or (N, H, W, C)"),
    "channels": (dict(train_images=np.zeros((20, 12, 12, 2), np.uint8)), "2 channels"),
    "dtype": (dict(test_images=np.zeros((8, 12, 12), np.int32)), "dtype int32"),
    "rows": (dict(train_labels=np.zeros((19, 1), np.uint8)), "20 rows but train_labels has 19"),
    "multilabel": (dict(test_labels=np.zeros((8, 4), np.uint8)), "multi-label"),
    "label_dtype": (dict(val_labels=np.array([["a"]] * 6)), "expected integers"),
    "negative": (dict(val_labels=np.full((6, 1), -1, np.int64)), "labels must be >= 0"),
    "fractional": (dict(val_labels=np.full((6, 1), 0.5)), "non-integer"),
    "geometry": (dict(val_images=np.zeros((6, 14, 14), np.uint8)), "different image shapes"),
    "one_class": (
        dict(
            train_labels=np.zeros((20, 1), np.uint8),
            val_labels=np.zeros((6, 1), np.uint8),
            test_labels=np.zeros((8, 1), np.uint8),
        ),
        "at least 2 classes",
    ),
    "class_absent_in_train": (
        dict(train_labels=(np.arange(20) % 2).reshape(-1, 1)),
        "classes [2] have no sample in train",
    ),
    "empty_split": (
        dict(test_images=np.zeros((0, 12, 12), np.uint8), test_labels=np.zeros((0, 1), np.uint8)),
        "test_images is empty",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_npz_files(tmp_path, case):
    overrides, words = BAD_FILES[case]
    path = write_npz(tmp_path / f"{case}.npz", **overrides)
    problems = dataset_problems(f"npz:{path}", None)
    assert problems, f"{case} not detected"
    assert any(words in problem for problem in problems), problems
    with pytest.raises(PeprInputError, match="npz"):
        load_dataset(f"npz:{path}")


def test_not_a_zip_and_missing_file(tmp_path):
    junk = tmp_path / "junk.npz"
    junk.write_text("not a zip")
    assert "not a readable .npz" in dataset_problems(f"npz:{junk}", None)[0]
    assert "not found" in dataset_problems(f"npz:{tmp_path / 'nope.npz'}", None)[0]


def test_damaged_array_header_is_one_clear_problem(tmp_path):
    # a zip whose .npy member has a mangled header (numpy parses it with ast.literal_eval and
    # would raise SyntaxError): reported as an unreadable file, and loading stops with PeprInputError
    import zipfile

    path = write_npz(tmp_path / "good.npz")
    damaged = tmp_path / "damaged.npz"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(damaged, "w") as target:
        for member in source.namelist():
            payload = source.read(member)
            if member == "train_images.npy":
                payload = payload.replace(b"'descr'", b"'descr'((", 1)
            target.writestr(member, payload)
    problems = dataset_problems(f"npz:{damaged}", None)
    assert len(problems) == 1 and "not a readable .npz" in problems[0] and "train_images.npy" in problems[0], problems
    with pytest.raises(PeprInputError, match="npz"):
        load_dataset(f"npz:{damaged}")


def test_medmnist_checks_against_info(tmp_path):
    # breastmnist: 2 classes, 1 channel; a file with label 2 or colour images is wrong for it
    write_npz(tmp_path / "breastmnist.npz")  # labels 0..2
    problems = dataset_problems("breastmnist", tmp_path)
    assert any("this dataset has 2 classes" in p for p in problems), problems
    colour = {f"{s}_images": np.zeros((n, 12, 12, 3), np.uint8) for s, n in (("train", 20), ("val", 6), ("test", 8))}
    write_npz(
        tmp_path / "breastmnist_64.npz",
        **colour,
        **{f"{s}_labels": (np.arange(n) % 2).reshape(-1, 1) for s, n in (("train", 20), ("val", 6), ("test", 8))},
    )
    assert any("3 channels; this dataset has 1" in p for p in dataset_problems("breastmnist@64", tmp_path))


def test_missing_medmnist_file_says_where_and_how(tmp_path):
    (problem,) = dataset_problems("dermamnist@64", tmp_path)
    assert str(tmp_path / "dermamnist_64.npz") in problem
    assert "zenodo" in problem and "download=True" in problem
    assert dataset_problems("dermamnist@64", tmp_path, allow_download=True) == []


@pytest.mark.skipif(not PNEUMONIA.exists(), reason=absent(PNEUMONIA))
def test_real_pneumoniamnist():
    assert dataset_problems("pneumoniamnist", PNEUMONIA.parent) == []
    data = load_dataset("pneumoniamnist", PNEUMONIA.parent, allow_download=False)
    assert data.class_names == ("normal", "pneumonia")
    assert data.train_x.shape == (3882, 1, 28, 28)
    assert np.bincount(data.test_y).tolist() == [234, 390]


# ------------------------------------------------------------------ fractions


def test_stratified_subset_keeps_proportions_and_is_nested():
    labels = np.repeat([0, 1, 2], [500, 300, 200])
    small = stratified_subset(labels, 0.1, seed=3)
    large = stratified_subset(labels, 0.5, seed=3)
    assert np.bincount(labels[small]).tolist() == [50, 30, 20]
    assert np.bincount(labels[large]).tolist() == [250, 150, 100]
    assert set(small) <= set(large)  # same seed: smaller fraction inside the larger one
    assert not np.array_equal(small, stratified_subset(labels, 0.1, seed=4))
    assert np.array_equal(small, stratified_subset(labels, 0.1, seed=3))
    assert np.array_equal(stratified_subset(labels, 1.0, seed=0), np.arange(1000))


def test_stratified_subset_errors():
    labels = np.repeat([0, 1], [100, 3])
    with pytest.raises(PeprInputError, match="class 1 .*no sample"):
        stratified_subset(labels, 0.1, seed=0)
    for bad in (0.0, -0.5, 1.5):
        with pytest.raises(PeprInputError, match=r"fraction must be in \(0, 1\]"):
            stratified_subset(labels, bad, seed=0)


# ------------------------------------------------------------------ synthetic


def test_synthetic_is_deterministic_and_shaped():
    spec = "synthetic:n_train=60,n_val=20,n_test=30,classes=3,channels=3,size=16,imbalance=3"
    first, second = load_dataset(spec), load_dataset(spec)
    for key in ("train_x", "train_y", "val_x", "test_x", "test_y"):
        assert np.array_equal(getattr(first, key), getattr(second, key))
    assert first.train_x.shape == (60, 3, 16, 16) and first.train_x.dtype == np.uint8
    counts = np.bincount(first.train_y)
    assert counts.sum() == 60 and counts[0] > counts[1] > counts[2]
    assert counts[0] / counts[2] == pytest.approx(3, rel=0.2)
    other_seed = load_dataset(spec + ",seed=1")
    assert not np.array_equal(first.train_x, other_seed.train_x)
    assert "NOT medical data" in first.description


def test_synthetic_classes_differ_but_overlap():
    """The class signal exists (mean images differ) but is not a trivial brightness cue."""
    data = make_synthetic({"n_train": 400})
    x = data.train_x.astype(np.float64).reshape(len(data.train_y), -1)
    brightness = x.mean(axis=1)
    b0, b1 = brightness[data.train_y == 0], brightness[data.train_y == 1]
    # overall brightness alone must not separate the classes
    threshold_accuracy = max(
        np.mean((brightness > t) == (data.train_y == 1)) for t in np.percentile(brightness, range(5, 96, 5))
    )
    assert threshold_accuracy < 0.85
    assert abs(b0.mean() - b1.mean()) > 0  # but the classes are not identical


def test_synthetic_too_small_for_classes():
    with pytest.raises(PeprInputError, match="every class needs a training sample"):
        make_synthetic({"n_train": 2, "classes": 3})


def test_every_spec_resolves_to_one_kind_with_the_whole_interface():
    """One kind object per spec: it parses the spec, names it, says where its file is and whether
    the workflow fetches or converts it; the parsed spec resolves back to the same object."""
    from pepr.datasets.base import DatasetKind
    from pepr.datasets.registry import kind_of

    expected = {
        "pneumoniamnist@64": ("medmnist", True, False),
        "npz:data/mine.npz": ("npz", False, False),
        "folder:data/xrays,size=64": ("folder", False, True),
        "csv:data/manifest.csv": ("csv", False, True),
        "synthetic:size=32": ("synthetic", False, False),
    }
    for spec, (name, fetched, converted) in expected.items():
        kind = kind_of(spec)
        parsed = kind.parse(spec)
        assert isinstance(kind, DatasetKind) and kind_of(parsed) is kind
        assert (kind.name, parsed.kind, kind.fetched, kind.converted) == (name, name, fetched, converted)
        assert kind.short_name(parsed) == dataset_name(spec)
    assert kind_of("npz:a/b/scan.npz").moved_file_stem("npz:a/b/scan.npz") == "scan"
    assert kind_of("pneumoniamnist").moved_file_stem("pneumoniamnist") is None


def test_no_dataset_kind_branch_outside_the_datasets_package():
    """Code outside pepr.datasets asks the kind object; it never compares a spec's kind or prefix."""
    import re

    root = Path(__file__).resolve().parents[1]
    branch = re.compile(
        r"""kind\S*\s*(==|!=|\bin\b)\s*[(\[]?\s*["'](medmnist|npz|synthetic|folder|csv)["']"""
        r"""|startswith\(\s*["'](npz|folder|csv|synthetic):|pepr_images\.KINDS|images\.KINDS"""
    )
    files = [
        p for p in (root / "src" / "pepr").rglob("*.py") if "datasets" not in p.relative_to(root / "src" / "pepr").parts
    ]
    files += (
        list((root / "workflow").rglob("*.smk"))
        + [root / "workflow" / "Snakefile"]
        + list((root / "scripts").glob("*.py"))
    )
    found = [
        f"{p.relative_to(root)}:{n}: {line.strip()}"
        for p in files
        if p.is_file()
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if branch.search(line)
    ]
    assert not found, "dataset-kind branches outside pepr.datasets:\n" + "\n".join(found)
