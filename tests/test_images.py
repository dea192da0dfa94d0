"""pepr.datasets.images: folder:/csv: specs built from real PneumoniaMNIST chest X-rays written as PNGs,
16-bit PNGs and DICOM files; the cache (exact pixels, no rebuild without a change, a rebuild
after a touch); every bad-input case; training through `pepr train` and through the workflow.

The real images come from ../shared (skipped with the reason when absent); the rest is
synthetic and always runs.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pepr.datasets import images
from pepr.datasets.core import dataset_file, dataset_name, dataset_problems, load_dataset, parse_dataset_spec
from pepr.errors import PeprInputError
from shared_data import PNEUMONIA, absent

REPO = Path(__file__).resolve().parents[1]
CLASSES = ("normal", "pneumonia")


@pytest.fixture(scope="module")
def xrays():
    """(images, labels) of 40 real PneumoniaMNIST training images per class (28x28 uint8)."""
    if not PNEUMONIA.is_file():
        pytest.skip(absent(PNEUMONIA))
    with np.load(PNEUMONIA) as archive:
        x, y = archive["train_images"], archive["train_labels"].reshape(-1)
    picked = np.concatenate([np.flatnonzero(y == c)[:40] for c in (0, 1)])
    return x[picked], y[picked]


def write_folder(root: Path, xrays, layout: str = "flat") -> dict[str, np.ndarray]:
    """PNG files of the real images in root/CLASS/ (flat) or root/{train,val,test}/CLASS/ (splits);
    returns {relative path: pixels}."""
    x, y = xrays
    written = {}
    for i, (image, label) in enumerate(zip(x, y)):
        split = ("train", "train", "train", "val", "test")[i % 5] if layout == "splits" else None
        folder = root / split / CLASSES[label] if split else root / CLASSES[label]
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"img{i:03d}.png"
        Image.fromarray(image).save(path)
        written[str(path.relative_to(root))] = image
    return written


def snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """sha256 and mtime of every file under root (the user's files must never change)."""
    return {
        str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def synthetic_images(n: int, size: int = 16, seed: int = 0, channels: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (n, size, size) if channels == 1 else (n, size, size, channels)
    return rng.integers(0, 256, shape, dtype=np.uint8)


def write_classes(root: Path, per_class: int = 6, size: int = 16, classes=("a", "b"), seed: int = 0) -> None:
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i, image in enumerate(synthetic_images(per_class, size, seed=100 * seed + c)):
            Image.fromarray(image).save(root / name / f"{i}.png")


def problems_text(spec: str, data_dir: Path) -> str:
    return "\n".join(dataset_problems(spec, data_dir))


# ------------------------------------------------------------------ spec grammar, names, paths


@pytest.mark.parametrize(
    "spec, name",
    [
        ("folder:data/xrays", "xrays"),
        ("folder:/abs/my xrays/", "my_xrays"),
        ("folder:data/xrays,size=64", "xrays-size64"),
        ("folder:data/xrays,test=0.2,val=0.1", "xrays"),  # defaults leave the name alone
        ("folder:data/xrays,val=0.2,channels=3", "xrays-channels3-val0.2"),
        ("csv:lists/manifest.csv", "manifest"),
        ("csv:lists/manifest.csv,seed=3", "manifest-seed3"),
        ("folder:data/a,b", "a_b"),  # a comma in the path: options are only trailing key=value parts
    ],
)
def test_names(spec, name):
    assert dataset_name(spec) == name


@pytest.mark.parametrize(
    "spec, words",
    [
        ("folder:", "give the folder"),
        ("csv:", "give the CSV file"),
        ("csv:list.txt", ".csv file"),
        ("folder:x,size=4", "size=4 must be in 8..4096"),
        ("folder:x,channels=2", "1 (grey) or 3"),
        ("folder:x,val=1.5", "a ratio in [0, 1)"),
        ("folder:x,val=0.5,test=0.5", "leave no training images"),
        ("folder:x,size=32,size=64", "given twice"),
        ("folder:x,sizes=32", "unknown option 'sizes=32'"),
    ],
)
def test_bad_specs(spec, words):
    with pytest.raises(PeprInputError) as info:
        parse_dataset_spec(spec)
    assert words in str(info.value)


def test_cache_path_is_deterministic_under_data_dir(tmp_path):
    spec = f"folder:{tmp_path / 'xrays'}"
    first = dataset_file(parse_dataset_spec(spec), tmp_path / "data")
    assert first == dataset_file(parse_dataset_spec(spec), tmp_path / "data")
    assert first.parent == tmp_path / "data" / "images" and first.name.startswith("xrays-") and first.suffix == ".npz"
    # other settings, another file; no file is read to name it
    assert dataset_file(parse_dataset_spec(spec + ",size=64"), tmp_path / "data") != first
    assert not (tmp_path / "data").exists()


# ------------------------------------------------------------------ conversion of real images


def test_folder_of_real_xrays_is_converted_pixel_exact(tmp_path, xrays):
    root = tmp_path / "xrays"
    written = write_folder(root, xrays)
    before = snapshot(root)
    spec = f"folder:{root}"
    assert dataset_problems(spec, tmp_path / "data") == []
    path = images.prepare(spec, tmp_path / "data", workers=1)
    assert path == dataset_file(parse_dataset_spec(spec), tmp_path / "data")
    info = images.read_info(path)
    assert info["class_names"] == list(CLASSES) and info["label_order"] == {"0": "normal", "1": "pneumonia"}
    assert info["counts"] == {"train": 56, "val": 8, "test": 16}  # 40 per class: 70/10/20 per class
    assert all(
        counts == {"normal": n // 2, "pneumonia": n // 2}
        for counts, n in zip(info["class_counts"].values(), (56, 8, 16))
    )
    with np.load(path) as archive:
        for split in ("train", "val", "test"):
            stored = archive[f"{split}_images"]
            assert stored.dtype == np.uint8 and stored.shape[1:] == (28, 28)
            for row, relative in enumerate(info["files"][split]):
                np.testing.assert_array_equal(stored[row], written[relative])  # exactly the source pixels
                assert archive[f"{split}_labels"][row, 0] == CLASSES.index(Path(relative).parts[0])
    assert snapshot(root) == before  # the user's files untouched
    assert not any(p.suffix == ".npz" for p in root.rglob("*"))


def test_split_folders_and_a_rerun_without_change_does_not_rebuild(tmp_path, xrays):
    root = tmp_path / "xrays"
    write_folder(root, xrays, layout="splits")
    spec = f"folder:{root}"
    path = images.prepare(spec, tmp_path / "data", workers=1)
    info = images.read_info(path)
    assert info["counts"] == {"train": 48, "val": 16, "test": 16} and info["split_from"] == "listed"
    stamp = path.stat().st_mtime_ns
    assert images.is_current(spec, tmp_path / "data")
    assert images.prepare(spec, tmp_path / "data", workers=1) == path
    assert path.stat().st_mtime_ns == stamp  # nothing changed: not rebuilt
    # touching one image changes the content key: the cache is rebuilt
    touched = next(root.rglob("*.png"))
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))
    assert not images.is_current(spec, tmp_path / "data")
    old_bytes = path.read_bytes()
    images.prepare(spec, tmp_path / "data", workers=1)
    assert path.stat().st_mtime_ns != stamp
    assert path.read_bytes() == old_bytes  # same pixels, same bytes (a content fingerprint holds)
    assert images.read_info(path)["content_key"] != info["content_key"]


def test_csv_manifest_with_relative_and_absolute_paths(tmp_path, xrays):
    root = tmp_path / "xrays"
    written = write_folder(root, xrays)
    manifest = tmp_path / "lists" / "manifest.csv"
    manifest.parent.mkdir()
    with open(manifest, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "split"])
        for i, relative in enumerate(sorted(written)):
            path = f"../xrays/{relative}" if i % 2 else str(root / relative)  # relative to the CSV, or absolute
            writer.writerow([path, Path(relative).parts[0], ("train", "train", "train", "val", "test")[i % 5]])
    spec = f"csv:{manifest}"
    assert dataset_name(spec) == "manifest"
    data = load_dataset(spec, tmp_path / "data")
    assert data.class_names == CLASSES and not data.multi_label
    assert (len(data.train_y), len(data.val_y), len(data.test_y)) == (48, 16, 16)
    assert data.details["counts"] == {"train": 48, "val": 16, "test": 16}


def test_seeded_split_is_stratified_and_recorded(tmp_path, xrays):
    root = tmp_path / "xrays"
    write_folder(root, xrays)
    a = images.read_info(images.prepare(f"folder:{root},val=0.25,test=0.25,seed=1", tmp_path / "d1", workers=1))
    b = images.read_info(images.prepare(f"folder:{root},val=0.25,test=0.25,seed=1", tmp_path / "d2", workers=1))
    c = images.read_info(images.prepare(f"folder:{root},val=0.25,test=0.25,seed=2", tmp_path / "d3", workers=1))
    assert a["files"] == b["files"] and a["files"] != c["files"]
    assert a["counts"] == {"train": 40, "val": 20, "test": 20}
    assert a["split_from"] == "seeded stratified split val=0.25, test=0.25, seed=1"


def test_conversion_in_worker_processes_matches_one_process(tmp_path):
    root = tmp_path / "many"
    write_classes(root, per_class=80, size=20)
    one = images.prepare(f"folder:{root}", tmp_path / "d1", workers=1)
    two = images.prepare(f"folder:{root}", tmp_path / "d2", workers=2)
    with np.load(one) as x, np.load(two) as y:
        for key in x.files:
            np.testing.assert_array_equal(x[key], y[key])


# ------------------------------------------------------------------ formats, channels, size


def test_png_jpeg_tiff_bmp_in_one_folder(tmp_path):
    root = tmp_path / "formats"
    pixels = synthetic_images(16, 12)
    for i, image in enumerate(pixels):
        folder = root / ("a", "b")[i % 2]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i}.{('png', 'jpg', 'tif', 'bmp')[i % 4]}")
    (root / "a" / "notes.txt").write_text("not an image: ignored")
    path = images.prepare(f"folder:{root},val=0.25,test=0.25", tmp_path / "data", workers=1)
    info = images.read_info(path)
    assert info["n_files"] == 16 and info["ignored_files"] == 1
    with np.load(path) as archive:
        for split, files in info["files"].items():
            for row, relative in enumerate(files):
                index = int(Path(relative).stem)
                if not relative.endswith(".jpg"):  # lossless formats: exact pixels
                    np.testing.assert_array_equal(archive[f"{split}_images"][row], pixels[index])


def test_train_and_test_folders_only_carve_val_from_train(tmp_path):
    root = tmp_path / "tt"
    write_classes(root / "train", per_class=10)
    write_classes(root / "test", per_class=3, seed=1)  # other images (identical ones would be a leak)
    info = images.read_info(images.prepare(f"folder:{root},val=0.2", tmp_path / "data", workers=1))
    assert info["counts"] == {"train": 16, "val": 4, "test": 6}


def test_16_bit_png_is_mapped_linearly_by_the_datasets_range(tmp_path):
    root = tmp_path / "deep"
    rng = np.random.default_rng(0)
    written = {}
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for i in range(5):
            values = rng.integers(0, 65536, (12, 12)).astype(np.uint16)
            path = root / name / f"{i}.png"
            Image.fromarray(values).save(path)
            assert Image.open(path).mode.startswith("I")  # really 16-bit on disk
            written[f"{name}/{i}.png"] = values.astype(np.float64)
    low, high = min(v.min() for v in written.values()), max(v.max() for v in written.values())
    expected = {k: np.round((v - low) / (high - low) * 255).astype(np.uint8) for k, v in written.items()}
    path = images.prepare(f"folder:{root},val=0.2,test=0.2", tmp_path / "data", workers=1)
    info = images.read_info(path)
    assert info["intensity"]["bit_depth"] == ["16-bit"] and info["intensity"]["source_range"] == [low, high]
    with np.load(path) as archive:
        for split, files in info["files"].items():
            for row, relative in enumerate(files):
                np.testing.assert_array_equal(archive[f"{split}_images"][row], expected[relative])


def write_dicom(
    path: Path, raw: np.ndarray, slope=1.0, intercept=0.0, center=None, width=None, photometric="MONOCHROME2"
):
    pydicom = pytest.importorskip("pydicom", reason="pydicom (the 'dicom' extra) is not installed")
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.Rows, ds.Columns = raw.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if center is not None:
        ds.WindowCenter, ds.WindowWidth = center, width
    ds.PixelData = raw.astype("<u2").tobytes()
    ds.save_as(path, enforce_file_format=True)
    del pydicom


def test_dicom_rescale_and_window_are_applied(tmp_path):
    root = tmp_path / "ct"
    # raw r -> HU = 2 r - 1024; window 40/400 (soft tissue): HU <= -160 -> 0, > 239 -> 255
    raw = np.full((16, 16), 512, np.uint16)  # HU 0
    raw[0, :] = 0  # HU -1024 -> 0
    raw[1, :] = 2000  # HU 2976 -> 255
    raw[2, :] = 532  # HU 40, the window centre -> ((40 - 39.5) / 399 + 0.5) * 255 = 127.8 -> 128
    for name in ("lesion", "normal"):
        (root / name).mkdir(parents=True)
        for i in range(5):
            write_dicom(root / name / f"{i}.dcm", raw, slope=2.0, intercept=-1024.0, center=40, width=400)
    (root / "normal" / "noext").write_bytes((root / "normal" / "0.dcm").read_bytes())  # DICOM without an ending
    path = images.prepare(f"folder:{root},val=0.2,test=0.2", tmp_path / "data", workers=1)
    with np.load(path) as archive:
        image = archive["train_images"][0]
    assert image[0, 0] == 0 and image[1, 0] == 255 and image[2, 0] == 128
    assert image[5, 5] == round(((0 - 39.5) / 399 + 0.5) * 255)
    assert images.read_info(path)["n_files"] == 11


def test_resize_with_antialiasing_and_channel_conversion(tmp_path, xrays):
    root = tmp_path / "xrays"
    written = write_folder(root, xrays)
    path = images.prepare(f"folder:{root},size=16,channels=3", tmp_path / "data", workers=1)
    info = images.read_info(path)
    with np.load(path) as archive:
        stored = archive["train_images"]
    assert stored.shape[1:] == (16, 16, 3) and info["size"] == 16 and info["channels"] == 3
    source = (
        Image.fromarray(written[info["files"]["train"][0]]).convert("RGB").resize((16, 16), Image.Resampling.LANCZOS)
    )
    np.testing.assert_array_equal(stored[0], np.asarray(source))


def test_mixed_channels_need_channels_option(tmp_path):
    root = tmp_path / "mixed"
    write_classes(root)
    Image.fromarray(synthetic_images(1, 16, channels=3)[0]).save(root / "a" / "colour.png")
    text = problems_text(f"folder:{root}", tmp_path / "data")
    assert "mixed channels: 12 grey and 1 colour" in text and "channels=1" in text and "colour.png" in text
    assert dataset_problems(f"folder:{root},channels=1", tmp_path / "data") == []
    assert dataset_problems(f"folder:{root},channels=3", tmp_path / "data") == []


def test_different_sizes_need_size_option(tmp_path):
    root = tmp_path / "sizes"
    write_classes(root, size=16)
    Image.fromarray(synthetic_images(1, 20)[0]).save(root / "b" / "big.png")
    assert "add size=N" in problems_text(f"folder:{root}", tmp_path / "data")
    assert dataset_problems(f"folder:{root},size=16", tmp_path / "data") == []


# ------------------------------------------------------------------ bad input, all at once


def test_unreadable_and_truncated_images_listed_first_20_then_count(tmp_path):
    root = tmp_path / "broken"
    write_classes(root, per_class=20)
    good = (root / "a" / "0.png").read_bytes()
    for i in range(25):
        (root / "b" / f"cut{i:02d}.png").write_bytes(good[: len(good) // 2])  # truncated
    (root / "a" / "junk.png").write_bytes(b"not an image at all")  # unreadable
    (problem,) = [p for p in dataset_problems(f"folder:{root}", tmp_path / "data") if "unreadable, damaged" in p]
    assert "26 unreadable, damaged or truncated images" in problem
    assert sum(".png: " in line for line in problem.splitlines()) == 20  # the first 20 files, then a count
    assert "and 6 more files (the first 20 are listed)" in problem
    text = problem
    assert "replace or remove" in text


def test_every_problem_is_listed_at_once(tmp_path):
    root = tmp_path / "many_problems"
    write_classes(root)
    (root / "empty_class").mkdir()
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(root / "a" / "tiny.png")
    (root / "b" / "cut.png").write_bytes((root / "a" / "0.png").read_bytes()[:60])
    text = problems_text(f"folder:{root}", tmp_path / "data")
    assert "empty_class: empty class folder" in text
    assert "tiny.png: 5x5 px is under 8 px" in text
    assert "cut.png: cannot be decoded" in text


def test_empty_split(tmp_path):
    root = tmp_path / "s"
    write_classes(root, per_class=4)
    assert "the val split is empty" in problems_text(f"folder:{root},val=0", tmp_path / "data")
    split_root = tmp_path / "splits"
    write_classes(split_root / "train")
    write_classes(split_root / "test")
    (split_root / "val").mkdir()
    assert "split folder" in problems_text(f"folder:{split_root}", tmp_path / "data")
    assert "no class folders" in problems_text(f"folder:{split_root}", tmp_path / "data")


def test_class_not_in_the_class_list(tmp_path):
    root = tmp_path / "splits"
    write_classes(root / "train")
    write_classes(root / "val")
    write_classes(root / "test", classes=("a", "b", "c"))
    text = problems_text(f"folder:{root}", tmp_path / "data")
    assert "class 'c' is not in the class list" in text and "rename it" in text


def write_manifest(path: Path, rows, header=("path", "label", "split")) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_csv_label_not_in_class_list_missing_path_and_duplicate_split(tmp_path):
    root = tmp_path / "imgs"
    write_classes(root)
    rows = [[f"imgs/{c}/{i}.png", c, "train"] for c in "ab" for i in range(4)]
    rows += [
        ["imgs/a/4.png", "a", "val"],
        ["imgs/b/4.png", "b", "val"],
        ["imgs/a/5.png", "a", "test"],
        ["imgs/b/5.png", "zebra", "test"],
    ]
    rows += [["imgs/a/missing.png", "a", "train"], ["imgs/a/0.png", "a", "test"]]
    manifest = write_manifest(tmp_path / "m.csv", rows)
    text = problems_text(f"csv:{manifest}", tmp_path / "data")
    assert "label 'zebra' (test split) is not in the class list of the train split (a, b)" in text
    assert "missing.png does not exist" in text and "line 14" in text
    assert "in split train (line 2) and test (line 15); a file may be in one split only" in text


def test_identical_files_in_two_split_folders(tmp_path):
    root = tmp_path / "leak"
    write_classes(root / "train")
    write_classes(root / "val", per_class=2, seed=1)
    write_classes(root / "test", per_class=2, seed=2)
    (root / "test" / "a" / "copy.png").write_bytes((root / "train" / "a" / "3.png").read_bytes())
    spec = f"folder:{root}"
    assert problems_text(spec, tmp_path / "data") == ""  # a warning, not a problem
    logged = []
    path = images.prepare(spec, tmp_path / "data", workers=1, log=logged.append)
    info = images.read_info(path)
    assert info["duplicates"]["count"] == 1 and info["counts"]["train"] == 12
    (group,) = info["duplicates"]["groups"]
    assert sorted(row[1] for row in group) == ["test", "train"] and ["test/a/copy.png", "test", "a"] in group
    assert any("warning: 1 group(s) of identical images" in line for line in logged)
    assert any("copy.png (test, a)" in line for line in logged)
    dropped = images.read_info(images.prepare(spec + ",dedupe=drop-train", tmp_path / "data", workers=1))
    assert dropped["counts"]["train"] == 11 and dropped["dedupe"] == {
        "option": "drop-train",
        "dropped": ["train/a/3.png"],
    }


def test_single_class(tmp_path):
    root = tmp_path / "one"
    write_classes(root, classes=("only",))
    assert "a single class (only); classification needs at least 2" in problems_text(
        f"folder:{root}", tmp_path / "data"
    )


def test_missing_folder_csv_and_data_dir_inside_the_images(tmp_path):
    assert "folder not found" in problems_text(f"folder:{tmp_path / 'nope'}", tmp_path / "data")
    assert "CSV file not found" in problems_text(f"csv:{tmp_path / 'nope.csv'}", tmp_path / "data")
    root = tmp_path / "imgs"
    write_classes(root)
    assert "pepr never writes into your image folder" in problems_text(f"folder:{root}", root / "data")


def test_pepr_train_exits_2_before_training_and_leaves_no_run_folder(tmp_path):
    from pepr.cli import main

    root = tmp_path / "bad"
    write_classes(root, classes=("only",))
    err = io.StringIO()
    with redirect_stdout(io.StringIO()), redirect_stderr(err):
        code = main(
            [
                "train",
                "--model",
                "test_resnet",
                "--dataset",
                f"folder:{root}",
                "--out",
                str(tmp_path / "run"),
                "--data-dir",
                str(tmp_path / "data"),
            ]
        )
    assert code == 2, err.getvalue()
    assert "a single class" in err.getvalue() and "Traceback" not in err.getvalue()
    assert not (tmp_path / "run").exists()
    assert not any((tmp_path / "data").rglob("*.npz")) if (tmp_path / "data").exists() else True


# ------------------------------------------------------------------ training


@pytest.mark.slow
def test_pepr_train_on_real_xrays_as_png_16_bit_png_and_dicom(tmp_path, xrays):
    from pepr.train.run import TrainConfig, run_training

    root = tmp_path / "xrays"
    write_folder(root, xrays)
    before = snapshot(root)
    out = tmp_path / "run"
    metrics = run_training(
        TrainConfig(
            model="test_resnet",
            dataset=f"folder:{root}",
            out_dir=out,
            epochs=1,
            batch_size=16,
            data_dir=tmp_path / "data",
            threads=1,
        ),
        log=lambda message: None,
    )
    assert (
        metrics["status"] == "ok"
        and metrics["dataset_name"] == "xrays"
        and metrics["class_names"] == "normal; pneumonia"
    )
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["dataset_info"]["counts"] == {"train": 56, "val": 8, "test": 16}
    assert saved["dataset_info"]["class_names"] == list(CLASSES)
    assert 0 <= saved["test_accuracy"] <= 1 and saved["n_train"] == 56
    assert snapshot(root) == before

    # the same X-rays as 16-bit PNGs and as DICOM (HU = 4 r - 1000, a stored window): both train
    x, y = xrays
    deep, ct = tmp_path / "deep", tmp_path / "ct"
    for i, (image, label) in enumerate(zip(x, y)):
        for folder in (deep / CLASSES[label], ct / CLASSES[label]):
            folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image.astype(np.uint16) * 257).save(deep / CLASSES[label] / f"{i}.png")
        write_dicom(
            ct / CLASSES[label] / f"{i}.dcm",
            image.astype(np.uint16) * 4,
            slope=4.0,
            intercept=-1000.0,
            center=3000,
            width=4000,
        )
    for folder in (deep, ct):
        before = snapshot(folder)
        metrics = run_training(
            TrainConfig(
                model="test_resnet",
                dataset=f"folder:{folder}",
                out_dir=tmp_path / f"run-{folder.name}",
                epochs=1,
                batch_size=16,
                data_dir=tmp_path / "data",
                threads=1,
            ),
            log=lambda message: None,
        )
        assert metrics["status"] == "ok" and metrics["n_train"] == 56 and metrics["channels"] == 1, folder
        assert snapshot(folder) == before
    with np.load(images.cache_path(f"folder:{deep}", tmp_path / "data")) as archive:
        assert (
            archive["train_images"].dtype == np.uint8 and archive["train_images"].max() > 200
        )  # 16-bit range mapped to 0..255


# ------------------------------------------------------------------ through the workflow (slow)


def _snakemake(workdir: Path, config: Path, *args: str) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(config),
        *args,
    ]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_workflow_sweeps_folder_multilabel_csv_and_chestmnist(tmp_path, xrays):
    """One small .test-style sweep: real X-ray PNG folder, a multi-label CSV and a
    chestmnist-layout npz -> prepare_images -> train_model -> runs.csv and pepr.csv rows."""
    import pandas as pd
    import yaml

    from test_multilabel import write_multilabel_csv, write_multilabel_npz

    work = tmp_path / "work"
    (work / "data").mkdir(parents=True)
    xray_root = tmp_path / "xrays"
    write_folder(xray_root, xrays)
    before = snapshot(xray_root)
    manifest = write_multilabel_csv(tmp_path / "findings")
    write_multilabel_npz(work / "data" / "chestmnist.npz", labels=14)
    config = {
        "models": ["test_resnet"],
        "datasets": [f"folder:{xray_root}", f"csv:{manifest}", "chestmnist"],
        "inits": ["scratch"],
        "fractions": [1.0],
        "seeds": [0],
        "epochs": 1,
        "batch_size": 16,
        "device": "cpu",
        "data_dir": "data",
        "resources": {
            kind: {"cpus": 1, "gpu": 0, "mem_mb": 2000, "runtime": 10} for kind in ("train", "pretrain", "default")
        },
    }
    config_file = tmp_path / "images.yaml"
    config_file.write_text(yaml.safe_dump(config))
    result = _snakemake(work, config_file, "--cores", "2", "results/pepr.csv")
    assert result.returncode == 0, result.stderr[-5000:]
    runs = pd.read_csv(work / "results" / "runs.csv")
    assert sorted(runs["dataset"]) == ["chestmnist", "findings", "xrays"]
    assert (runs["status"] == "ok").all(), runs[["dataset", "reason"]]
    by_name = runs.set_index("dataset")
    assert by_name.loc["xrays", "class_names"] == "normal; pneumonia"
    assert by_name.loc["findings", "task"] == "multi-label" and by_name.loc["chestmnist", "task"] == "multi-label"
    scored = pd.read_csv(work / "results" / "pepr.csv")
    assert scored["pepr_energy_kwh"].notna().all() and len(scored) == 3
    caches = sorted((work / "data" / "images").glob("*.npz"))
    assert [p.name.split("-")[0] for p in caches] == ["findings", "xrays"]
    assert snapshot(xray_root) == before

    # nothing changed: nothing to do; touching one image re-converts that dataset (and its cells)
    dry = _snakemake(work, config_file, "-n", "--cores", "2", "results/pepr.csv")
    assert dry.returncode == 0 and "Nothing to be done" in dry.stdout + dry.stderr, dry.stdout[-3000:]
    stamp = caches[1].stat().st_mtime_ns
    touched = next(xray_root.rglob("*.png"))
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))
    dry = _snakemake(work, config_file, "-n", "--cores", "2", "results/pepr.csv")
    assert dry.returncode == 0 and "prepare_images" in dry.stdout + dry.stderr
    assert caches[1].stat().st_mtime_ns == stamp  # a dry run converts nothing

    # a bad image stops planning with the same message pepr train gives, results kept
    (xray_root / "normal" / "cut.png").write_bytes(touched.read_bytes()[:40])
    dry = _snakemake(work, config_file, "-n", "--cores", "2", "results/pepr.csv")
    assert dry.returncode != 0
    assert "cut.png: not a readable image" in dry.stderr and "replace or remove it" in dry.stderr, dry.stderr[-3000:]
    with pytest.raises(PeprInputError) as info:  # the same message from pepr train's own check
        load_dataset(f"folder:{xray_root}", work / "data")
    assert "cut.png: not a readable image" in str(info.value)
    assert (work / "results" / "runs" / "xrays").is_dir()


def test_estimate_reads_folder_facts_without_converting(tmp_path):
    from pepr.estimate.jobs import dataset_facts

    root = tmp_path / "imgs"
    write_classes(root, per_class=10)
    facts = dataset_facts(f"folder:{root}", tmp_path / "data")
    assert (facts.n_train, facts.n_val, facts.n_test) == (14, 2, 4)
    assert (facts.channels, facts.num_classes, facts.stored_size, facts.train_class_counts) == (1, 2, 16, (7, 7))
    assert not (tmp_path / "data" / "images").exists() or not any((tmp_path / "data" / "images").glob("*.npz"))


# ------------------------------------------------------------------ full fidelity (bit depth, windows, fit, leftovers)


def test_12_bit_png_folder_of_real_xrays_keeps_its_grey_levels(tmp_path, xrays):
    """12-bit values in 16-bit PNGs (0..4095, no sBIT): mapped by the data's range, not /257."""
    x, y = xrays
    root = tmp_path / "xr12"
    rng = np.random.default_rng(1)
    sources = {}
    for i, (image, label) in enumerate(zip(x, y)):
        values = np.clip(image.astype(np.int32) * 16 + rng.integers(0, 16, image.shape), 0, 4095).astype(np.uint16)
        folder = root / CLASSES[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(values).save(folder / f"{i:03d}.png")
        sources[f"{CLASSES[label]}/{i:03d}.png"] = values
    path = images.prepare(f"folder:{root}", tmp_path / "data", workers=1)
    info = images.read_info(path)
    with np.load(path) as archive:
        pairs = [
            (archive[f"{split}_images"][row], sources[rel])
            for split, files in info["files"].items()
            for row, rel in enumerate(files)
        ]
    converted = np.concatenate([c.ravel() for c, _ in pairs]).astype(np.float64)
    source = np.concatenate([s.ravel() for _, s in pairs]).astype(np.float64)
    assert len(np.unique(converted)) >= 200
    assert np.corrcoef(converted, source)[0, 1] >= 0.99
    assert info["intensity"]["bit_depth"] == ["16-bit"] and "min..max" in info["intensity"]["mapping"]


def test_png_sbit_gives_the_range(tmp_path):
    """A PNG that declares 12 significant bits maps 0..4095 onto 0..255, whatever its data uses."""
    root = tmp_path / "sbit"
    for c, name in enumerate(("a", "b")):
        (root / name).mkdir(parents=True)
        for i in range(5):
            values = np.full((12, 12), 1000 * (c + 1), np.uint16)
            buffer = io.BytesIO()
            Image.fromarray(values).save(buffer, format="PNG")
            data = buffer.getvalue()
            chunk = b"sBIT" + bytes([12])
            import zlib

            sbit = len(chunk[4:]).to_bytes(4, "big") + chunk + zlib.crc32(chunk).to_bytes(4, "big")
            (root / name / f"{i}.png").write_bytes(data[:33] + sbit + data[33:])  # after IHDR
    path = images.prepare(f"folder:{root},val=0.2,test=0.2", tmp_path / "data", workers=1)
    info = images.read_info(path)
    assert info["intensity"]["source_range"] == [0.0, 4095.0] and "sBIT" in info["intensity"]["mapping"]
    with np.load(path) as archive:
        assert set(np.unique(archive["train_images"])) <= {round(1000 / 4095 * 255), round(2000 / 4095 * 255)}


def test_float_tiff_in_hounsfield_units_maps_the_window_asked(tmp_path):
    root = tmp_path / "ct"
    hu = np.linspace(-1000, 1040, 144, dtype=np.float32).reshape(12, 12)
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for i in range(5):
            Image.fromarray(hu + i).save(root / name / f"{i}.tif")
    assert Image.open(root / "a" / "0.tif").mode == "F"
    path = images.prepare(f"folder:{root},val=0.2,test=0.2,window=-160:240", tmp_path / "data", workers=1)
    info = images.read_info(path)
    assert info["intensity"]["source_range"] == [-160.0, 240.0] and info["intensity"]["bit_depth"] == ["float"]
    with np.load(path) as archive:
        for split, files in info["files"].items():
            for row, relative in enumerate(files):
                shift = int(Path(relative).stem)
                expected = np.round(np.clip((hu.astype(np.float64) + shift + 160) / 400 * 255, 0, 255))
                np.testing.assert_array_equal(archive[f"{split}_images"][row], expected)


@pytest.mark.parametrize("fit", ["squash", "pad", "crop"])
def test_fit_keeps_or_squashes_the_aspect_ratio(tmp_path, fit):
    root = tmp_path / "wide"
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for i in range(5):
            Image.fromarray(np.full((16, 32), 200, np.uint8)).save(root / name / f"{i}.png")  # 32 wide, 16 high
    spec = f"folder:{root},val=0.2,test=0.2,size=16" + ("" if fit == "squash" else f",fit={fit}")
    path = images.prepare(spec, tmp_path / "data", workers=1)
    with np.load(path) as archive:
        image = archive["train_images"][0]
    assert images.read_info(path)["fit"] == fit
    if fit == "pad":  # the whole image, 8 rows high, centred on black
        assert image[:4].max() == 0 and image[-4:].max() == 0 and image[4:12].min() == 200
    else:
        assert image.min() == 200


def test_fifo_in_an_image_folder_is_refused_within_seconds(tmp_path):
    root = tmp_path / "fifo"
    write_classes(root)
    os.mkfifo(root / "a" / "x.png")
    os.mkfifo(root / "b" / "noext")
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            f"from pepr.datasets.core import dataset_problems; print(dataset_problems('folder:{root}', '{tmp_path / 'data'}'))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "x.png is a FIFO" in proc.stdout and "noext is a FIFO" in proc.stdout


def test_5000_px_images_are_refused_from_their_headers_naming_size(tmp_path):
    root = tmp_path / "huge"
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for i in range(2):
            Image.new("L", (5000, 5000), 10 * i).save(root / name / f"{i}.png")
    text = problems_text(f"folder:{root}", tmp_path / "data")
    assert "over 4096 px a side; add size=N" in text and "5000x5000" in text
    assert not (tmp_path / "data" / "images").exists() or not list((tmp_path / "data" / "images").iterdir())


def test_multi_frame_tiff_needs_a_frame_option(tmp_path):
    root = tmp_path / "frames"
    for c, name in enumerate(("a", "b")):
        (root / name).mkdir(parents=True)
        for i in range(5):
            frames = [Image.fromarray(np.full((12, 12), 50 * k + c, np.uint8)) for k in range(3)]
            frames[0].save(root / name / f"{i}.tif", save_all=True, append_images=frames[1:])
    assert "multi-frame images; add frame=K" in problems_text(f"folder:{root}", tmp_path / "data")
    path = images.prepare(f"folder:{root},frame=2,val=0.2,test=0.2", tmp_path / "data", workers=1)
    with np.load(path) as archive:
        assert set(np.unique(archive["train_images"])) <= {100, 101}


def test_killed_conversions_temp_file_is_removed_and_a_rejected_spec_leaves_no_lock(tmp_path):
    root = tmp_path / "ok"
    write_classes(root)
    spec = f"folder:{root},val=0.2,test=0.2"
    target = images.cache_path(spec, tmp_path / "data")
    target.parent.mkdir(parents=True)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    ).stdout.strip()
    stale = target.with_name(f".{target.name}.{dead}.tmp")
    stale.write_bytes(b"x" * 1000)
    images.prepare(spec, tmp_path / "data", workers=1)
    assert not stale.exists()
    bad = tmp_path / "bad"
    write_classes(bad, classes=("only",))
    with pytest.raises(PeprInputError):
        images.prepare(f"folder:{bad}", tmp_path / "data", workers=1)
    assert not list(target.parent.glob(f".{images.cache_path(f'folder:{bad}', tmp_path / 'data').name}.lock"))


def test_planning_fingerprint_follows_the_image_contents(tmp_path):
    """Planning's fingerprint of a converted folder: the converted file's digest while it was
    made from the files as they are (also for records written before they held a source digest),
    the sources' digest as soon as a file's content changes (a touch changes nothing)."""
    root = tmp_path / "fp"
    write_classes(root)
    spec, data = f"folder:{root},val=0.2,test=0.2", tmp_path / "data"
    target = images.prepare(spec, data, workers=1)

    def file_digest(path):
        return "npz:" + hashlib.sha256(Path(path).read_bytes()).hexdigest()

    converted = file_digest(target)
    assert images.planned_digest(spec, data, file_digest) == converted
    image = root / "a" / "0.png"
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10**9))
    assert images.planned_digest(spec, data, file_digest) == converted  # same content
    Image.fromarray(synthetic_images(1, seed=99)[0]).save(image)
    changed = images.planned_digest(spec, data, file_digest)
    assert changed.startswith("sources:") and changed != converted
    target = images.prepare(spec, data, workers=1)
    assert images.planned_digest(spec, data, file_digest) == file_digest(target) != converted
    record = images.read_info(target)
    del record["source_digest"]  # a record from before: decided by its stat key
    images.info_path(target).write_text(json.dumps(record))
    assert images.planned_digest(spec, data, file_digest) == file_digest(target)


@pytest.mark.slow
def test_workflow_retrains_an_edited_folder_in_the_first_run(tmp_path, xrays):
    """Editing an image of a finished sweep re-converts the folder and retrains its cell in the
    same run; the run after plans nothing."""
    import yaml

    work = tmp_path / "work"
    (work / "data").mkdir(parents=True)
    root = tmp_path / "xr"
    write_folder(root, (xrays[0][::4], xrays[1][::4]))
    config = {
        "models": ["test_resnet"],
        "datasets": [f"folder:{root}"],
        "inits": ["scratch"],
        "fractions": [1.0],
        "seeds": [0],
        "epochs": 1,
        "batch_size": 8,
        "device": "cpu",
        "data_dir": "data",
        "resources": {
            kind: {"cpus": 1, "gpu": 0, "mem_mb": 2000, "runtime": 10} for kind in ("train", "pretrain", "default")
        },
    }
    config_file = tmp_path / "edit.yaml"
    config_file.write_text(yaml.safe_dump(config))
    first = _snakemake(work, config_file, "--cores", "1", "results/runs.csv")
    assert first.returncode == 0, first.stderr[-5000:]
    (metrics,) = (work / "results" / "runs").glob("*/scratch/*/test_resnet/seed0/metrics.json")
    before = json.loads(metrics.read_text())
    edited = next(root.rglob("*.png"))
    Image.fromarray(255 - np.asarray(Image.open(edited))).save(edited)
    second = _snakemake(work, config_file, "--cores", "1", "results/runs.csv")
    assert second.returncode == 0, second.stderr[-5000:]
    assert "prepare_images" in second.stderr and "train_model" in second.stderr
    after = json.loads(metrics.read_text())
    assert after["training_identity"]["data_sha256"] != before["training_identity"]["data_sha256"]
    dry = _snakemake(work, config_file, "-n", "--cores", "1", "results/runs.csv")
    assert dry.returncode == 0 and "Nothing to be done" in dry.stdout + dry.stderr, dry.stdout[-3000:]


def test_training_refuses_images_changed_under_a_running_sweep(tmp_path):
    """A cache the workflow made is never re-converted by a training job: a content change
    mid-sweep fails in one line; a cache pepr train made itself is converted again as before."""
    from pepr.datasets.registry import kind_of

    root = tmp_path / "sweep"
    write_classes(root)
    spec, data = f"folder:{root},val=0.2,test=0.2", tmp_path / "data"
    target = images.prepare(spec, data, workers=1, by_workflow=True)
    kind = kind_of(spec)
    assert kind.prepare_problems(spec, data, 1) == []
    Image.fromarray(synthetic_images(1, seed=7)[0]).save(root / "b" / "2.png")
    (line,) = kind.prepare_problems(spec, data, 1)
    assert "changed after the workflow converted them" in line and "run the workflow again" in line and "\n" not in line
    assert images.read_info(target)["converted_by"] == "workflow"
    images.prepare(spec, data, workers=1)  # by hand: converted again, and recorded as such
    Image.fromarray(synthetic_images(1, seed=8)[0]).save(root / "b" / "2.png")
    assert kind.prepare_problems(spec, data, 1) == []


@pytest.mark.slow
def test_real_pneumoniamnist_with_cross_split_duplicates_trains_with_a_warning(tmp_path):
    """PneumoniaMNIST's own splits hold byte-identical images; exported as split folders they
    train (with a warning, recorded in dataset_info), and dedupe=drop-train drops the train copies."""
    from pepr.train.run import TrainConfig, run_training

    if not PNEUMONIA.is_file():
        pytest.skip(absent(PNEUMONIA))
    with np.load(PNEUMONIA) as archive:
        arrays = {
            split: (archive[f"{split}_images"], archive[f"{split}_labels"].reshape(-1))
            for split in ("train", "val", "test")
        }
    seen: dict[bytes, str] = {}
    leaks = []  # (split, index) of images whose bytes are in another split too
    for split, (x, _) in arrays.items():
        for i, image in enumerate(x):
            key = image.tobytes()
            if key in seen and seen[key] != split:
                leaks.append((split, i))
            seen.setdefault(key, split)
    assert leaks, "PneumoniaMNIST is expected to hold identical images across its splits"
    root = tmp_path / "pneumonia"
    for split, (x, y) in arrays.items():
        keep = set(np.concatenate([np.flatnonzero(y == c)[:24] for c in (0, 1)]).tolist())
        keep |= {i for s, i in leaks if s == split}
        keep |= {
            int(np.flatnonzero((x == arrays[s][0][i]).all(axis=(1, 2)))[0])
            for s, i in leaks
            if (x == arrays[s][0][i]).all(axis=(1, 2)).any()
        }
        for i in sorted(keep):
            folder = root / split / CLASSES[y[i]]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(x[i]).save(folder / f"{i:04d}.png")
    logged = []
    metrics = run_training(
        TrainConfig(
            model="test_resnet",
            dataset=f"folder:{root}",
            out_dir=tmp_path / "run",
            epochs=1,
            batch_size=16,
            data_dir=tmp_path / "data",
            threads=1,
        ),
        log=logged.append,
    )
    assert metrics["status"] == "ok"
    info = json.loads((tmp_path / "run" / "metrics.json").read_text())["dataset_info"]
    assert info["duplicates"]["count"] >= 1 and info["dedupe"]["dropped"] == []
    assert any("identical images in more than one split" in line for line in logged)
    dedup = run_training(
        TrainConfig(
            model="test_resnet",
            dataset=f"folder:{root},dedupe=drop-train",
            out_dir=tmp_path / "run2",
            epochs=1,
            batch_size=16,
            data_dir=tmp_path / "data",
            threads=1,
        ),
        log=lambda message: None,
    )
    assert dedup["status"] == "ok" and dedup["n_train"] < metrics["n_train"]


def test_same_image_in_two_classes_of_one_split_is_flagged(tmp_path):
    root = tmp_path / "classes"
    write_classes(root)
    (root / "b" / "copy.png").write_bytes((root / "a" / "1.png").read_bytes())
    info = images.read_info(images.prepare(f"folder:{root},val=0.2,test=0.2", tmp_path / "data", workers=1))
    assert info["duplicates"]["count"] == 1
    (group,) = info["duplicates"]["groups"]
    assert sorted(row[2] for row in group) == ["a", "b"] and info["dedupe"]["dropped"] == []
