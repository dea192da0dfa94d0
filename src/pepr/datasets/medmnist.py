"""MedMNIST 2D flags (``FLAG`` or ``FLAG@SIZE``): MedMNIST's own files in ``DATA_DIR``, downloaded
through the ``medmnist`` package when missing (the workflow's ``download_data`` rule)."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pepr.datasets.base import DatasetKind, DatasetSpec, ImageData, facts_dict
from pepr.datasets.medmnist_info import default_data_dir
from pepr.datasets.medmnist_info import medmnist_info_module as _medmnist_info_module
from pepr.datasets.npz import given_facts, label_facts, npz_problems, read_checked, train_class_counts
from pepr.errors import PeprInputError

#: Image sizes MedMNIST (v2 at 28 px, MedMNIST+ above) is published at.
MEDMNIST_SIZES: tuple[int, ...] = (28, 64, 128, 224)


def _medmnist_info() -> dict:
    return _medmnist_info_module().INFO


def medmnist_info(flag: str) -> dict:
    """MedMNIST's metadata of one dataset flag (``n_samples`` per split, ``n_channels``,
    ``label`` names), read without importing torch; PeprInputError for an unknown flag."""
    info = _medmnist_info()
    if flag not in info:
        raise PeprInputError(f"unknown MedMNIST flag {flag!r}; known flags: {', '.join(sorted(info))}")
    return info[flag]


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


def medmnist_filename(flag: str, size: int) -> str:
    """MedMNIST's own file name for a flag at a size (``pneumoniamnist.npz``, ``pneumoniamnist_64.npz``)."""
    return f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz"


def medmnist_file(spec: DatasetSpec, data_dir: Path | None) -> Path:
    """Where a MedMNIST flag's file is (``DATA_DIR`` or medmnist's default root)."""
    assert spec.flag is not None and spec.size is not None
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    return root / medmnist_filename(spec.flag, spec.size)


def download_hint(spec: DatasetSpec, data_dir: Path | None) -> str:
    """A sentence saying where to put a missing MedMNIST file and how to fetch it."""
    assert spec.flag is not None and spec.size is not None
    path = medmnist_file(spec, data_dir)
    info = _medmnist_info()[spec.flag]
    url = info["url"] if spec.size == 28 else info[f"url_{spec.size}"]
    return (
        f"put {path.name} in {path.parent} (download it from {url}, or run "
        f"`python -c \"import medmnist; medmnist.{info['python_class']}(split='test', download=True, "
        f"size={spec.size}, root='{path.parent}')\"` on a machine with internet and copy the file over)"
    )


def _download_medmnist(spec: DatasetSpec, data_dir: Path | None) -> None:
    """Fetch a MedMNIST file through the ``medmnist`` package; PeprInputError when that fails."""
    path = medmnist_file(spec, data_dir)
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
        raise PeprInputError(
            f"dataset {spec.spec!r}: the download did not produce {path}; {download_hint(spec, data_dir)}"
        )


class MedmnistKind(DatasetKind):
    """A MedMNIST 2D flag; every spec no other kind claims is read as one (so a typo gets the list
    of flags)."""

    name = "medmnist"
    fetched = True

    def matches(self, spec: str) -> bool:
        return True

    def parse(self, spec: str) -> DatasetSpec:
        return _parse_medmnist(spec)

    def short_name(self, parsed: DatasetSpec) -> str:
        return parsed.flag if parsed.size == 28 else f"{parsed.flag}_{parsed.size}"

    def training_class_counts(self, parsed: DatasetSpec, data_dir: Path | None) -> list[int] | None:
        return train_class_counts(self.file(parsed, data_dir))

    def file(self, parsed: DatasetSpec, data_dir: Path | None) -> Path | None:
        return medmnist_file(parsed, data_dir)

    def problems(self, parsed: DatasetSpec, data_dir: Path | None, allow_download: bool) -> list[str]:
        path = medmnist_file(parsed, data_dir)
        if not path.exists():
            if allow_download:
                return []
            return [f"dataset {parsed.spec!r}: {path} not found; {download_hint(parsed, data_dir)}"]
        info = _medmnist_info()[parsed.flag]
        problems = npz_problems(path, expected_classes=len(info["label"]), expected_channels=info["n_channels"])
        return [f"dataset {parsed.spec!r}: {problem}" for problem in problems]

    def load(
        self,
        parsed: DatasetSpec,
        name: str,
        data_dir: Path | None,
        allow_download: bool,
        workers: int | None,
        log: Callable | None,
    ) -> ImageData:
        path = medmnist_file(parsed, data_dir)
        if not path.exists() and allow_download:
            _download_medmnist(parsed, data_dir)
        arrays = read_checked(f"dataset {parsed.spec!r}", path, self.problems(parsed, data_dir, False))
        info = _medmnist_info()[parsed.flag]
        class_names = tuple(info["label"][str(i)] for i in range(len(info["label"])))
        description = f"MedMNIST {parsed.flag} ({info['task']}) at {parsed.size} px from {path}"
        return ImageData(
            name=name,
            num_classes=len(class_names),
            class_names=class_names,
            description=description,
            multi_label=arrays["train_y"].ndim == 2,
            **arrays,
        )

    def facts(
        self, parsed: DatasetSpec, name: str, data_dir: Path | None, given: Sequence[int] | None
    ) -> dict[str, Any]:
        path = medmnist_file(parsed, data_dir)
        info = medmnist_info(parsed.flag)
        if not path.exists():
            if given is not None:
                return given_facts(path, given, int(parsed.size), int(info["n_channels"]), len(info["label"]))
            sizes = info["n_samples"]
            return facts_dict(
                sizes["train"],
                sizes["val"],
                sizes["test"],
                info["n_channels"],
                len(info["label"]),
                parsed.size,
                None,
                f"MedMNIST's published split sizes ({path} not present yet)",
            )
        return label_facts(path, self.problems(parsed, data_dir, False), len(info["label"]))
