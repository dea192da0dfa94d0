"""``npz:PATH`` datasets: any file in the MedMNIST npz layout, checked from its headers and labels
before any image is read. The reading and checking here serve every kind whose data is such a
file (MedMNIST flags, converted image folders).
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pepr.datasets.base import SAFE_NAME, SPLITS, DatasetKind, DatasetSpec, ImageData, facts_dict
from pepr.errors import PeprInputError


def npz_headers(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shapes and dtypes of every array in an .npz (name without ``.npy``), from the .npy
    headers only: no array data is read, so it is instant even for large image files."""
    return _npz_headers(path)


def _npz_headers(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shapes and dtypes of every array in an .npz, from the .npy headers (no array data read)."""
    headers: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    with zipfile.ZipFile(path) as archive:
        for member in archive.namelist():
            if not member.endswith(".npy"):
                continue
            try:
                with archive.open(member) as handle:
                    version = np.lib.format.read_magic(handle)
                    if version == (1, 0):
                        shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
                    else:
                        shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
            # numpy parses the header text with ast.literal_eval: a damaged header raises
            # SyntaxError, tokenize.TokenError, RecursionError... rather than ValueError. Any
            # failure to parse these untrusted bytes is reported as one unreadable member.
            except Exception as exc:  # noqa: BLE001 - re-raised as ValueError with the member named
                raise ValueError(f"array {member!r} has a damaged .npy header ({type(exc).__name__}: {exc})") from exc
            headers[member[: -len(".npy")]] = (tuple(shape), np.dtype(dtype))
    return headers


def npz_problems(path: Path, expected_classes: int | None = None, expected_channels: int | None = None) -> list[str]:
    """Every problem with a MedMNIST-layout npz file (empty list: it is usable).

    Checks presence of all six arrays, image rank/channels/size consistency, dtypes, row counts,
    and labels (integer, single-label, in ``0..K-1``, every class present in train). Reads only
    the array headers and the labels, so it is fast even for 224 px files.
    """
    path = Path(path)
    where = f"{path}"
    if not path.exists():
        return [f"{where}: file not found"]
    from pepr.datasets import npzcheck
    from pepr.files import file_kind_problem

    kind = file_kind_problem(path, "data file")  # a FIFO would block the read, a folder is no npz
    if kind:
        return [kind]
    try:
        headers = _npz_headers(path)
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        return [f"{where}: not a readable .npz file ({exc})"]
    problems: list[str] = npzcheck.header_limit_problems(where, headers)  # before anything is allocated
    if problems:
        return problems
    needed = [f"{split}_{what}" for split in SPLITS for what in ("images", "labels")]
    missing = [key for key in needed if key not in headers]
    if missing:
        problems.append(f"{where}: missing arrays {', '.join(missing)} (the MedMNIST layout needs {', '.join(needed)})")
    image_geometry: set[tuple[int, ...]] = set()
    for split in SPLITS:
        key = f"{split}_images"
        if key not in headers:
            continue
        shape, dtype = headers[key]
        if len(shape) not in (3, 4):
            problems.append(f"{where}: {key} has shape {shape}; expected (N, H, W) or (N, H, W, C)")
            continue
        if len(shape) == 4 and shape[3] not in (1, 3):
            problems.append(f"{where}: {key} has {shape[3]} channels in its last axis; expected 1 or 3 (N, H, W, C)")
        if shape[0] == 0:
            problems.append(f"{where}: {key} is empty")
        if min(shape[1:3]) < 1:
            problems.append(f"{where}: {key} has an empty image size {shape[1:3]}")
        if not (dtype == np.uint8 or np.issubdtype(dtype, np.floating)):
            problems.append(f"{where}: {key} has dtype {dtype}; expected uint8 (0-255) or a float type")
        image_geometry.add(tuple(shape[1:]) if len(shape) == 4 else tuple(shape[1:]) + (1,))
        labels_key = f"{split}_labels"
        if labels_key in headers:
            label_shape, label_dtype = headers[labels_key]
            if len(label_shape) not in (1, 2) or (len(label_shape) == 2 and label_shape[1] < 1):
                problems.append(
                    f"{where}: {labels_key} has shape {label_shape}; expected (N,) or (N, 1) "
                    "(one class index per image), or (N, L) 0/1 rows for L labels (multi-label)"
                )
            if label_shape and label_shape[0] != shape[0]:
                problems.append(f"{where}: {key} has {shape[0]} rows but {labels_key} has {label_shape[0]}")
            if not (np.issubdtype(label_dtype, np.integer) or np.issubdtype(label_dtype, np.floating)):
                problems.append(f"{where}: {labels_key} has dtype {label_dtype}; expected integers")
    if len(image_geometry) > 1:
        problems.append(f"{where}: the splits have different image shapes (H, W, C): {sorted(image_geometry)}")
    if len(image_geometry) == 1 and expected_channels is not None:
        (geometry,) = image_geometry
        if geometry[2] != expected_channels:
            problems.append(f"{where}: images have {geometry[2]} channels; this dataset has {expected_channels}")
    if problems:
        return problems
    label_widths = {
        headers[f"{split}_labels"][0][1] if len(headers[f"{split}_labels"][0]) == 2 else 1 for split in SPLITS
    }
    if len(label_widths) > 1:
        return [
            f"{where}: the splits' label arrays have different widths {sorted(label_widths)}; single-label files hold "
            "(N,) or (N, 1) class indices, multi-label files (N, L) 0/1 rows with the same L in every split"
        ]
    (width,) = label_widths
    if width > 1:
        return _multilabel_problems(path, where, width, expected_classes)
    # Labels are small: read them to check their values.
    with np.load(path, allow_pickle=False) as archive:
        labels = {split: np.asarray(archive[f"{split}_labels"]).reshape(-1) for split in SPLITS}
    for split, values in labels.items():
        if np.issubdtype(values.dtype, np.floating) and not np.all(np.isfinite(values) & (values == np.round(values))):
            problems.append(f"{where}: {split}_labels has non-integer values; expected class indices 0..K-1")
    if problems:
        return problems
    all_labels = np.concatenate(list(labels.values()))
    too_large = npzcheck.label_limit_problem(where, int(all_labels.max())) if np.all(np.isfinite(all_labels)) else None
    if too_large:  # before range(max label) below, and before int64 would wrap a float 1e30
        return [too_large]
    all_labels = all_labels.astype(np.int64)
    if all_labels.min() < 0:
        problems.append(f"{where}: labels must be >= 0 (found {all_labels.min()})")
    n_classes = expected_classes if expected_classes is not None else int(all_labels.max()) + 1
    if expected_classes is not None and all_labels.max() >= expected_classes:
        problems.append(
            f"{where}: labels go up to {all_labels.max()} but this dataset has {expected_classes} classes (0..{expected_classes - 1})"
        )
    elif n_classes < 2:
        problems.append(f"{where}: all labels are {all_labels.max()}; classification needs at least 2 classes")
    if not problems:
        absent = sorted(set(range(n_classes)) - set(np.unique(labels["train"]).tolist()))
        if absent:
            problems.append(
                f"{where}: classes {absent} have no sample in train_labels (labels must be 0..K-1 with every class in train)"
            )
    return problems


def _multilabel_problems(path: Path, where: str, width: int, expected_classes: int | None) -> list[str]:
    """Problems of (N, L) multi-label label arrays: 0/1 values, L labels, each positive in train."""
    problems: list[str] = []
    if expected_classes is not None and width != expected_classes:
        problems.append(f"{where}: labels have {width} columns but this dataset has {expected_classes} labels")
    with np.load(path, allow_pickle=False) as archive:
        for split in SPLITS:
            values = np.asarray(archive[f"{split}_labels"])
            if not np.all(np.isin(values, (0, 1))):
                problems.append(
                    f"{where}: {split}_labels has values other than 0 and 1; multi-label rows (N, L) hold 0/1 per label"
                )
            elif split == "train":
                never = np.flatnonzero(values.sum(axis=0) == 0).tolist()
                if never:
                    problems.append(
                        f"{where}: labels {never} are never positive in train_labels; every label needs a positive training image"
                    )
    return problems


def _to_nchw(images: np.ndarray) -> np.ndarray:
    """MedMNIST stores (N, H, W) or (N, H, W, C); models want (N, C, H, W)."""
    if images.ndim == 3:
        images = images[:, None, :, :]
    else:
        images = images.transpose(0, 3, 1, 2)
    images = np.ascontiguousarray(images)
    if images.dtype != np.uint8:
        images = images.astype(np.float32)
        if not np.all(np.isfinite(images)):
            raise PeprInputError("the images contain NaN or infinite values; fix the data file")
    return images


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as archive:
        arrays = {}
        for split in SPLITS:
            arrays[f"{split}_x"] = _to_nchw(archive[f"{split}_images"])
            labels = np.asarray(archive[f"{split}_labels"])
            if labels.ndim == 2 and labels.shape[1] > 1:  # multi-label 0/1 rows
                arrays[f"{split}_y"] = labels.astype(np.int64)
            else:
                arrays[f"{split}_y"] = labels.reshape(-1).astype(np.int64)
    return arrays


def read_checked(where: str, path: Path, problems: list[str]) -> dict[str, np.ndarray]:
    """The arrays of a checked npz file (``problems``: what its checks found; raised together as
    one PeprInputError), after checking that they fit this machine's memory."""
    if problems:
        raise PeprInputError("; ".join(problems))
    from pepr.datasets.npzcheck import memory_problem

    too_big = memory_problem(f"{where}: {path}", _npz_headers(path))  # this machine's memory, before reading
    if too_big:
        raise PeprInputError(too_big)
    return _read_npz(path)


def given_facts(path: Path, given: Sequence[int], stored: int, channels: int, classes: int) -> dict[str, Any]:
    """Facts of a file that is not present, from the ``--dataset-size`` numbers."""
    return facts_dict(
        given[0],
        given[1],
        given[2],
        channels,
        classes,
        stored,
        None,
        f"--dataset-size ({path} not present; {channels} channel(s), {classes} classes assumed)",
    )


def label_facts(path: Path, problems: list[str], num_classes: int | None) -> dict[str, Any]:
    """Facts of a checked npz file from its headers and labels (images are not read);
    ``num_classes`` None: the largest label + 1."""
    if problems:
        raise PeprInputError("; ".join(problems))
    headers = npz_headers(path)
    shape = headers["train_images"][0]
    channels = int(shape[3]) if len(shape) == 4 else 1
    with np.load(path, allow_pickle=False) as archive:  # labels only: images are not read
        train_labels = np.asarray(archive["train_labels"])
        n_val = int(np.asarray(archive["val_labels"]).shape[0])
        n_test = int(np.asarray(archive["test_labels"]).shape[0])
    if train_labels.ndim == 2 and train_labels.shape[1] > 1:  # multi-label rows: no class counts
        return facts_dict(
            len(train_labels),
            n_val,
            n_test,
            channels,
            train_labels.shape[1],
            shape[1],
            None,
            f"labels read from {path} (multi-label)",
        )
    train_labels = train_labels.reshape(-1).astype(np.int64)
    if num_classes is None:
        num_classes = int(train_labels.max()) + 1
    counts = np.bincount(train_labels, minlength=num_classes)
    return facts_dict(
        len(train_labels), n_val, n_test, channels, num_classes, shape[1], tuple(counts), f"labels read from {path}"
    )


def stored_shape(path: Path) -> tuple[int, int] | None:
    """(height, width) of ``train_images`` from its .npy header (no image is read); None when unreadable."""
    try:
        shape = npz_headers(path)["train_images"][0]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None
    if len(shape) < 3:
        return None
    height, width = shape[-2:] if len(shape) == 3 or shape[-1] > 4 else shape[1:3]
    return int(height), int(width)


def train_class_counts(path: Path | None) -> list[int] | None:
    """Per-class counts of a single-label npz's ``train_labels``; None when absent, unreadable or multi-label."""
    if path is None or not Path(path).is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as archive:
            labels = np.asarray(archive["train_labels"])
    except (OSError, KeyError, ValueError):
        return None  # the data checks name what is wrong with the file
    if labels.ndim > 1 and labels.shape[1] > 1:
        return None  # multi-label: pepr train's own subset rule
    flat = labels.reshape(-1).astype(np.int64)
    return [int(c) for c in np.bincount(flat[flat >= 0])] if flat.size else None


class NpzKind(DatasetKind):
    """``npz:PATH``: the user's own file in the MedMNIST layout (a relative PATH is relative to the
    working directory)."""

    name = "npz"

    def matches(self, spec: str) -> bool:
        return spec.startswith("npz:")

    def parse(self, spec: str) -> DatasetSpec:
        path_text = spec[4:]
        if not path_text:
            raise PeprInputError(f"dataset spec {spec!r}: give the file after 'npz:', e.g. npz:data/mine.npz")
        path = Path(path_text).expanduser()
        if path.suffix != ".npz":
            raise PeprInputError(f"dataset spec {spec!r}: the file must be a .npz in the MedMNIST layout")
        return DatasetSpec(kind="npz", spec=spec, path=path)

    def short_name(self, parsed: DatasetSpec) -> str:
        assert parsed.path is not None
        return SAFE_NAME.sub("_", parsed.path.stem).strip("._") or "npz"

    def file(self, parsed: DatasetSpec, data_dir: Path | None) -> Path | None:
        return parsed.path

    def problems(self, parsed: DatasetSpec, data_dir: Path | None, allow_download: bool) -> list[str]:
        path = parsed.path
        assert path is not None
        if not path.exists():
            return [
                f"dataset {parsed.spec!r}: {path} not found (npz: paths are relative to the working directory {Path.cwd()})"
            ]
        return [f"dataset {parsed.spec!r}: {problem}" for problem in npz_problems(path)]

    def load(
        self,
        parsed: DatasetSpec,
        name: str,
        data_dir: Path | None,
        allow_download: bool,
        workers: int | None,
        log: Callable | None,
    ) -> ImageData:
        path = parsed.path
        assert path is not None
        arrays = read_checked(f"dataset {parsed.spec!r}", path, self.problems(parsed, data_dir, False))
        multi_label = arrays["train_y"].ndim == 2
        if multi_label:
            n_classes = int(arrays["train_y"].shape[1])
        else:
            n_classes = int(max(arrays[f"{split}_y"].max() for split in SPLITS)) + 1
        class_names = tuple(str(i) for i in range(n_classes))
        description = f"npz file {path}" + (f" (multi-label, {n_classes} labels)" if multi_label else "")
        return ImageData(
            name=name,
            num_classes=len(class_names),
            class_names=class_names,
            description=description,
            multi_label=multi_label,
            **arrays,
        )

    def facts(
        self, parsed: DatasetSpec, name: str, data_dir: Path | None, given: Sequence[int] | None
    ) -> dict[str, Any]:
        path = parsed.path
        assert path is not None
        if not path.exists():
            if given is None:
                raise PeprInputError(
                    f"dataset {parsed.spec!r}: {path} does not exist (relative paths are read from the working directory, "
                    f"{Path.cwd()}), so its split sizes are unknown; create the file, run from the folder it is "
                    f"relative to, or give them: --dataset-size {name}=TRAIN,VAL,TEST,SIZE (images per split, "
                    "image side in pixels)"
                )
            return given_facts(
                path, given, int(given[3]) if len(given) > 3 else 0, int(given[4]) if len(given) > 4 else 1, 2
            )
        return label_facts(path, self.problems(parsed, data_dir, False), None)

    def stored_image_shape(self, parsed: DatasetSpec, data_file: Path | None) -> tuple[int, int] | None:
        return stored_shape(data_file) if data_file is not None else None

    def training_class_counts(self, parsed: DatasetSpec, data_dir: Path | None) -> list[int] | None:
        return train_class_counts(self.file(parsed, data_dir))

    def moved_file_stem(self, spec: str) -> str | None:
        return Path(spec.strip()[4:]).stem

    def stamps(self, parsed: DatasetSpec, data_dir: Path | None) -> list[Any]:
        assert parsed.path is not None
        try:
            stat = parsed.path.stat()
            return [[str(parsed.path), stat.st_size, stat.st_mtime_ns]]
        except OSError:
            return [[str(parsed.path), None, None]]
