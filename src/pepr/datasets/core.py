"""Datasets for ``pepr train``: MedMNIST 2D flags, any MedMNIST-layout ``.npz``, and a synthetic set.

Dataset spec grammar (the ``--dataset`` value and the workflow's ``datasets`` entries):

``FLAG`` or ``FLAG@SIZE``
    A MedMNIST 2D flag (``medmnist.INFO``: all 12), e.g. ``pneumoniamnist``; ``@SIZE`` picks a MedMNIST+
    size (28, 64, 128 or 224; default 28). The file is ``DATA_DIR/FLAG.npz`` at 28 px and
    ``DATA_DIR/FLAG_SIZE.npz`` otherwise (MedMNIST's own names); ``DATA_DIR`` is ``--data-dir`` or,
    when not given, the ``medmnist`` package's default root (``~/.medmnist``). 3D flags are
    rejected; the multi-label ``chestmnist`` trains with BCE-with-logits (:mod:`pepr.train.loop`).
``npz:PATH``
    Any file in the MedMNIST npz layout: ``train_images``, ``train_labels``, ``val_images``,
    ``val_labels``, ``test_images``, ``test_labels``; images ``(N, H, W)`` or ``(N, H, W, C)`` with
    C in {1, 3}, uint8 (0-255) or float (taken as they are); labels ``(N,)`` or ``(N, 1)``
    integers in ``0..K-1``, or ``(N, L)`` 0/1 rows with L > 1 (a multi-label task). A relative
    PATH is relative to the current working directory.
``folder:PATH[,val=0.1,test=0.2,size=N,channels=1|3,seed=S]`` and ``csv:FILE[,...]``
    The user's own images (ImageFolder layout or a manifest), converted once into a cached npz
    under ``DATA_DIR/images/`` and then read exactly as ``npz:`` (:mod:`pepr.datasets.images`).
``synthetic`` or ``synthetic:KEY=VALUE,...``
    A procedurally generated image-classification set (see :func:`make_synthetic`); NOT medical
    data, only shaped like it, for offline demos and tests. Keys and defaults are
    :data:`SYNTHETIC_DEFAULTS`.

Everything in the "spec" part of this module is cheap (numpy only, header reads) so the workflow
can validate a whole config before launching anything.
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pepr.datasets import images
from pepr.errors import PeprInputError
from pepr.datasets.medmnist_info import default_data_dir  # noqa: F401 - part of this module's API
from pepr.datasets.medmnist_info import medmnist_info_module as _medmnist_info_module

#: Image sizes MedMNIST (v2 at 28 px, MedMNIST+ above) is published at.
MEDMNIST_SIZES: tuple[int, ...] = (28, 64, 128, 224)

#: The npz keys of the MedMNIST layout, split by split.
SPLITS: tuple[str, ...] = ("train", "val", "test")

#: Options of the ``synthetic`` dataset and their defaults. ``imbalance`` is the ratio of the
#: largest class's sample count to the smallest's (class 0 largest, geometric in between);
#: ``noise`` is the standard deviation of the pixel noise on images in [0, 1]; ``seed`` makes a
#: different (but equally hard) draw of the same dataset.
SYNTHETIC_DEFAULTS: dict[str, int | float] = {
    "classes": 2,
    "size": 28,
    "channels": 1,
    "n_train": 1000,
    "n_val": 250,
    "n_test": 500,
    "imbalance": 2.0,
    "noise": 0.08,
    "seed": 0,
}
_SYNTHETIC_INT_KEYS = frozenset({"classes", "size", "channels", "n_train", "n_val", "n_test", "seed"})
_SYNTHETIC_LIMITS: dict[str, tuple[float, float]] = {
    "classes": (2, 20),
    "size": (8, 512),
    "channels": (1, 3),
    "n_train": (1, 1_000_000),
    "n_val": (1, 1_000_000),
    "n_test": (1, 1_000_000),
    "imbalance": (1.0, 100.0),
    "noise": (0.0, 1.0),
    "seed": (0, 2**31 - 1),
}

_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class DatasetSpec:
    """A parsed ``--dataset`` value.

    ``kind`` is ``"medmnist"``, ``"npz"``, ``"synthetic"``, ``"folder"`` or ``"csv"``; ``flag`` is set for MedMNIST,
    ``path`` for npz, ``options`` (sorted ``(key, value)`` pairs, every key of
    :data:`SYNTHETIC_DEFAULTS` resolved) for synthetic. ``size`` is the stored image size
    (``None`` for npz: read from the file). ``spec`` is the original string.
    """

    kind: str
    spec: str
    flag: str | None = None
    path: Path | None = None
    options: tuple[tuple[str, int | float], ...] = ()
    size: int | None = None
    #: synthetic options the user wrote explicitly (with non-default values), for the name
    explicit_options: tuple[tuple[str, int | float], ...] = field(default=(), compare=False)

    def option(self, key: str) -> int | float:
        """Value of a synthetic option (defaults resolved)."""
        return dict(self.options)[key]


def _medmnist_info() -> dict:
    return _medmnist_info_module().INFO


def medmnist_info(flag: str) -> dict:
    """MedMNIST's metadata of one dataset flag (``n_samples`` per split, ``n_channels``,
    ``label`` names), read without importing torch; PeprInputError for an unknown flag."""
    info = _medmnist_info()
    if flag not in info:
        raise PeprInputError(f"unknown MedMNIST flag {flag!r}; known flags: {', '.join(sorted(info))}")
    return info[flag]


def _parse_number(key: str, text: str, spec: str) -> int | float:
    try:
        value: int | float = int(text) if key in _SYNTHETIC_INT_KEYS else float(text)
    except ValueError:
        kind = "an integer" if key in _SYNTHETIC_INT_KEYS else "a number"
        raise PeprInputError(
            f"dataset spec {spec!r}: option {key}={text!r} must be {kind}"
        ) from None
    low, high = _SYNTHETIC_LIMITS[key]
    if not (low <= value <= high) or value != value:  # value != value catches NaN
        raise PeprInputError(
            f"dataset spec {spec!r}: option {key}={text} is out of range; use {low:g} <= {key} <= {high:g}"
        )
    return value


def parse_dataset_spec(spec: str) -> DatasetSpec:
    """Parse a dataset spec string (grammar in the module docstring).

    Raises :class:`PeprInputError` for a malformed spec, an unknown or 3D MedMNIST flag, an
    unsupported MedMNIST size, or an unknown/out-of-range synthetic option. Does not touch files.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise PeprInputError(
            "dataset spec is empty; use a MedMNIST flag (e.g. 'pneumoniamnist' or "
            "'pneumoniamnist@64'), 'npz:PATH', 'folder:PATH', 'csv:FILE' or 'synthetic[:key=value,...]'"
        )
    spec = spec.strip()
    if spec.startswith("npz:"):
        path_text = spec[4:]
        if not path_text:
            raise PeprInputError(f"dataset spec {spec!r}: give the file after 'npz:', e.g. npz:data/mine.npz")
        path = Path(path_text).expanduser()
        if path.suffix != ".npz":
            raise PeprInputError(f"dataset spec {spec!r}: the file must be a .npz in the MedMNIST layout")
        return DatasetSpec(kind="npz", spec=spec, path=path)
    if images.is_image_spec(spec):
        parsed = images.parse_image_spec(spec)
        return DatasetSpec(kind=parsed.kind, spec=spec, path=parsed.path, size=parsed.size)
    if spec == "synthetic" or spec.startswith("synthetic:"):
        return _parse_synthetic(spec)
    return _parse_medmnist(spec)


def _parse_synthetic(spec: str) -> DatasetSpec:
    explicit: dict[str, int | float] = {}
    body = spec[len("synthetic:") :] if spec.startswith("synthetic:") else ""
    if spec.startswith("synthetic:") and not body:
        raise PeprInputError(f"dataset spec {spec!r}: nothing after 'synthetic:'; use plain 'synthetic' or key=value pairs")
    for item in filter(None, (part.strip() for part in body.split(","))):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not value.strip():
            raise PeprInputError(f"dataset spec {spec!r}: {item!r} is not key=value")
        if key not in SYNTHETIC_DEFAULTS:
            known = ", ".join(SYNTHETIC_DEFAULTS)
            raise PeprInputError(f"dataset spec {spec!r}: unknown synthetic option {key!r}; known options: {known}")
        if key in explicit:
            raise PeprInputError(f"dataset spec {spec!r}: option {key!r} given twice")
        explicit[key] = _parse_number(key, value.strip(), spec)
    options = {**SYNTHETIC_DEFAULTS, **explicit}
    if options["channels"] == 2:
        raise PeprInputError(f"dataset spec {spec!r}: channels must be 1 (grey) or 3 (colour)")
    non_default = tuple(sorted((k, v) for k, v in explicit.items() if v != SYNTHETIC_DEFAULTS[k]))
    return DatasetSpec(
        kind="synthetic",
        spec=spec,
        options=tuple(sorted(options.items())),
        size=int(options["size"]),
        explicit_options=non_default,
    )


def _parse_medmnist(spec: str) -> DatasetSpec:
    flag, sep, size_text = spec.partition("@")
    flag = flag.strip().lower()
    size = 28
    if sep:
        try:
            size = int(size_text)
        except ValueError:
            raise PeprInputError(f"dataset spec {spec!r}: size after '@' must be one of {MEDMNIST_SIZES}") from None
        if size not in MEDMNIST_SIZES:
            raise PeprInputError(f"dataset spec {spec!r}: MedMNIST is published at sizes {MEDMNIST_SIZES}, not {size}")
    info = _medmnist_info()
    if flag not in info:
        hint = ""
        match = re.fullmatch(r"([a-z0-9]+)_(\d+)", flag)
        if match and match.group(1) in info:
            hint = f" (did you mean '{match.group(1)}@{match.group(2)}'?)"
        flags_2d = ", ".join(k for k in info if not k.endswith("3d"))
        raise PeprInputError(
            f"dataset spec {spec!r}: unknown dataset{hint}. Use a MedMNIST 2D flag ({flags_2d}), "
            "'npz:PATH' for your own npz file, 'folder:PATH' or 'csv:FILE' for your own images, or 'synthetic'"
        )
    if flag.endswith("3d"):
        raise PeprInputError(
            f"dataset spec {spec!r}: {flag} is a 3D MedMNIST dataset; pepr trains 2D image classifiers only"
        )
    return DatasetSpec(kind="medmnist", spec=spec, flag=flag, size=size)


def dataset_name(spec: str) -> str:
    """Short, filesystem-safe, deterministic name of a dataset spec (a path component).

    ``pneumoniamnist`` -> ``pneumoniamnist``; ``pneumoniamnist@64`` -> ``pneumoniamnist_64``;
    ``npz:/x/my data.npz`` -> ``my_data``; ``synthetic`` -> ``synthetic``;
    ``synthetic:size=32,classes=3`` -> ``synthetic-classes3-size32`` (keys sorted; options equal
    to their default are left out, so equivalent specs share a name).
    """
    parsed = parse_dataset_spec(spec)
    if parsed.kind == "medmnist":
        return parsed.flag if parsed.size == 28 else f"{parsed.flag}_{parsed.size}"
    if parsed.kind == "npz":
        assert parsed.path is not None
        name = _SAFE_NAME.sub("_", parsed.path.stem).strip("._") or "npz"
        return name
    if parsed.kind in images.KINDS:  # folder name / CSV stem, then non-default options
        return images.image_dataset_name(images.parse_image_spec(spec))
    parts = ["synthetic"] + [f"{key}{value:g}" for key, value in parsed.explicit_options]
    return "-".join(parts)


def medmnist_filename(flag: str, size: int) -> str:
    """MedMNIST's own file name for a flag at a size (``pneumoniamnist.npz``, ``pneumoniamnist_64.npz``)."""
    return f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz"


def dataset_file(spec: DatasetSpec, data_dir: Path | None) -> Path | None:
    """The file a spec reads (``None`` for synthetic data)."""
    if spec.kind == "npz":
        return spec.path
    if spec.kind in images.KINDS:  # the converted file (deterministic from the spec)
        return images.cache_path(spec.spec, data_dir)
    if spec.kind == "medmnist":
        assert spec.flag is not None and spec.size is not None
        root = Path(data_dir) if data_dir is not None else default_data_dir()
        return root / medmnist_filename(spec.flag, spec.size)
    return None


def download_hint(spec: DatasetSpec, data_dir: Path | None) -> str:
    """A sentence saying where to put a missing MedMNIST file and how to fetch it."""
    assert spec.kind == "medmnist" and spec.flag is not None and spec.size is not None
    path = dataset_file(spec, data_dir)
    info = _medmnist_info()[spec.flag]
    url = info["url"] if spec.size == 28 else info[f"url_{spec.size}"]
    return (
        f"put {path.name} in {path.parent} (download it from {url}, or run "
        f"`python -c \"import medmnist; medmnist.{info['python_class']}(split='test', download=True, "
        f"size={spec.size}, root='{path.parent}')\"` on a machine with internet and copy the file over)"
    )


# --------------------------------------------------------------------------------------------
# Validation without loading images (header reads only)
# --------------------------------------------------------------------------------------------


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
    from pepr.plan.safeyaml import file_kind_problem

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
        problems.append(
            f"{where}: missing arrays {', '.join(missing)} (the MedMNIST layout needs {', '.join(needed)})"
        )
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
    label_widths = {headers[f"{split}_labels"][0][1] if len(headers[f"{split}_labels"][0]) == 2 else 1 for split in SPLITS}
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
            problems.append(f"{where}: classes {absent} have no sample in train_labels (labels must be 0..K-1 with every class in train)")
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
                problems.append(f"{where}: {split}_labels has values other than 0 and 1; multi-label rows (N, L) hold 0/1 per label")
            elif split == "train":
                never = np.flatnonzero(values.sum(axis=0) == 0).tolist()
                if never:
                    problems.append(f"{where}: labels {never} are never positive in train_labels; every label needs a positive training image")
    return problems


def dataset_problems(spec: str, data_dir: Path | None, allow_download: bool = False) -> list[str]:
    """Every problem with a dataset spec that can be found without training (empty list: OK).

    Malformed spec, missing file (with where to put it and how to fetch it; not a problem when
    ``allow_download`` and the spec is a MedMNIST flag, since ``pepr train`` downloads it), and
    bad file contents (:func:`npz_problems`). Fast: reads array headers and labels only.
    """
    try:
        parsed = parse_dataset_spec(spec)
    except PeprInputError as exc:
        return [str(exc)]
    if parsed.kind == "synthetic":
        return []
    if parsed.kind in images.KINDS:
        return images.spec_problems(spec, data_dir)
    path = dataset_file(parsed, data_dir)
    assert path is not None
    if parsed.kind == "medmnist":
        if not path.exists():
            if allow_download:
                return []
            return [f"dataset {spec!r}: {path} not found; {download_hint(parsed, data_dir)}"]
        info = _medmnist_info()[parsed.flag]
        problems = npz_problems(path, expected_classes=len(info["label"]), expected_channels=info["n_channels"])
        return [f"dataset {spec!r}: {problem}" for problem in problems]
    if not path.exists():
        return [f"dataset {spec!r}: {path} not found (npz: paths are relative to the working directory {Path.cwd()})"]
    return [f"dataset {spec!r}: {problem}" for problem in npz_problems(path)]


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


@dataclass
class ImageData:
    """The three splits of a dataset as numpy arrays, images ``(N, C, H, W)`` (uint8 or float32).

    Images stay in their stored dtype (uint8 for MedMNIST: 4x less memory); the training code
    moves them to the device once and scales/normalises them there.
    """

    name: str
    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    num_classes: int
    class_names: tuple[str, ...]
    description: str
    #: labels are (N, L) 0/1 rows (BCE-with-logits, multi-label metrics) instead of class indices
    multi_label: bool = False
    #: what the run records about the data beyond its arrays (folder/csv: counts per split, ...)
    details: dict = field(default_factory=dict)

    @property
    def channels(self) -> int:
        """Number of image channels."""
        return int(self.train_x.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        """Stored (height, width)."""
        return int(self.train_x.shape[2]), int(self.train_x.shape[3])

    def with_train_subset(self, indices: np.ndarray) -> "ImageData":
        """A copy whose train split holds only ``indices`` (val/test untouched)."""
        import dataclasses

        return dataclasses.replace(self, train_x=self.train_x[indices], train_y=self.train_y[indices])


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


def _download_medmnist(spec: DatasetSpec, data_dir: Path | None) -> None:
    """Fetch a MedMNIST file through the ``medmnist`` package; PeprInputError when that fails."""
    path = dataset_file(spec, data_dir)
    assert path is not None and spec.flag is not None
    path.parent.mkdir(parents=True, exist_ok=True)
    import medmnist  # imports torch: only at training time

    dataset_class = getattr(medmnist, _medmnist_info()[spec.flag]["python_class"])
    try:
        dataset_class(split="test", download=True, root=str(path.parent), size=spec.size)
    except Exception as exc:  # the package raises RuntimeError for any network failure
        raise PeprInputError(
            f"dataset {spec.spec!r}: {path} not found and downloading it failed "
            f"({str(exc).strip().splitlines()[0]}); {download_hint(spec, data_dir)}"
        ) from exc
    if not path.exists():
        raise PeprInputError(f"dataset {spec.spec!r}: the download did not produce {path}; {download_hint(spec, data_dir)}")


def load_dataset(
    spec: str, data_dir: Path | None = None, allow_download: bool = True, workers: int | None = None, log=None
) -> ImageData:
    """Load all three splits of a dataset spec.

    A missing MedMNIST file is downloaded through the ``medmnist`` package when
    ``allow_download`` (and the network) allows; a ``folder:``/``csv:`` spec is converted into
    its cached npz first when that is missing or stale (:func:`pepr.datasets.images.prepare`, ``workers``
    processes); otherwise, and for every bad file, raises :class:`PeprInputError` listing all
    problems found.
    """
    parsed = parse_dataset_spec(spec)
    name = dataset_name(spec)
    if parsed.kind == "synthetic":
        return make_synthetic(dict(parsed.options), name=name)
    if parsed.kind in images.KINDS:
        return _load_images(spec, name, data_dir, workers, log)
    path = dataset_file(parsed, data_dir)
    assert path is not None
    if parsed.kind == "medmnist" and not path.exists() and allow_download:
        _download_medmnist(parsed, data_dir)
    problems = dataset_problems(spec, data_dir, allow_download=False)
    if problems:
        raise PeprInputError("; ".join(problems))
    from pepr.datasets.npzcheck import memory_problem

    too_big = memory_problem(f"dataset {spec!r}: {path}", _npz_headers(path))  # this machine's memory, before reading
    if too_big:
        raise PeprInputError(too_big)
    arrays = _read_npz(path)
    multi_label = arrays["train_y"].ndim == 2
    if parsed.kind == "medmnist":
        info = _medmnist_info()[parsed.flag]
        class_names = tuple(info["label"][str(i)] for i in range(len(info["label"])))
        description = f"MedMNIST {parsed.flag} ({info['task']}) at {parsed.size} px from {path}"
    else:
        if multi_label:
            n_classes = int(arrays["train_y"].shape[1])
        else:
            n_classes = int(max(arrays[f"{split}_y"].max() for split in SPLITS)) + 1
        class_names = tuple(str(i) for i in range(n_classes))
        description = f"npz file {path}" + (f" (multi-label, {n_classes} labels)" if multi_label else "")
    return ImageData(
        name=name, num_classes=len(class_names), class_names=class_names, description=description, multi_label=multi_label, **arrays
    )


def _load_images(spec: str, name: str, data_dir: Path | None, workers: int | None, log) -> ImageData:
    """A ``folder:``/``csv:`` spec: converted once (or found current), then read as ``npz:``."""
    path = images.prepare(spec, data_dir, workers=workers, log=log)
    loaded = load_dataset(f"npz:{path}", data_dir, allow_download=False)
    info = images.read_info(path) or {}
    class_names = tuple(info.get("class_names") or loaded.class_names)
    details = {
        "class_names": list(class_names),
        "task": info.get("task"),
        "counts": info.get("counts"),
        "class_counts": info.get("class_counts"),
        "split_from": info.get("split_from"),
        "source": info.get("source"),
        "cache": str(path),
    }
    import dataclasses

    return dataclasses.replace(
        loaded,
        name=name,
        class_names=class_names,
        num_classes=len(class_names),
        description=f"{spec} ({info.get('task', '?')}, {len(class_names)} classes, converted to {path})",
        details=details,
    )


def stratified_subset(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Indices of a seeded, stratified ``fraction`` of ``labels`` (sorted).

    Each class keeps ``round(fraction * count)`` samples (half rounds up), drawn from a seeded
    per-class permutation, so for one seed a smaller fraction's subset is contained in a larger
    one's. Raises :class:`PeprInputError` when ``fraction`` is outside (0, 1] or a class would
    get no sample.
    """
    if not (0.0 < fraction <= 1.0):
        raise PeprInputError(f"fraction must be in (0, 1], got {fraction}")
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] > 1:
        return _multilabel_subset(labels, fraction, seed)
    labels = labels.reshape(-1)
    if fraction == 1.0:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    chosen: list[np.ndarray] = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        keep = stratified_keep(len(members), fraction, cls)
        chosen.append(members[rng.permutation(len(members))[:keep]])
    return np.sort(np.concatenate(chosen))


def _multilabel_subset(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A seeded ``fraction`` of multi-label rows, stratified by each row's first positive label
    (no positive: its own stratum); nested across fractions for one seed like the single-label one."""
    if fraction == 1.0:
        return np.arange(len(labels))
    has_positive = labels.any(axis=1)
    keys = np.where(has_positive, labels.argmax(axis=1), -1)
    rng = np.random.default_rng(seed)
    chosen = []
    for key in np.unique(keys):
        members = np.flatnonzero(keys == key)
        keep = int(np.floor(fraction * len(members) + 0.5))
        chosen.append(members[rng.permutation(len(members))[:keep]])
    picked = np.sort(np.concatenate(chosen))
    if len(picked) < 2:
        raise PeprInputError(f"fraction {fraction} leaves {len(picked)} training image(s) of {len(labels)}; use a larger fraction")
    return picked


def stratified_keep(count: int, fraction: float, cls: object = "?") -> int:
    """Samples a class of ``count`` keeps in :func:`stratified_subset`: ``round(fraction * count)``,
    half rounding up. Raises :class:`PeprInputError` when that is 0 (``cls`` names the class)."""
    keep = int(np.floor(fraction * count + 0.5))
    if keep == 0:
        raise PeprInputError(
            f"fraction {fraction} leaves class {cls} ({count} training samples) with no sample; "
            f"use fraction >= {1.5 / count:.3g} or drop this cell"
        )
    return keep


def stratified_subset_size(class_counts: "np.ndarray | list[int] | tuple[int, ...]", fraction: float) -> int:
    """Size of :func:`stratified_subset` for a training split with these per-class counts
    (classes with no sample ignored), without drawing it: the same rule, any seed."""
    if not (0.0 < fraction <= 1.0):
        raise PeprInputError(f"fraction must be in (0, 1], got {fraction}")
    counts = [int(c) for c in class_counts]
    if fraction == 1.0:
        return sum(counts)
    return sum(stratified_keep(count, fraction, cls) for cls, count in enumerate(counts) if count > 0)


# --------------------------------------------------------------------------------------------
# Synthetic data
# --------------------------------------------------------------------------------------------


def synthetic_class_counts(n: int, classes: int, imbalance: float) -> np.ndarray:
    """Per-class sample counts of a synthetic split of ``n`` images, as :func:`make_synthetic`
    draws them: summing to ``n``, geometric from class 0 (largest) to the last (``imbalance``
    times smaller)."""
    return _class_counts(n, classes, imbalance)


def _class_counts(n: int, classes: int, imbalance: float) -> np.ndarray:
    """Per-class counts summing to n, geometric from largest (class 0) to smallest (ratio ``imbalance``)."""
    weights = imbalance ** (-np.arange(classes) / max(classes - 1, 1))
    raw = n * weights / weights.sum()
    counts = np.floor(raw).astype(int)
    # largest remainders get the leftover samples, so counts sum to n exactly
    counts[np.argsort(raw - counts)[::-1][: n - counts.sum()]] += 1
    return counts


def _smooth_noise(rng: np.random.Generator, n: int, size: int, scale: float) -> np.ndarray:
    """Zero-mean, unit-std random fields with correlation length ~``scale`` pixels (FFT low-pass)."""
    white = rng.standard_normal((n, size, size))
    freq = np.fft.fftfreq(size)
    radius2 = freq[:, None] ** 2 + freq[None, :] ** 2
    kernel = np.exp(-2 * (np.pi * scale) ** 2 * radius2)
    field_ = np.fft.ifft2(np.fft.fft2(white) * kernel).real
    field_ -= field_.mean(axis=(1, 2), keepdims=True)
    field_ /= field_.std(axis=(1, 2), keepdims=True) + 1e-8
    return field_


def _render_lesions(rng: np.random.Generator, labels: np.ndarray, options: dict, chunk: int = 2048) -> np.ndarray:
    """Images (N, C, S, S) uint8 of lesion-like blobs whose shape/texture drift with the class.

    Each image gets a latent "severity" ``s = class/(K-1) + N(0, 0.15/(K-1))`` so neighbouring
    classes overlap (the best possible accuracy is well below 100%). Severity makes the blob more
    elongated, its border more irregular and its centre more hollow (ring-like); size, position,
    orientation, contrast, background texture, a class-independent distractor blob (30% of images) and pixel noise
    are nuisances. Rendered in chunks to bound memory at large sizes.
    """
    size = int(options["size"])
    classes = int(options["classes"])
    channels = int(options["channels"])
    noise = float(options["noise"])
    coords = np.linspace(-1.0, 1.0, size)
    grid_y, grid_x = np.meshgrid(coords, coords, indexing="ij")
    out = np.empty((len(labels), channels, size, size), dtype=np.uint8)
    for start in range(0, len(labels), chunk):
        y = labels[start : start + chunk]
        n = len(y)
        severity = y / (classes - 1) + rng.normal(0.0, 0.15 / (classes - 1), n)
        severity = np.clip(severity, -0.3, 1.3)[:, None, None]

        def blob(centre_range: float, radius: tuple[float, float], sev: np.ndarray) -> np.ndarray:
            cx, cy = (rng.uniform(-centre_range, centre_range, (2, n, 1, 1)))
            a = rng.uniform(*radius, (n, 1, 1))
            b = a / (1.0 + 1.5 * np.clip(sev, 0, None) + np.abs(rng.normal(0, 0.1, (n, 1, 1))))
            theta = rng.uniform(0, np.pi, (n, 1, 1))
            u = (grid_x - cx) * np.cos(theta) + (grid_y - cy) * np.sin(theta)
            v = -(grid_x - cx) * np.sin(theta) + (grid_y - cy) * np.cos(theta)
            rho = np.sqrt((u / a) ** 2 + (v / b) ** 2)
            phi = np.arctan2(v / b, u / a)
            lobes = rng.integers(3, 7, (n, 1, 1))
            border = 1.0 + 0.3 * np.clip(sev, 0, None) * np.sin(lobes * phi + rng.uniform(0, 2 * np.pi, (n, 1, 1)))
            mask = 0.5 * (1.0 + np.tanh((border - rho) / 0.16))  # sigmoid((border - rho) / 0.08), overflow-free
            hollow = 1.0 - 0.85 * np.clip(sev, 0, 1) * np.exp(-((rho / 0.5) ** 2))
            return mask * hollow

        background = 0.35 - 0.12 * (grid_x**2 + grid_y**2) + 0.05 * _smooth_noise(rng, n, size, size / 6)
        background = background + 0.03 * _smooth_noise(rng, n, size, size / 20)
        contrast = rng.uniform(0.35, 0.6, (n, 1, 1))
        image = background + contrast * blob(0.3, (0.3, 0.45), severity)
        # a smaller distractor blob of random severity in half the images: shape cues are noisy
        has_distractor = rng.random((n, 1, 1)) < 0.3
        distractor_severity = rng.uniform(-0.2, 1.2, (n, 1, 1))
        image = image + has_distractor * 0.4 * contrast * blob(0.6, (0.1, 0.18), distractor_severity)
        image = image + rng.normal(0.0, noise, image.shape)
        if channels == 3:
            # stain-like tint: lesion and background take slightly different colours per image
            gains = np.array([1.0, 0.78, 0.9])[None, :, None, None] + rng.normal(0, 0.05, (n, 3, 1, 1))
            image = image[:, None] * gains
        else:
            image = image[:, None]
        out[start : start + n] = np.clip(np.round(image * 255), 0, 255).astype(np.uint8)
    return out


def make_synthetic(options: dict, name: str = "synthetic") -> ImageData:
    """Generate the deterministic synthetic dataset (see :func:`_render_lesions`).

    This is NOT medical data: it imitates the look of small medical images (a lesion-like blob
    on textured tissue-like background) so that the workflow can be demonstrated and tested
    offline, with a task that is learnable but not trivially solved. ``options`` as in
    :data:`SYNTHETIC_DEFAULTS`; the same options always give the same arrays.
    """
    resolved = {**SYNTHETIC_DEFAULTS, **options}
    classes = int(resolved["classes"])
    seed = int(resolved["seed"])
    arrays: dict[str, np.ndarray] = {}
    for index, split in enumerate(SPLITS):
        rng = np.random.default_rng([seed, index, 20240318])
        counts = _class_counts(int(resolved[f"n_{split}"]), classes, float(resolved["imbalance"]))
        labels = rng.permutation(np.repeat(np.arange(classes), counts))
        arrays[f"{split}_x"] = _render_lesions(rng, labels, resolved)
        arrays[f"{split}_y"] = labels.astype(np.int64)
    if np.any(np.bincount(arrays["train_y"], minlength=classes) == 0):
        raise PeprInputError(
            f"synthetic dataset: n_train={resolved['n_train']} is too small for {classes} classes "
            f"with imbalance {resolved['imbalance']:g}; every class needs a training sample"
        )
    description = (
        f"synthetic lesion-like blobs (NOT medical data): {classes} classes, {resolved['size']} px, "
        f"{resolved['channels']} channel(s), imbalance {resolved['imbalance']:g}, seed {seed}"
    )
    return ImageData(
        name=name,
        num_classes=classes,
        class_names=tuple(f"class{i}" for i in range(classes)),
        description=description,
        **arrays,
    )
