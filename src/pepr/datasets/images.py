"""The user's own images: ``folder:PATH`` and ``csv:FILE`` dataset specs, converted once to the
MedMNIST npz layout.

Spec grammar (after the path, comma-separated ``key=value`` options, all optional)::

    folder:PATH[,val=0.1,test=0.2,size=N,channels=1|3,seed=S]
    csv:FILE[,...same options...]

``folder:PATH``
    ImageFolder convention. ``PATH/{train,val,test}/{class}/...`` when PATH holds split folders
    (a missing ``val`` or ``test`` is carved from ``train`` with the spec's ratios); otherwise
    ``PATH/{class}/...`` and a seeded, stratified split (``val``, ``test`` ratios of the whole).
    Images are found recursively inside each class folder; hidden files and files that are not
    images (by extension; DICOM also by its ``DICM`` marker) are ignored. Single-label only.
``csv:FILE``
    A manifest with a ``path`` column (relative to the CSV's folder, or absolute), an optional
    ``split`` column (``train``/``val``/``test``) and the labels: a ``label`` column (one class
    name per image), a ``labels`` column (``;``-separated names: multi-label), or, with neither,
    one 0/1 column per label (multi-label). Class order: sorted names (``label``/``labels``), the
    column order (0/1 columns).

Formats: PNG, JPEG, TIFF, BMP (Pillow) and DICOM (pydicom, the optional extra
``pepr-bench[dicom]``): 8-bit kept as is, 16-bit mapped linearly (``round(v / 257)``: 65535 ->
255); DICOM gets its rescale slope/intercept and its stored window (Window Center/Width, the
first if several; MONOCHROME1 inverted), or its own min..max without a window. Channels are
decided once per dataset (mixed grey/colour is an error unless the spec says ``channels=``);
images are resized to ``size`` x ``size`` with Pillow's antialiasing (Lanczos) filter, an image
already at that size is stored pixel for pixel.

The converted file lives in ``DATA_DIR/images/<name>-<settings hash>.npz`` (:func:`cache_path`:
deterministic from the spec, so the workflow can name it while planning), beside a JSON record
(:func:`info_path`): class names, label order, file counts per split, the split ratios and
seed, and the content key (file list, sizes, mtimes, spec settings). :func:`prepare` rebuilds
it only when that key changed; the user's image files are only ever read.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import csv
import hashlib
import json
import math
import multiprocessing
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pepr.columns import MAX_SEED
from pepr.datasets.base import DatasetKind, DatasetSpec, ImageData, facts_dict
from pepr.datasets.npzcheck import MAX_IMAGE_SIDE, MIN_IMAGE_SIDE
from pepr.errors import PeprInputError

#: Spec prefixes handled here.
KINDS = ("folder", "csv")
#: Options of an image spec and their defaults (``size``/``channels`` None: decided from the images).
#: ``fit``'s default is ``squash`` (resize to NxN, the aspect ratio not kept) because it is what
#: every earlier conversion did: a default that changed would change finished sweeps' data.
IMAGE_DEFAULTS: dict[str, Any] = {
    "val": 0.1,
    "test": 0.2,
    "size": None,
    "channels": None,
    "seed": 0,
    "fit": "squash",
    "window": None,
    "frame": None,
    "dedupe": None,
}
#: Options that enter the cache's settings only when given (specs written before they existed
#: keep their converted file and its name).
_LATER_OPTIONS = ("fit", "window", "frame", "dedupe")
FITS = ("squash", "pad", "crop")
#: Pillow-readable image file endings; DICOM endings below (files without an ending are DICOM
#: when they carry the ``DICM`` marker).
PILLOW_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"})
DICOM_SUFFIXES = frozenset({".dcm", ".dicom"})
SPLIT_NAMES = ("train", "val", "test")
#: Image sides accepted (one definition for every kind: pepr.datasets.npzcheck).
MIN_SIDE, MAX_SIDE = MIN_IMAGE_SIDE, MAX_IMAGE_SIDE
#: Problems listed by file before the rest are counted.
MAX_LISTED = 20
#: Bumped when the conversion changes, so older caches are rebuilt.
CACHE_FORMAT = 1

_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")
_OPTION = re.compile(r"^(val|test|size|channels|seed|fit|window|frame|dedupe)=")


@dataclass(frozen=True)
class ImageSpec:
    """A parsed ``folder:``/``csv:`` spec (``options``: resolved, ``explicit``: as written)."""

    kind: str
    spec: str
    path: Path
    val: float
    test: float
    size: int | None
    channels: int | None
    seed: int
    explicit: tuple[tuple[str, Any], ...] = ()
    fit: str = "squash"
    window: str | None = None
    frame: int | None = None
    dedupe: str | None = None

    def window_range(self) -> tuple[float, float] | None:
        """``window=LOW:HIGH`` as numbers (None when not given)."""
        if self.window is None:
            return None
        low, _, high = self.window.partition(":")
        return float(low), float(high)

    def settings(self) -> dict[str, Any]:
        """What the conversion depends on besides the files (the cache path's hash)."""
        return {
            "format": CACHE_FORMAT,
            "kind": self.kind,
            # as written (normalised), not absolute: moving the project folder keeps the cache's name
            "path": os.path.normpath(str(self.path.expanduser())),
            "val": self.val,
            "test": self.test,
            "size": self.size,
            "channels": self.channels,
            "seed": self.seed,
            **{key: getattr(self, key) for key in _LATER_OPTIONS if getattr(self, key) != IMAGE_DEFAULTS[key]},
        }


def is_image_spec(spec: Any) -> bool:
    """True for ``folder:...`` and ``csv:...`` specs."""
    return isinstance(spec, str) and spec.strip().startswith(tuple(f"{kind}:" for kind in KINDS))


def parse_image_spec(spec: str) -> ImageSpec:
    """Parse a ``folder:``/``csv:`` spec; PeprInputError for a malformed one (no file access)."""
    spec = spec.strip()
    kind, _, body = spec.partition(":")
    parts = body.split(",")
    # trailing key=value parts are options; everything before is the path (which may hold commas)
    split_at = len(parts)
    while split_at > 1 and _OPTION.match(parts[split_at - 1].strip()):
        split_at -= 1
    path_text = ",".join(parts[:split_at]).strip()
    example = "folder:data/xrays" if kind == "folder" else "csv:data/manifest.csv"
    if not path_text:
        raise PeprInputError(
            f"dataset spec {spec!r}: give the {'folder' if kind == 'folder' else 'CSV file'} after '{kind}:', e.g. {example}"
        )
    if kind == "csv" and not path_text.lower().endswith(".csv"):
        raise PeprInputError(f"dataset spec {spec!r}: the manifest must be a .csv file (columns path,label[,split])")
    explicit: dict[str, Any] = {}
    for item in parts[split_at:]:
        key, _, value = item.strip().partition("=")
        if key in explicit:
            raise PeprInputError(f"dataset spec {spec!r}: option {key!r} given twice")
        explicit[key] = _option_value(spec, key, value.strip())
    for item in parts[1:split_at]:
        if "=" in item and not _OPTION.match(item.strip()):
            known = ", ".join(IMAGE_DEFAULTS)
            raise PeprInputError(f"dataset spec {spec!r}: unknown option {item.strip()!r}; known options: {known}")
    options = {**IMAGE_DEFAULTS, **explicit}
    if options["val"] + options["test"] >= 1.0:
        raise PeprInputError(
            f"dataset spec {spec!r}: val={options['val']} + test={options['test']} leave no training images; keep their sum below 1"
        )
    non_default = tuple(sorted((k, v) for k, v in explicit.items() if v != IMAGE_DEFAULTS[k]))
    return ImageSpec(kind=kind, spec=spec, path=Path(path_text).expanduser(), explicit=non_default, **options)


def _option_value(spec: str, key: str, text: str) -> Any:
    if key == "fit":
        if text not in FITS:
            raise PeprInputError(f"dataset spec {spec!r}: fit={text!r} must be one of {', '.join(FITS)}")
        return text
    if key == "dedupe":
        if text != "drop-train":
            raise PeprInputError(f"dataset spec {spec!r}: dedupe={text!r}: the only choice is dedupe=drop-train")
        return text
    if key == "window":
        low, sep, high = text.partition(":")
        try:
            bounds = (float(low), float(high)) if sep else None
        except ValueError:
            bounds = None
        if bounds is None or not all(math.isfinite(b) for b in bounds) or bounds[0] >= bounds[1]:
            raise PeprInputError(
                f"dataset spec {spec!r}: window={text!r} must be LOW:HIGH with LOW < HIGH, e.g. window=-1000:1040"
            )
        return f"{bounds[0]:g}:{bounds[1]:g}"
    try:
        if key in ("val", "test"):
            value = float(text)
            if not (0.0 <= value < 1.0):
                raise ValueError
            return value
        value = int(text)
    except ValueError:
        ranges = {
            "val": "a ratio in [0, 1)",
            "test": "a ratio in [0, 1)",
            "size": "an integer >= 8",
            "channels": "1 or 3",
            "seed": "an integer >= 0",
            "frame": "a frame index >= 0",
        }
        raise PeprInputError(f"dataset spec {spec!r}: {key}={text!r} must be {ranges[key]}") from None
    if key == "size" and not (MIN_SIDE <= value <= MAX_SIDE):
        raise PeprInputError(f"dataset spec {spec!r}: size={value} must be in {MIN_SIDE}..{MAX_SIDE} pixels")
    if key == "channels" and value not in (1, 3):
        raise PeprInputError(f"dataset spec {spec!r}: channels={value} must be 1 (grey) or 3 (colour)")
    if key == "frame" and value < 0:
        raise PeprInputError(f"dataset spec {spec!r}: frame={value} must be a frame index >= 0")
    if key == "seed" and not (0 <= value <= MAX_SEED):
        raise PeprInputError(f"dataset spec {spec!r}: seed={value} must be in 0..{MAX_SEED}")
    return value


def image_dataset_name(parsed: ImageSpec) -> str:
    """Short name: the folder's name or the CSV's stem, then ``-keyvalue`` for each option that
    differs from its default (sorted), e.g. ``xrays``, ``xrays-size64``, ``manifest-test0.3``."""
    stem = parsed.path.name if parsed.kind == "folder" else parsed.path.stem
    base = _SAFE_NAME.sub("_", stem).strip("._") or parsed.kind
    return "-".join([base] + [f"{key}{_name_value(value)}" for key, value in parsed.explicit])


def _name_value(value: Any) -> str:
    return f"{value:g}" if isinstance(value, (int, float)) else _SAFE_NAME.sub("_", str(value).replace(":", "_"))


def cache_root(data_dir: Path | None) -> Path:
    """Folder of the converted files: ``DATA_DIR/images`` (``data_dir`` None: medmnist's default root)."""
    if data_dir is None:
        from pepr.datasets.medmnist_info import default_data_dir

        data_dir = default_data_dir()
    return Path(data_dir) / "images"


def cache_path(spec: str | ImageSpec, data_dir: Path | None) -> Path:
    """Where the converted npz of a spec lives: ``DATA_DIR/images/<name>-<12 hex>.npz``, the hex a
    hash of the spec's settings (absolute path, ratios, size, channels, seed): deterministic, no
    file is read."""
    parsed = parse_image_spec(spec) if isinstance(spec, str) else spec
    digest = hashlib.sha256(json.dumps(parsed.settings(), sort_keys=True).encode()).hexdigest()[:12]
    return cache_root(data_dir) / f"{image_dataset_name(parsed)}-{digest}.npz"


def info_path(npz_path: Path) -> Path:
    """The JSON record beside a converted file (class names, counts per split, content key)."""
    return Path(npz_path).with_suffix(".json")


# --------------------------------------------------------------------------------------------
# Scanning: which files, which labels, which split (no image is opened)
# --------------------------------------------------------------------------------------------


@dataclass
class Listing:
    """The dataset as listed: files, their labels (class indices; a 0/1 row when multi-label) and
    the split each belongs to (None: to be assigned), plus the problems found on the way."""

    files: list[Path] = field(default_factory=list)
    labels: list[Any] = field(default_factory=list)
    splits: list[str | None] = field(default_factory=list)
    class_names: list[str] = field(default_factory=list)
    multi_label: bool = False
    problems: list[str] = field(default_factory=list)
    #: files by problem kind -> list of "file: reason"; listed as the first MAX_LISTED then a count
    file_problems: dict[str, list[str]] = field(default_factory=dict)
    stamp_files: list[Path] = field(default_factory=list)  # files whose stamps key the cache besides images
    ignored: int = 0

    def file_problem(self, kind: str, text: str) -> None:
        self.file_problems.setdefault(kind, []).append(text)


def _is_hidden(path: Path) -> bool:
    return path.name.startswith(".")


def _special_file(path: Path) -> str | None:
    """One line when ``path`` is a FIFO, device or socket (found with ``stat``, never opened)."""
    import stat

    from pepr.files import file_kind_problem

    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None  # missing or unreadable: reported where the file is read
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    return f"{file_kind_problem(path, 'image')}; remove it"


def _looks_like_image(path: Path) -> bool:
    suffix = path.suffix.lower()
    if suffix in PILLOW_SUFFIXES or suffix in DICOM_SUFFIXES:
        return True
    if suffix == "":
        try:
            with open(path, "rb") as handle:
                handle.seek(128)
                return handle.read(4) == b"DICM"
        except OSError:
            return False
    return False


def _image_files(folder: Path, listing: Listing, exclude: Path | None) -> list[Path]:
    found = []
    for root, dirs, names in os.walk(folder):
        root_path = Path(root)
        dirs[:] = sorted(
            d for d in dirs if not d.startswith(".") and (exclude is None or (root_path / d).absolute() != exclude)
        )
        for name in sorted(names):
            path = root_path / name
            if _is_hidden(path):
                continue
            special = _special_file(path)
            if special:  # a FIFO would block the open below; a device may stream forever
                listing.file_problem("special", special)
                continue
            if _looks_like_image(path):
                found.append(path)
            else:
                listing.ignored += 1
    return found


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _scan_folder(parsed: ImageSpec, exclude: Path | None) -> Listing:
    listing = Listing()
    root = parsed.path
    if not root.is_dir():
        listing.problems.append(
            f"{root}: folder not found (folder: paths are relative to the working directory {Path.cwd()})"
        )
        return listing
    split_dirs = {name: root / name for name in SPLIT_NAMES if (root / name).is_dir()}
    if split_dirs and "train" not in split_dirs:
        listing.problems.append(
            f"{root}: has {', '.join(sorted(split_dirs))} folders but no 'train' folder; add {root / 'train'} or put the class folders directly in {root}"
        )
        return listing
    layout = split_dirs if split_dirs else {None: root}
    classes_by_split: dict[Any, list[str]] = {}
    for split, folder in layout.items():
        class_dirs = _class_dirs(folder)
        if not class_dirs:
            where = f"split folder {folder}" if split else f"{folder}"
            listing.problems.append(f"{where}: no class folders; put each class's images in {folder}/<class name>/")
            continue
        classes_by_split[split] = [d.name for d in class_dirs]
    if listing.problems:
        return listing
    train_key = "train" if split_dirs else None
    listing.class_names = classes_by_split[train_key]
    index = {name: i for i, name in enumerate(listing.class_names)}
    for split, folder in layout.items():
        for class_dir in _class_dirs(folder):
            if class_dir.name not in index:
                listing.problems.append(
                    f"{class_dir}: class {class_dir.name!r} is not in the class list of {layout[train_key]} "
                    f"({', '.join(listing.class_names)}); rename it to one of those or add it to the train folder"
                )
                continue
            files = _image_files(class_dir, listing, exclude)
            if not files:
                listing.problems.append(
                    f"{class_dir}: empty class folder (no PNG/JPEG/TIFF/BMP/DICOM image); add images or remove the folder"
                )
            for path in files:
                listing.files.append(path)
                listing.labels.append(index[class_dir.name])
                listing.splits.append(split)
    return listing


def _scan_csv(parsed: ImageSpec) -> Listing:
    listing = Listing()
    manifest = parsed.path
    if not manifest.is_file():
        listing.problems.append(
            f"{manifest}: CSV file not found (csv: paths are relative to the working directory {Path.cwd()})"
        )
        return listing
    listing.stamp_files.append(manifest)
    try:
        with open(manifest, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.DictReader(handle))
            columns = [c.strip() for c in (rows[0].keys() if rows else [])]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        listing.problems.append(
            f"{manifest}: cannot be read as a UTF-8 CSV ({exc}); save it as CSV with a header row path,label[,split]"
        )
        return listing
    rows = [{(k or "").strip(): (v or "").strip() if isinstance(v, str) else v for k, v in row.items()} for row in rows]
    if not rows:
        listing.problems.append(
            f"{manifest}: no rows; the manifest needs a header path,label[,split] and one row per image"
        )
        return listing
    if "path" not in columns:
        listing.problems.append(
            f"{manifest}: no 'path' column (columns: {', '.join(columns)}); the header must be path,label[,split]"
        )
        return listing
    if "label" in columns:
        mode = "label"
    elif "labels" in columns:
        mode = "labels"
    else:
        label_columns = [c for c in columns if c not in ("path", "split")]
        if not label_columns:
            listing.problems.append(
                f"{manifest}: no label column; add 'label' (one class per image), 'labels' (';'-separated) or one 0/1 column per label"
            )
            return listing
        mode = "columns"
    has_split = "split" in columns
    base = manifest.parent
    seen: dict[Path, tuple[int, str | None]] = {}
    raw_labels: list[Any] = []
    for number, row in enumerate(rows, start=2):  # line 1 is the header
        where = f"{manifest} line {number}"
        path_text = row.get("path") or ""
        if not path_text:
            listing.problems.append(f"{where}: empty path")
            continue
        path = Path(path_text).expanduser()
        path = path if path.is_absolute() else base / path
        split = (row.get("split") or "").lower() if has_split else None
        if has_split and split not in SPLIT_NAMES:
            listing.problems.append(f"{where}: split {row.get('split')!r} is not train, val or test")
            continue
        special = _special_file(path) if path.exists() else None
        if special:
            listing.file_problem("special", f"{where}: {special}")
            continue
        if not path.is_file():
            listing.file_problem(
                "missing",
                f"{where}: {path} does not exist (paths are relative to {base} or absolute); fix the path or drop the row",
            )
            continue
        resolved = path.resolve()
        if resolved in seen:
            first_line, first_split = seen[resolved]
            if first_split != split and has_split:
                listing.file_problem(
                    "duplicate",
                    f"{path}: in split {first_split} (line {first_line}) and {split} (line {number}); a file may be in one split only",
                )
            else:
                listing.file_problem(
                    "duplicate",
                    f"{path}: listed twice (lines {first_line} and {number}); keep one row (multi-label: use the 'labels' column)",
                )
            continue
        seen[resolved] = (number, split)
        if mode == "label":
            value = row.get("label") or ""
            if not value:
                listing.problems.append(f"{where}: empty label")
                continue
            raw_labels.append(value)
        elif mode == "labels":
            raw_labels.append(sorted({name.strip() for name in (row.get("labels") or "").split(";") if name.strip()}))
        else:
            values = []
            for column in label_columns:
                text = row.get(column) or ""
                if text not in ("0", "1"):
                    listing.problems.append(
                        f"{where}: label column {column!r} holds {text!r}; one-column-per-label manifests take 0 or 1"
                    )
                    break
                values.append(int(text))
            else:
                raw_labels.append(values)
                listing.files.append(path)
                listing.splits.append(split)
            continue
        listing.files.append(path)
        listing.splits.append(split)
    if mode == "label":
        train_names = {name for name, split in zip(raw_labels, listing.splits) if split in (None, "train")}
        listing.class_names = sorted(train_names)
        index = {name: i for i, name in enumerate(listing.class_names)}
        keep = []
        for i, (name, split) in enumerate(zip(raw_labels, listing.splits)):
            if name not in index:
                listing.file_problem(
                    "label",
                    f"{listing.files[i]}: label {name!r} ({split} split) is not in the class list of the train split "
                    f"({', '.join(listing.class_names)}); fix the label or add training images of that class",
                )
                continue
            keep.append(i)
        listing.files = [listing.files[i] for i in keep]
        listing.splits = [listing.splits[i] for i in keep]
        listing.labels = [index[raw_labels[i]] for i in keep]
    elif mode == "labels":
        listing.multi_label = True
        train_names = {
            name for names, split in zip(raw_labels, listing.splits) if split in (None, "train") for name in names
        }
        listing.class_names = sorted(train_names)
        index = {name: i for i, name in enumerate(listing.class_names)}
        keep = []
        for i, names in enumerate(raw_labels):
            unknown = [name for name in names if name not in index]
            if unknown:
                listing.file_problem(
                    "label",
                    f"{listing.files[i]}: labels {', '.join(map(repr, unknown))} are not in the class list of the train split "
                    f"({', '.join(listing.class_names)}); fix the labels or add training images with them",
                )
                continue
            keep.append(i)
        rows01 = []
        for i in keep:
            vector = [0] * len(listing.class_names)
            for name in raw_labels[i]:
                vector[index[name]] = 1
            rows01.append(vector)
        listing.files = [listing.files[i] for i in keep]
        listing.splits = [listing.splits[i] for i in keep]
        listing.labels = rows01
    else:
        listing.multi_label = True
        listing.class_names = list(label_columns)
        listing.labels = raw_labels
    return listing


def scan(parsed: ImageSpec, data_dir: Path | None) -> Listing:
    """List the spec's files, labels and splits, with the structural problems (nothing decoded)."""
    root = cache_root(data_dir).absolute()
    listing = _scan_folder(parsed, exclude=root) if parsed.kind == "folder" else _scan_csv(parsed)
    if parsed.kind == "folder" and _inside(root, parsed.path.absolute()):
        listing.problems.append(
            f"data_dir {root.parent} is inside the image folder {parsed.path}: pepr never writes into your image "
            "folder; set data_dir (--data-dir) to a folder outside it"
        )
    return listing


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


# --------------------------------------------------------------------------------------------
# Content key: the file list, sizes and mtimes, plus the spec's settings
# --------------------------------------------------------------------------------------------


def content_key(spec: str, data_dir: Path | None) -> str:
    """A hash of everything the converted file depends on: the spec's settings, every listed
    file's path, size and modification time (and the CSV manifest's). Lists and stats files
    only (cheap: the workflow computes it while planning). A listing with problems gets a key
    too (the problems are reported by :func:`spec_problems`)."""
    parsed = parse_image_spec(spec)
    listing = scan(parsed, data_dir)
    return _content_key(parsed, listing)


def _content_key(parsed: ImageSpec, listing: Listing) -> str:
    digest = hashlib.sha256(json.dumps(parsed.settings(), sort_keys=True).encode())
    for path in [*listing.stamp_files, *listing.files]:
        try:
            stat = path.stat()
            stamp = f"{stat.st_size}:{stat.st_mtime_ns}"
        except OSError:
            stamp = "missing"
        digest.update(f"{path}\0{stamp}\n".encode())
    digest.update(json.dumps([listing.labels, listing.splits, listing.class_names], default=str).encode())
    return digest.hexdigest()


def _source_digest(parsed: ImageSpec, listing: Listing, hashes: Sequence[str]) -> str:
    """A hash of what a conversion is made of: the spec's settings, every listed file's path and
    content hash (``hashes``, in listing order), labels and splits; the CSV manifest's content."""
    digest = hashlib.sha256(json.dumps(parsed.settings(), sort_keys=True).encode())
    for path in listing.stamp_files:
        try:
            digest.update(hashlib.sha1(path.read_bytes()).hexdigest().encode())
        except OSError:
            digest.update(b"missing")
    for path, content in zip(listing.files, hashes):
        digest.update(f"{path}\0{content}\n".encode())
    digest.update(json.dumps([listing.labels, listing.splits, listing.class_names], default=str).encode())
    return digest.hexdigest()


def source_digest(spec: str, data_dir: Path | None) -> str:
    """:func:`_source_digest` of a spec now, for planning: each file's content hash is read from
    a cache keyed by its stat (size, mtime, inode) beside the converted file, so only new or
    changed files are read."""
    parsed = parse_image_spec(spec)
    listing = scan(parsed, data_dir)
    cache_file = cache_path(parsed, data_dir).with_suffix(".hashes.json")
    cache_file = cache_file.with_name("." + cache_file.name)
    try:
        known = json.loads(cache_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = {}
    hashes, fresh = [], {}
    for path in listing.files:
        try:
            stat = path.stat()
        except OSError:
            hashes.append("missing")
            continue
        stamp = [stat.st_size, stat.st_mtime_ns, stat.st_ino]
        entry = known.get(str(path))
        if not (isinstance(entry, list) and entry[:3] == stamp):
            entry = stamp + [_file_sha1(path)]
        fresh[str(path)] = entry
        hashes.append(entry[3])
    if fresh != known and listing.files:
        from pepr.results.runs import atomic_write_json

        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(cache_file, fresh)
        except OSError:
            pass  # a read-only data_dir: hashed again next time
    return _source_digest(parsed, listing, hashes)


def _file_sha1(path: Path) -> str:
    if _special_file(path):
        return "special"
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha1").hexdigest()


def conversion_state(spec: str, data_dir: Path | None) -> str:
    """Whether a spec's converted data matches its files: ``current`` (made from the files as
    they are now; also when only the npz was deleted: it is rebuilt byte for byte), ``changed``
    (a file's content, the list, a label or a split differs, or nothing was converted yet) or
    ``legacy`` (a record from before it held the sources' digest: its stat key decides at
    conversion, as it did when it was made)."""
    record = read_info(cache_path(spec, data_dir))
    if record is None:
        return "changed"
    recorded = record.get("source_digest")
    if recorded is None:
        return "legacy"
    return "current" if recorded == source_digest(spec, data_dir) else "changed"


def planned_digest(spec: str, data_dir: Path | None, file_digest) -> str | None:
    """The content fingerprint planning records for a converted spec's data: the converted
    file's own digest (``file_digest(path)``) when it was made from the files as they are now,
    else ``sources:<digest of the files now>``, so that a change retrains the cells that use the
    data in the same run that converts it again."""
    target = cache_path(spec, data_dir)
    if conversion_state(spec, data_dir) == "changed":
        return f"sources:{source_digest(spec, data_dir)}"
    return file_digest(str(target)) if target.is_file() else None


def is_current(spec: str, data_dir: Path | None) -> bool:
    """True when the converted file exists and its record's content key matches the files now."""
    parsed = parse_image_spec(spec)
    path = cache_path(parsed, data_dir)
    record = read_info(path)
    if record is None or not path.is_file():
        return False
    return record.get("content_key") == content_key(spec, data_dir)


def read_info(npz_path: Path) -> dict[str, Any] | None:
    """The JSON record beside a converted file, or None when absent/unreadable."""
    try:
        return json.loads(info_path(npz_path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


# --------------------------------------------------------------------------------------------
# Reading one image (also in worker processes)
# --------------------------------------------------------------------------------------------


class ImageReadError(Exception):
    """A file that cannot be read as an image (message says why)."""


def _is_dicom(path: Path) -> bool:
    suffix = path.suffix.lower()
    return suffix in DICOM_SUFFIXES or (suffix == "" and _looks_like_image(path))


@dataclass
class Header:
    """What an image file's header says (no pixel decoded), and the SHA-1 of its bytes."""

    height: int
    width: int
    channels: int
    frames: int = 1
    #: "8-bit", "16-bit", "float" (Pillow modes I;16/I and F) or "dicom"
    depth: str = "8-bit"
    #: significant bits a PNG declares (its sBIT chunk), None without one
    sbit: int | None = None
    sha1: str = ""


def read_header(path: Path, data: bytes | None = None) -> Header:
    """The header of an image file (``data``: its bytes when already read)."""
    import io

    if _is_dicom(path):
        pydicom = _pydicom()
        try:
            ds = pydicom.dcmread(io.BytesIO(data) if data is not None else str(path), stop_before_pixels=True)
            return Header(
                int(ds.Rows),
                int(ds.Columns),
                int(getattr(ds, "SamplesPerPixel", 1)),
                int(getattr(ds, "NumberOfFrames", 1) or 1),
                "dicom",
            )
        except Exception as exc:  # noqa: BLE001 - any failure on untrusted bytes is "unreadable"
            raise ImageReadError(
                f"not a readable DICOM file ({type(exc).__name__}: {exc}); replace or remove it"
            ) from None
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data) if data is not None else path) as image:
            width, height = image.size
            mode = image.mode
            depth = "16-bit" if mode.startswith("I;16") or mode == "I" else "float" if mode == "F" else "8-bit"
            frames = int(getattr(image, "n_frames", 1) or 1)
            return Header(
                height, width, _mode_channels(mode), frames, depth, _png_sbit(data) if data is not None else None
            )
    except Exception as exc:  # noqa: BLE001
        raise ImageReadError(
            f"not a readable image ({type(exc).__name__}: {exc}); the file is damaged or not an image, replace or remove it"
        ) from None


def _png_sbit(data: bytes) -> int | None:
    """The significant bits a PNG's ``sBIT`` chunk declares (its largest channel), read from the
    chunk list before the pixel data; None for other files or without the chunk."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    pos = 8
    while pos + 8 <= len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        if kind == b"sBIT":
            return max(data[pos + 8 : pos + 8 + length], default=None)
        if kind in (b"IDAT", b"IEND"):
            return None
        pos += 12 + length
    return None


def _mode_channels(mode: str) -> int:
    return 1 if mode in ("1", "L", "LA", "I", "F", "La") or mode.startswith("I;16") else 3


def _pydicom():
    try:
        import pydicom
    except ImportError:
        raise ImageReadError("is DICOM, and reading DICOM needs pydicom: pip install 'pepr-bench[dicom]'") from None
    return pydicom


def _to_uint8_gray_or_rgb(array: np.ndarray, bits16: bool) -> np.ndarray:
    if bits16:
        return np.clip(np.round(array.astype(np.float64) / 257.0), 0, 255).astype(np.uint8)
    return array.astype(np.uint8)


def _dicom_pixels(path: Any, window: tuple[float, float] | None = None, frame: int | None = None) -> np.ndarray:
    """uint8 (H, W) or (H, W, 3): rescale slope/intercept, then the stored window (DICOM linear
    VOI function), MONOCHROME1 inverted; without a window the image's own min..max. ``window``
    (the spec's ``window=LOW:HIGH``) replaces the stored one; ``frame`` picks one frame of a
    multi-frame file."""
    pydicom = _pydicom()
    from pydicom.pixels import apply_modality_lut

    try:
        ds = pydicom.dcmread(path if not isinstance(path, Path) else str(path))
        raw = ds.pixel_array
    except Exception as exc:  # noqa: BLE001
        raise ImageReadError(f"DICOM pixel data cannot be decoded ({type(exc).__name__}: {exc})") from None
    if int(getattr(ds, "NumberOfFrames", 1) or 1) > 1:
        if frame is None:
            raise ImageReadError(
                f"is a multi-frame DICOM ({ds.NumberOfFrames} frames); add frame=K to the spec or export one 2D image per file"
            )
        raw = raw[frame]
    if int(getattr(ds, "SamplesPerPixel", 1)) == 3:
        if raw.dtype != np.uint8:
            raw = np.clip(np.round(raw.astype(np.float64) / 257.0), 0, 255)
        return raw.astype(np.uint8)
    values = np.asarray(apply_modality_lut(raw, ds), dtype=np.float64)
    center, width = _first(getattr(ds, "WindowCenter", None)), _first(getattr(ds, "WindowWidth", None))
    if window is not None:
        scaled = _window(values, window)
    elif center is not None and width is not None and width >= 1:
        # DICOM PS3.3 C.11.2.1.2.1 linear window, output 0..255
        low = center - 0.5 - (width - 1) / 2
        high = center - 0.5 + (width - 1) / 2
        scaled = np.where(
            values <= low, 0.0, np.where(values > high, 255.0, ((values - (center - 0.5)) / (width - 1) + 0.5) * 255.0)
        )
    else:
        lo, hi = float(values.min()), float(values.max())
        scaled = (values - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(values)
    if str(getattr(ds, "PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        scaled = 255.0 - scaled
    return np.clip(np.round(scaled), 0, 255).astype(np.uint8)


def _first(value: Any) -> float | None:
    if value is None:
        return None
    try:
        if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
            value = value[0]
        return float(value)
    except (TypeError, ValueError, IndexError):
        return None


@dataclass(frozen=True)
class PixelMapping:
    """How stored values become the converted uint8 pixels, the same for every file of a dataset.

    ``value_range`` (LOW, HIGH) maps linearly onto 0..255 (clipped): 16-bit and float images
    always (the range their data uses: sBIT, the dataset's min..max, or ``window=``), 8-bit and
    DICOM values too when ``window`` is set. ``fit`` and ``frame`` are the spec's options.
    """

    value_range: tuple[float, float] | None = None
    window: bool = False
    fit: str = "squash"
    frame: int | None = None


def _window(values: np.ndarray, value_range: tuple[float, float]) -> np.ndarray:
    low, high = value_range
    return np.clip((values - low) / (high - low) * 255.0, 0.0, 255.0)


def read_image(
    path: Path, channels: int, size: int | None, data: bytes | None = None, mapping: PixelMapping = PixelMapping()
) -> np.ndarray:
    """Decode one image to uint8 (size, size, channels) (``size`` None: kept as stored), converted
    to ``channels``, its values mapped as ``mapping`` says and resized with antialiasing (fitted
    as ``mapping.fit`` says) when its size differs. ``data``: the file's bytes when already read."""
    import io

    from PIL import Image

    source = io.BytesIO(data) if data is not None else path
    if _is_dicom(path):
        pixels = _dicom_pixels(source, mapping.value_range if mapping.window else None, mapping.frame)
        image = Image.fromarray(pixels)
    else:
        try:
            with Image.open(source) as opened:
                if mapping.frame:
                    opened.seek(mapping.frame)
                opened.load()  # decodes everything: a truncated file raises here
                image = opened
                mode = image.mode
                high_depth = mode.startswith("I;16") or mode in ("I", "F")
                if mapping.value_range is not None and (
                    high_depth or (mapping.window and mode in ("L", "1", "LA", "La"))
                ):
                    grey = image if high_depth else image.convert("L")
                    array = np.asarray(grey, dtype=np.float64)
                    image = Image.fromarray(np.round(_window(array, mapping.value_range)).astype(np.uint8))
                elif mode.startswith("I;16") or mode == "I":
                    array = np.asarray(image)
                    image = Image.fromarray(_to_uint8_gray_or_rgb(np.clip(array, 0, 65535), bits16=True))
                elif mode == "F":
                    array = np.asarray(image, dtype=np.float64)
                    scale = 255.0 if array.max() <= 1.0 else 1.0
                    image = Image.fromarray(np.clip(np.round(array * scale), 0, 255).astype(np.uint8))
                elif mode in ("1", "LA", "La"):
                    image = image.convert("L")
                elif mode not in ("L", "RGB"):
                    image = image.convert("RGB")
                else:
                    image = image.copy()
        except ImageReadError:
            raise
        except Exception as exc:  # noqa: BLE001 - Pillow raises OSError, SyntaxError, ValueError... on bad bytes
            raise ImageReadError(
                f"cannot be decoded ({type(exc).__name__}: {exc}); the file is damaged or truncated, replace or remove it"
            ) from None
    if channels == 1 and image.mode != "L":
        image = image.convert("L")
    elif channels == 3 and image.mode != "RGB":
        image = image.convert("RGB")
    if size is not None and image.size != (size, size):
        image = _fit(image, size, mapping.fit)
    array = np.asarray(image, dtype=np.uint8)
    return array[:, :, None] if array.ndim == 2 else array


def _fit(image: Any, size: int, fit: str) -> Any:
    """``image`` resized to size x size: ``squash`` (aspect not kept), ``pad`` (whole image, the
    short side centred on black) or ``crop`` (short side to ``size``, centre kept)."""
    from PIL import Image

    width, height = image.size
    if fit == "squash" or width == height:
        return image.resize((size, size), Image.Resampling.LANCZOS)
    scale = size / (max(width, height) if fit == "pad" else min(width, height))
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    resized = image.resize((new_w, new_h), Image.Resampling.LANCZOS)
    if fit == "pad":
        canvas = Image.new(image.mode, (size, size), 0)
        canvas.paste(resized, ((size - new_w) // 2, (size - new_h) // 2))
        return canvas
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return resized.crop((left, top, left + size, top + size))


def _read_chunk(
    paths: Sequence[str], channels: int, size: int, mapping: PixelMapping
) -> tuple[np.ndarray, list[str | None]]:
    """Worker: decode a chunk of files -> (uint8 (n, size, size, channels), error or None per file)."""
    out = np.zeros((len(paths), size, size, channels), dtype=np.uint8)
    errors: list[str | None] = []
    for i, text in enumerate(paths):
        path = Path(text)
        try:
            data = path.read_bytes()
        except OSError as exc:
            errors.append(f"cannot be read ({exc.strerror or exc})")
            continue
        try:
            out[i] = read_image(path, channels, size, data=data, mapping=mapping)
            errors.append(None)
        except ImageReadError as exc:
            errors.append(str(exc))
    return out, errors


def _header_chunk(paths: Sequence[str]) -> list[Header | str]:
    """Worker: each file's header and the SHA-1 of its bytes (one read; no pixel decoded)."""
    found: list[Header | str] = []
    for text in paths:
        try:
            data = Path(text).read_bytes()
            header = read_header(Path(text), data)
            header.sha1 = hashlib.sha1(data).hexdigest()
            found.append(header)
        except OSError as exc:
            found.append(f"cannot be read ({exc.strerror or exc})")
        except ImageReadError as exc:
            found.append(str(exc))
    return found


def _range_chunk(paths: Sequence[str], frame: int | None) -> list[tuple[float, float] | None]:
    """Worker: (min, max) of each 16-bit/float file's stored values (None: undecodable, reported
    by the conversion pass)."""
    from PIL import Image

    found: list[tuple[float, float] | None] = []
    for text in paths:
        try:
            with Image.open(text) as image:
                if frame:
                    image.seek(frame)
                array = np.asarray(image, dtype=np.float64)
            finite = array[np.isfinite(array)]
            found.append((float(finite.min()), float(finite.max())) if finite.size else None)
        except Exception:  # noqa: BLE001 - the decode pass names the file and the reason
            found.append(None)
    return found


@contextlib.contextmanager
def _pool(workers: int):
    """A process pool, or None for one worker. Forked (instant) unless torch is loaded: torch's
    thread pools do not survive a fork, so then the workers are spawned (they import numpy,
    Pillow and pepr, ~1-2 s)."""
    if workers <= 1:
        yield None
        return
    import sys

    method = "spawn" if "torch" in sys.modules or "fork" not in multiprocessing.get_all_start_methods() else "fork"
    with concurrent.futures.ProcessPoolExecutor(
        max_workers=workers, mp_context=multiprocessing.get_context(method)
    ) as pool:
        yield pool


#: Images decoded per task: small enough that the tasks in flight hold a few MB at 224 px.
CHUNK = 64


def _ordered(pool, function, chunks: Sequence[Any], *args, ahead: int = 1) -> Iterable[Any]:
    """``function(chunk, *args)`` for each chunk, in order, with at most ``ahead`` tasks in flight
    (so memory stays bounded however many chunks there are)."""
    if pool is None:
        for chunk in chunks:
            yield function(chunk, *args)
        return
    pending: collections.deque = collections.deque()
    for chunk in chunks:
        pending.append(pool.submit(function, chunk, *args))
        if len(pending) >= ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


# --------------------------------------------------------------------------------------------
# Validation and conversion
# --------------------------------------------------------------------------------------------


def _listed(kind_label: str, entries: list[str]) -> list[str]:
    shown = entries[:MAX_LISTED]
    lines = list(shown)
    if len(entries) > MAX_LISTED:
        lines.append(f"... and {len(entries) - MAX_LISTED} more {kind_label} (the first {MAX_LISTED} are listed)")
    return lines


def _assign_splits(listing: Listing, parsed: ImageSpec) -> list[str]:
    """Each file's split: as listed, else seeded and stratified by class with the spec's ratios
    (files without a split go train/val/test; in a split-folder layout without val/test those
    are carved from train)."""
    splits = list(listing.splits)
    present = {s for s in splits if s is not None}
    if not present:
        carve = [i for i in range(len(splits))]
        val_ratio, test_ratio = parsed.val, parsed.test
    else:
        carve = (
            [i for i, s in enumerate(splits) if s == "train"] if ("val" not in present or "test" not in present) else []
        )
        val_ratio = parsed.val if "val" not in present else 0.0
        test_ratio = parsed.test if "test" not in present else 0.0
        for i, s in enumerate(splits):
            if s is None:  # a manifest row without a split value is handled as train
                splits[i] = "train"
    if not carve:
        return [s or "train" for s in splits]
    rng = np.random.default_rng([int(parsed.seed), 16])
    keys = [_stratum(listing.labels[i], listing.multi_label) for i in carve]
    by_key: dict[Any, list[int]] = collections.defaultdict(list)
    for i, key in zip(carve, keys):
        by_key[key].append(i)
    for key in sorted(by_key, key=str):
        members = sorted(by_key[key], key=lambda i: str(listing.files[i]))
        order = [members[j] for j in rng.permutation(len(members))]
        n_test = int(math.floor(test_ratio * len(order) + 0.5))
        n_val = int(math.floor(val_ratio * len(order) + 0.5))
        for rank, i in enumerate(order):
            splits[i] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    return splits


def _stratum(label: Any, multi_label: bool) -> Any:
    if not multi_label:
        return int(label)
    positives = [i for i, v in enumerate(label) if v]
    return positives[0] if positives else -1


@dataclass
class Checked:
    """A validated listing, ready to convert: every problem found, the decided size/channels, the
    value mapping, the identical-content groups (warnings) and the files ``dedupe`` dropped."""

    parsed: ImageSpec
    listing: Listing
    splits: list[str]
    size: int | None
    channels: int | None
    problems: list[str]
    key: str
    mapping: PixelMapping = PixelMapping()
    intensity: dict[str, Any] = field(default_factory=dict)
    duplicates: list[list[int]] = field(default_factory=list)
    dropped: list[int] = field(default_factory=list)
    hashes: list[str] = field(default_factory=list)

    def members(self, split: str) -> list[int]:
        """Indices of the files converted into ``split`` (dropped copies left out)."""
        dropped = set(self.dropped)
        return [i for i, s in enumerate(self.splits) if s == split and i not in dropped]


def check(spec: str, data_dir: Path | None, workers: int = 1, decode: bool = True, mapping: bool = True) -> Checked:
    """Every problem of an image spec, found before anything is written.

    Scan (structure, labels, splits, CSV paths, FIFOs/devices refused by ``stat``), then one read
    of every file: its header (unreadable, under or over the side limits, channels, sizes,
    frames) and a hash of its bytes (identical content in two splits or classes: a warning, or
    dropped from train with ``dedupe=drop-train``); the value range of 16-bit/float images; then,
    when ``decode``, every file decoded (truncated/damaged), a chunk at a time, nothing kept.
    ``mapping`` False skips the value-range pass (counts only: ``pepr estimate``).
    """
    parsed = parse_image_spec(spec)
    listing = scan(parsed, data_dir)
    key = _content_key(parsed, listing)
    problems = list(listing.problems)
    file_problems = {k: list(v) for k, v in listing.file_problems.items()}
    splits = _assign_splits(listing, parsed) if listing.files else []
    checked = Checked(parsed, listing, splits, parsed.size, parsed.channels, problems, key)
    if not listing.files and not problems:
        problems.append(f"{parsed.path}: no images found (PNG, JPEG, TIFF, BMP or DICOM files)")
    if problems and not listing.files:
        checked.problems = problems + _file_problem_lines(file_problems)
        return checked
    texts = [str(p) for p in listing.files]
    workers = max(1, min(workers, len(texts) // 64 or 1))
    with _pool(workers) as pool:
        headers = [h for part in _ordered(pool, _header_chunk, _chunks_of(texts), ahead=2 * workers) for h in part]
        shapes: dict[int, Header] = {}
        checked.hashes = [h.sha1 if isinstance(h, Header) else "" for h in headers]
        for i, header in enumerate(headers):
            if isinstance(header, str):
                file_problems.setdefault("unreadable", []).append(f"{listing.files[i]}: {header}")
                continue
            height, width = header.height, header.width
            if min(height, width) < MIN_SIDE:
                file_problems.setdefault("small", []).append(
                    f"{listing.files[i]}: {width}x{height} px is under {MIN_SIDE} px; remove it or use larger crops"
                )
                continue
            if max(height, width) > MAX_SIDE and parsed.size is None:
                file_problems.setdefault("large", []).append(f"{listing.files[i]}: {width}x{height} px")
                continue
            if header.frames > 1 and parsed.frame is None:
                file_problems.setdefault("frames", []).append(f"{listing.files[i]}: {header.frames} frames")
                continue
            if parsed.frame is not None and parsed.frame >= header.frames:
                file_problems.setdefault("frames", []).append(
                    f"{listing.files[i]}: has {header.frames} frame(s), no frame {parsed.frame}"
                )
                continue
            shapes[i] = header
        _duplicates(checked, file_problems)
        dropped = set(checked.dropped)
        _split_problems(listing, [s if i not in dropped else "dropped" for i, s in enumerate(splits)], parsed, problems)
        channels = parsed.channels
        if channels is None and shapes:
            by_channels = collections.Counter(shape.channels for shape in shapes.values())
            if len(by_channels) > 1:
                minority = min(by_channels, key=lambda c: (by_channels[c], c))
                entries = [
                    f"{listing.files[i]}: {'grey' if s.channels == 1 else 'colour'}"
                    for i, s in shapes.items()
                    if s.channels == minority
                ]
                problems.append(
                    f"{parsed.path}: mixed channels: {by_channels[1]} grey and {by_channels[3]} colour images; add channels=1 or channels=3 "
                    f"to the spec (e.g. {parsed.kind}:{parsed.path},channels=1) to convert them all. The {by_channels[minority]} "
                    f"{'grey' if minority == 1 else 'colour'} ones:"
                )
                problems.extend("  " + line for line in _listed("files", entries))
            else:
                (channels,) = by_channels
        size = parsed.size
        if size is None and shapes:
            sizes = collections.Counter((s.height, s.width) for s in shapes.values())
            if len(sizes) == 1 and next(iter(sizes))[0] == next(iter(sizes))[1]:
                size = next(iter(sizes))[0]
            else:
                common = ", ".join(f"{w}x{h} ({n})" for (h, w), n in sizes.most_common(5))
                problems.append(
                    f"{parsed.path}: the images have different or non-square sizes ({common}{', ...' if len(sizes) > 5 else ''}); "
                    f"add size=N to the spec (e.g. {parsed.kind}:{parsed.path},size={sizes.most_common(1)[0][0][0]}) to resize them all to NxN"
                )
        checked.size, checked.channels = size, channels
        if file_problems.get("large"):  # decoding them would allocate without bound: refused before any work
            checked.problems = problems + _file_problem_lines(file_problems)
            return checked
        if mapping or decode:
            checked.mapping, checked.intensity = _decide_mapping(parsed, shapes, texts, pool, workers)
        if decode:
            ok = sorted(set(shapes) - set(checked.dropped))
            for part, (_, errors) in zip(
                _chunks_of(ok),
                _ordered(
                    pool,
                    _read_chunk,
                    [[texts[i] for i in part] for part in _chunks_of(ok)],
                    channels or 1,
                    size or 8,
                    checked.mapping,
                    ahead=2 * workers,
                ),
            ):
                for j, i in enumerate(part):
                    if errors[j] is not None:
                        file_problems.setdefault("unreadable", []).append(f"{listing.files[i]}: {errors[j]}")
    checked.problems = problems + _file_problem_lines(file_problems)
    return checked


def _chunks_of(items: Sequence[Any]) -> list[Sequence[Any]]:
    return [items[i : i + CHUNK] for i in range(0, len(items), CHUNK)]


def _decide_mapping(
    parsed: ImageSpec, shapes: dict[int, Header], texts: list[str], pool, workers: int
) -> tuple[PixelMapping, dict[str, Any]]:
    """The dataset's value mapping and what the record says of it: ``window=`` when given;
    otherwise 16-bit/float images map the range their data uses (the sBIT bits all of them
    declare, else the dataset's min..max: one range for all, so their relative brightness
    stays); 8-bit images are kept as stored."""
    depths = sorted({h.depth for h in shapes.values()})
    intensity: dict[str, Any] = {"bit_depth": depths}
    base = {"fit": parsed.fit, "frame": parsed.frame}
    window = parsed.window_range()
    if window is not None:
        intensity.update(source_range=list(window), mapping=f"window={parsed.window} onto 0..255 (clipped)")
        return PixelMapping(window, True, **base), intensity
    deep = [i for i, h in shapes.items() if h.depth in ("16-bit", "float")]
    if not deep:
        intensity["mapping"] = "8-bit values kept" if depths != ["dicom"] else "DICOM window (VOI) per file"
        return PixelMapping(None, False, **base), intensity
    sbits = {shapes[i].sbit for i in deep}
    if len(sbits) == 1 and None not in sbits and all(shapes[i].depth == "16-bit" for i in deep):
        (bits,) = sbits
        value_range = (0.0, float(2**bits - 1))
        intensity.update(
            source_range=list(value_range), mapping=f"PNG sBIT: {bits} significant bits, 0..{2**bits - 1} onto 0..255"
        )
        return PixelMapping(value_range, False, **base), intensity
    ranges = [
        r
        for part in _ordered(pool, _range_chunk, _chunks_of([texts[i] for i in deep]), parsed.frame, ahead=2 * workers)
        for r in part
        if r
    ]
    low = min((r[0] for r in ranges), default=0.0)
    high = max((r[1] for r in ranges), default=255.0)
    high = high if high > low else low + 1.0
    intensity.update(source_range=[low, high], mapping=f"the dataset's min..max ({low:g}..{high:g}) onto 0..255")
    return PixelMapping((low, high), False, **base), intensity


def _file_problem_lines(file_problems: dict[str, list[str]]) -> list[str]:
    titles = {
        "missing": "CSV paths that do not exist",
        "duplicate": "paths listed more than once in the manifest",
        "special": "FIFOs, devices or sockets among the images (not opened)",
        "large": f"images over {MAX_SIDE} px a side; add size=N to the spec (e.g. size=224) to resize them while converting",
        "frames": "multi-frame images; add frame=K to the spec (0-based) to use one frame of each, or export one 2D image per file",
        "label": "labels not in the class list",
        "unreadable": "unreadable, damaged or truncated images (replace or remove them)",
        "small": f"images under {MIN_SIDE} px",
    }
    lines = []
    for kind, entries in file_problems.items():
        if not entries:
            continue
        lines.append(f"{len(entries)} {titles.get(kind, kind)}:")
        lines.extend("  " + line for line in _listed("files", entries))
    return lines


def _split_problems(listing: Listing, splits: list[str], parsed: ImageSpec, problems: list[str]) -> None:
    n_classes = len(listing.class_names)
    if n_classes < 2:
        problems.append(
            f"{parsed.path}: a single class ({', '.join(listing.class_names) or 'none'}); classification needs at least 2 "
            f"({'class folders' if parsed.kind == 'folder' else 'label values'})"
        )
    for split in SPLIT_NAMES:
        members = [i for i, s in enumerate(splits) if s == split]
        if not members:
            hint = f"raise {split}= in the spec or add images" if split != "train" else "lower val= and test="
            problems.append(f"{parsed.path}: the {split} split is empty ({len(splits)} images in all); {hint}")
            continue
        if split == "train" and listing.multi_label:
            positives = np.asarray([listing.labels[i] for i in members]).sum(axis=0) if members else []
            absent = [listing.class_names[c] for c in range(len(positives)) if positives[c] == 0]
            if absent:
                problems.append(
                    f"{parsed.path}: labels {', '.join(absent)} are never positive in the train split; add such images or drop the label"
                )
        if split == "train" and not listing.multi_label:
            counts = collections.Counter(listing.labels[i] for i in members)
            absent = [listing.class_names[c] for c in range(n_classes) if counts[c] == 0]
            if absent and not listing.problems:  # an empty class folder is reported already
                problems.append(
                    f"{parsed.path}: classes {', '.join(absent)} have no training image; add some or drop the class"
                )


def _duplicates(checked: Checked, file_problems: dict[str, list[str]]) -> None:
    """Groups of files with identical bytes in more than one split or class (a warning: a
    benchmark's official split may hold them); ``dedupe=drop-train`` drops the train-side copies
    of cross-split groups. Groups within one split and class are left alone."""
    listing, splits = checked.listing, checked.splits
    by_hash: dict[str, list[int]] = collections.defaultdict(list)
    for i, digest in enumerate(checked.hashes):
        if digest:
            by_hash[digest].append(i)
    for members in by_hash.values():
        cross_split = len({splits[i] for i in members}) > 1
        cross_class = len({json.dumps(listing.labels[i]) for i in members}) > 1
        if not (cross_split or cross_class):
            continue
        checked.duplicates.append(members)
        if checked.parsed.dedupe == "drop-train" and cross_split:
            checked.dropped += [i for i in members if splits[i] == "train"]


def duplicate_lines(checked: Checked, limit: int = MAX_LISTED) -> list[str]:
    """The warning about identical content, one line per group (the first ``limit``)."""
    if not checked.duplicates:
        return []
    listing, splits = checked.listing, checked.splits
    names = listing.class_names
    lines = [
        f"warning: {len(checked.duplicates)} group(s) of identical images in more than one split or class "
        f"(training goes on{'; dedupe=drop-train dropped ' + str(len(checked.dropped)) + ' train-side copies' if checked.dropped else '; add dedupe=drop-train to drop the train-side copies'}):"
    ]
    for members in checked.duplicates[:limit]:
        lines.append(
            "  "
            + ", ".join(f"{listing.files[i]} ({splits[i]}, {_label_text(listing.labels[i], names)})" for i in members)
        )
    if len(checked.duplicates) > limit:
        lines.append(f"  ... and {len(checked.duplicates) - limit} more groups")
    return lines


def _label_text(label: Any, names: list[str]) -> str:
    if isinstance(label, list):
        return "+".join(names[c] for c, v in enumerate(label) if v) or "none"
    return names[int(label)]


def _format(spec: str, problems: list[str]) -> str:
    return f"dataset {spec!r} has problems; nothing was converted or trained:\n" + "\n".join(
        f"  - {p}" if not p.startswith("  ") else f"  {p}" for p in problems
    )


def spec_problems(spec: str, data_dir: Path | None, workers: int | None = None) -> list[str]:
    """Every problem of a ``folder:``/``csv:`` spec, as readable lines ([] when usable).

    Instant when the converted file is current (its content key matches: the files were checked
    when it was made); otherwise a full check pass (every file decoded, nothing written).
    """
    try:
        parsed = parse_image_spec(spec)
    except PeprInputError as exc:
        return [str(exc)]
    try:
        if is_current(spec, data_dir):
            return []
        checked = check(spec, data_dir, workers=workers or min(default_workers(), 8), decode=True)
    except PeprInputError as exc:
        return [str(exc)]
    return group_problems(parsed.spec, checked.problems)


def group_problems(spec: str, lines: list[str]) -> list[str]:
    """Problem lines -> one string per problem (its indented file lines kept with it, on new
    lines), each prefixed with the dataset spec."""
    grouped: list[str] = []
    for line in lines:
        if line.startswith("  ") and grouped:
            grouped[-1] += "\n      " + line.strip()
        else:
            grouped.append(f"dataset {spec!r}: {line}")
    return grouped


def default_workers() -> int:
    """Cores this process may use (SLURM/cgroup affinity)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def prepare(spec: str, data_dir: Path | None, workers: int | None = None, log=None, by_workflow: bool = False) -> Path:
    """Convert a ``folder:``/``csv:`` spec into its cached MedMNIST-layout npz (once) and return
    its path. A current cache (same content key) is returned as is; otherwise every file is
    checked and decoded (``workers`` processes, default: this process's cores) and the npz and
    its JSON record are written atomically. Raises PeprInputError listing every problem (the
    first 20 files of each kind, then a count) before anything is written. ``by_workflow``: the
    workflow's prepare_images rule converts (recorded: its sweep's jobs then never convert
    another version of the files, :func:`changed_under_sweep`)."""
    path, problems = convert(spec, data_dir, workers=workers, log=log, by_workflow=by_workflow)
    if problems:
        raise PeprInputError(_format(spec, problems))
    return path


def changed_under_sweep(spec: str, data_dir: Path | None) -> str | None:
    """One line when the workflow converted this spec and its files' content changed since: a
    training job then refuses to convert them again (one sweep, one version of the data)."""
    try:
        target = cache_path(spec, data_dir)
    except PeprInputError:
        return None
    record = read_info(target)
    if record is None or record.get("converted_by") != "workflow" or conversion_state(spec, data_dir) != "changed":
        return None
    return (
        f"dataset {spec.strip()!r}: its images changed after the workflow converted them into {target}, while its sweep "
        "may still be training on that version; run the workflow again (it converts them once more and retrains every "
        f"cell that used them), or delete {target} to convert them here"
    )


def prepare_problems(spec: str, data_dir: Path | None, workers: int | None = None, log=None) -> list[str]:
    """:func:`prepare` for a check that lists problems with others (``pepr train``'s validation):
    converts when the spec is usable (so the training reads the cache without decoding twice) and
    returns the problems as :func:`spec_problems` words them ([] when converted or current)."""
    try:
        _, problems = convert(spec, data_dir, workers=workers, log=log)
    except PeprInputError as exc:
        return [str(exc)]
    return group_problems(spec.strip(), problems)


def convert(
    spec: str, data_dir: Path | None, workers: int | None = None, log=None, by_workflow: bool = False
) -> tuple[Path, list[str]]:
    """The conversion behind :func:`prepare`: ``(cache path, problem lines)``; nothing is written
    when there are problems (and no lock file is left), temp files of killed conversions are
    removed first. The images are decoded a chunk at a time straight into the npz being
    written, so memory stays bounded by the chunks in flight, not the dataset."""
    parsed = parse_image_spec(spec)
    target = cache_path(parsed, data_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    with _cache_lock(target) as lock:
        _remove_stale_temp_files(target)
        if is_current(spec, data_dir):
            return target, []
        workers = workers or default_workers()
        checked = check(spec, data_dir, workers=workers, decode=False)
        problems = checked.problems or _write_streaming(target, checked, workers)
        if problems:
            lock.unlink(missing_ok=True)  # a rejected spec leaves nothing behind
            return target, problems
        listing = checked.listing
        source = parsed.path.absolute() if parsed.kind == "folder" else parsed.path.absolute().parent
        record = {
            "spec": spec,
            "content_key": checked.key,
            "source_digest": _source_digest(parsed, listing, checked.hashes),
            "converted_by": "workflow" if by_workflow else "pepr train",
            "settings": parsed.settings(),
            "task": "multi-label"
            if listing.multi_label
            else ("binary-class" if len(listing.class_names) == 2 else "multi-class"),
            "class_names": listing.class_names,
            "label_order": {str(i): name for i, name in enumerate(listing.class_names)},
            "counts": {split: len(checked.members(split)) for split in SPLIT_NAMES},
            "class_counts": _class_counts(listing, checked.splits, checked.dropped),
            "size": checked.size,
            "channels": checked.channels,
            "split_from": "listed"
            if all(s is not None for s in listing.splits)
            else f"seeded stratified split val={parsed.val:g}, test={parsed.test:g}, seed={parsed.seed}",
            "source": str(parsed.path.absolute()),
            "n_files": len(listing.files),
            "ignored_files": listing.ignored,
            "intensity": checked.intensity,
            "fit": parsed.fit,
            # identical content in two splits or classes: each group as [file, split, class] rows
            "duplicates": {
                "count": len(checked.duplicates),
                "groups": [
                    [
                        [
                            _relative(listing.files[i], source),
                            checked.splits[i],
                            _label_text(listing.labels[i], listing.class_names),
                        ]
                        for i in members
                    ]
                    for members in checked.duplicates
                ],
            },
            "dedupe": {
                "option": parsed.dedupe,
                "dropped": [_relative(listing.files[i], source) for i in checked.dropped],
            },
            # row order of each split's arrays: which file each image came from
            "files": {
                split: [_relative(listing.files[i], source) for i in checked.members(split)] for split in SPLIT_NAMES
            },
        }
        from pepr.results.runs import atomic_write_json

        atomic_write_json(info_path(target), record)
        if log is not None:
            for line in duplicate_lines(checked):
                log(line)
            log(
                f"converted {len(listing.files) - len(checked.dropped)} images of {spec} into {target} ({checked.size} px, "
                f"{checked.channels} channel(s), {checked.intensity.get('mapping')})"
            )
        return target, []


def _write_streaming(target: Path, checked: Checked, workers: int) -> list[str]:
    """Decode every kept file into ``target`` (written to a temp file, then renamed); the problem
    lines of files that fail to decode ([] when written). Member dates are fixed and the arrays
    are those ``np.savez`` would write, so the same images give the same bytes."""
    import zipfile

    listing = checked.listing
    texts = [str(p) for p in listing.files]
    size, channels = int(checked.size or 8), int(checked.channels or 1)
    failed: list[str] = []
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with (
            _pool(max(1, min(workers, len(texts) // 64 or 1))) as pool,
            zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as archive,
        ):
            for split in SPLIT_NAMES:
                members = checked.members(split)
                shape = (len(members), size, size) if channels == 1 else (len(members), size, size, channels)
                info = zipfile.ZipInfo(f"{split}_images.npy", date_time=(1980, 1, 1, 0, 0, 0))
                with archive.open(info, "w", force_zip64=True) as handle:
                    np.lib.format.write_array_header_1_0(
                        handle,
                        {
                            "descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)),
                            "fortran_order": False,
                            "shape": shape,
                        },
                    )
                    parts = _chunks_of(members)
                    results = _ordered(
                        pool,
                        _read_chunk,
                        [[texts[i] for i in part] for part in parts],
                        channels,
                        size,
                        checked.mapping,
                        ahead=2 * workers,
                    )
                    for part, (pixels, errors) in zip(parts, results):
                        failed += [
                            f"{listing.files[i]}: {errors[j]}" for j, i in enumerate(part) if errors[j] is not None
                        ]
                        handle.write(np.ascontiguousarray(pixels[..., 0] if channels == 1 else pixels).tobytes())
                labels = np.asarray([listing.labels[i] for i in members], dtype=np.int64).reshape(len(members), -1)
                info = zipfile.ZipInfo(f"{split}_labels.npy", date_time=(1980, 1, 1, 0, 0, 0))
                with archive.open(info, "w", force_zip64=True) as handle:
                    np.lib.format.write_array(handle, labels, allow_pickle=False)
        if failed:
            return _file_problem_lines({"unreadable": failed})
        os.replace(tmp, target)
        return []
    finally:
        tmp.unlink(missing_ok=True)


def _remove_stale_temp_files(target: Path) -> None:
    """Temp files of conversions of ``target`` whose process is gone (killed mid-write)."""
    for tmp in target.parent.glob(f".{target.name}.*.tmp"):
        pid = tmp.name[len(f".{target.name}.") : -len(".tmp")]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _relative(path: Path, base: Path) -> str:
    try:
        return str(path.absolute().relative_to(base))
    except ValueError:
        return str(path.absolute())


def _class_counts(listing: Listing, splits: list[str], dropped: Sequence[int] = ()) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    skip = set(dropped)
    for split in SPLIT_NAMES:
        counts = collections.Counter()
        for index, (label, s) in enumerate(zip(listing.labels, splits)):
            if s != split or index in skip:
                continue
            if listing.multi_label:
                for i, v in enumerate(label):
                    if v:
                        counts[i] += 1
            else:
                counts[int(label)] += 1
        out[split] = {name: int(counts[i]) for i, name in enumerate(listing.class_names)}
    return out


@contextlib.contextmanager
def _cache_lock(target: Path):
    """One conversion of a cache file at a time (two `pepr train` by hand, or a job and a user);
    yields the lock file's path."""
    import fcntl

    lock = target.with_name(f".{target.name}.lock")
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield lock
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def dataset_facts(spec: str, data_dir: Path | None) -> dict[str, Any]:
    """Split sizes, channels, size, classes and train class counts of a spec without converting
    it (``pepr estimate``): from the cache's record when current, else a listing and a header
    pass (no image decoded). PeprInputError when the spec has problems found that way."""
    parsed = parse_image_spec(spec)
    record = read_info(cache_path(parsed, data_dir)) if is_current(spec, data_dir) else None
    if record is None:
        checked = check(spec, data_dir, workers=1, decode=False, mapping=False)
        if checked.problems:
            raise PeprInputError(_format(spec, checked.problems))
        listing = checked.listing
        counts = {split: len(checked.members(split)) for split in SPLIT_NAMES}
        class_counts = _class_counts(listing, checked.splits, checked.dropped)
        record = {
            "counts": counts,
            "class_counts": class_counts,
            "channels": checked.channels,
            "size": checked.size,
            "class_names": listing.class_names,
            "task": "multi-label" if listing.multi_label else "single-label",
        }
    train_counts = record["class_counts"]["train"]
    return {
        "counts": record["counts"],
        "channels": int(record["channels"]),
        "size": int(record["size"]),
        "num_classes": len(record["class_names"]),
        # a multi-label fraction is stratified by first positive label, not by these counts
        "train_class_counts": None
        if record["task"] == "multi-label"
        else tuple(int(train_counts[n]) for n in record["class_names"]),
    }


def fingerprint(spec: str, data_dir: Path | None) -> list[Any]:
    """Stamps of a spec's source (for the workflow's validation cache): a hash of the listed
    files' paths, sizes and mtimes; unreadable specs give their text only."""
    try:
        parsed = parse_image_spec(spec)
        return [spec, _content_key(parsed, scan(parsed, data_dir))]
    except (PeprInputError, OSError):
        return [spec, None]


class ImageKind(DatasetKind):
    """``folder:`` or ``csv:`` (one instance each): the user's images, converted once into a cached
    npz (:func:`prepare`) and then read exactly as ``npz:``."""

    converted = True

    def __init__(self, name: str) -> None:
        self.name = name

    def matches(self, spec: str) -> bool:
        return spec.startswith(f"{self.name}:")

    def parse(self, spec: str) -> DatasetSpec:
        parsed = parse_image_spec(spec)
        return DatasetSpec(kind=parsed.kind, spec=spec, path=parsed.path, size=parsed.size)

    def short_name(self, parsed: DatasetSpec) -> str:
        return image_dataset_name(parse_image_spec(parsed.spec))

    def file(self, parsed: DatasetSpec, data_dir: Path | None) -> Path | None:
        return cache_path(parsed.spec, data_dir)  # the converted file (deterministic from the spec)

    def problems(self, parsed: DatasetSpec, data_dir: Path | None, allow_download: bool) -> list[str]:
        return spec_problems(parsed.spec, data_dir)

    def load(
        self,
        parsed: DatasetSpec,
        name: str,
        data_dir: Path | None,
        allow_download: bool,
        workers: int | None,
        log: Callable | None,
    ) -> ImageData:
        import dataclasses

        from pepr.datasets.npz import NpzKind

        spec = parsed.spec
        path = prepare(spec, data_dir, workers=workers, log=log)
        npz_kind = NpzKind()
        loaded = npz_kind.load(npz_kind.parse(f"npz:{path}"), name, data_dir, False, None, None)
        info = read_info(path) or {}
        duplicates = info.get("duplicates") or {}
        if duplicates.get("count") and log is not None:  # said at every training on this data, not only at conversion
            dropped = (info.get("dedupe") or {}).get("dropped") or []
            log(
                f"warning: {spec}: {duplicates['count']} group(s) of identical images in more than one split or class "
                f"({'dedupe=drop-train dropped ' + str(len(dropped)) + ' train-side copies' if dropped else 'kept; dedupe=drop-train drops the train-side copies'}); "
                f"they are listed in {path.with_suffix('.json')} and in this run's dataset_info"
            )
        class_names = tuple(info.get("class_names") or loaded.class_names)
        details = {
            "class_names": list(class_names),
            "task": info.get("task"),
            "counts": info.get("counts"),
            "class_counts": info.get("class_counts"),
            "split_from": info.get("split_from"),
            "source": info.get("source"),
            "cache": str(path),
            "intensity": info.get("intensity"),
            "fit": info.get("fit", "squash"),
            "duplicates": info.get("duplicates"),
            "dedupe": info.get("dedupe"),
        }
        return dataclasses.replace(
            loaded,
            name=name,
            class_names=class_names,
            num_classes=len(class_names),
            description=f"{spec} ({info.get('task', '?')}, {len(class_names)} classes, converted to {path})",
            details=details,
        )

    def facts(
        self, parsed: DatasetSpec, name: str, data_dir: Path | None, given: Sequence[int] | None
    ) -> dict[str, Any]:
        facts = dataset_facts(parsed.spec, data_dir)
        counts = facts["counts"]
        return facts_dict(
            counts["train"],
            counts["val"],
            counts["test"],
            facts["channels"],
            facts["num_classes"],
            facts["size"],
            facts["train_class_counts"],
            f"images listed from {parsed.path}",
        )

    def stamps(self, parsed: DatasetSpec, data_dir: Path | None) -> list[Any]:
        return [fingerprint(parsed.spec, data_dir)]

    def planned_digest(
        self, parsed: DatasetSpec, data_dir: Path | None, file_digest: Callable[[str], str | None]
    ) -> str | None:
        return planned_digest(parsed.spec, data_dir, file_digest)

    def source_changed(self, parsed: DatasetSpec, data_dir: Path | None) -> bool:
        return conversion_state(parsed.spec, data_dir) == "changed"

    def prepare_problems(self, spec: str, data_dir: Path | None, workers: int | None) -> list[str]:
        changed = changed_under_sweep(spec, data_dir)
        return [changed] if changed else prepare_problems(spec, data_dir, workers=workers)
