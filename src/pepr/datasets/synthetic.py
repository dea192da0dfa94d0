"""``synthetic`` and ``synthetic:KEY=VALUE,...``: a procedurally generated image-classification set
(:func:`make_synthetic`); NOT medical data, only shaped like it, for offline demos and tests. Keys
and defaults are :data:`SYNTHETIC_DEFAULTS`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pepr.datasets.base import SPLITS, DatasetKind, DatasetSpec, ImageData, facts_dict
from pepr.datasets.npzcheck import MIN_IMAGE_SIDE
from pepr.errors import PeprInputError

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
    "size": (MIN_IMAGE_SIDE, 512),  # above 512 px the generation itself takes minutes
    "channels": (1, 3),
    "n_train": (1, 1_000_000),
    "n_val": (1, 1_000_000),
    "n_test": (1, 1_000_000),
    "imbalance": (1.0, 100.0),
    "noise": (0.0, 1.0),
    "seed": (0, 2**31 - 1),
}


def _parse_number(key: str, text: str, spec: str) -> int | float:
    try:
        value: int | float = int(text) if key in _SYNTHETIC_INT_KEYS else float(text)
    except ValueError:
        kind = "an integer" if key in _SYNTHETIC_INT_KEYS else "a number"
        raise PeprInputError(f"dataset spec {spec!r}: option {key}={text!r} must be {kind}") from None
    low, high = _SYNTHETIC_LIMITS[key]
    if not (low <= value <= high) or value != value:  # value != value catches NaN
        raise PeprInputError(
            f"dataset spec {spec!r}: option {key}={text} is out of range; use {low:g} <= {key} <= {high:g}"
        )
    return value


def _parse_synthetic(spec: str) -> DatasetSpec:
    explicit: dict[str, int | float] = {}
    body = spec[len("synthetic:") :] if spec.startswith("synthetic:") else ""
    if spec.startswith("synthetic:") and not body:
        raise PeprInputError(
            f"dataset spec {spec!r}: nothing after 'synthetic:'; use plain 'synthetic' or key=value pairs"
        )
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
            cx, cy = rng.uniform(-centre_range, centre_range, (2, n, 1, 1))
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


class SyntheticKind(DatasetKind):
    """The synthetic set: generated in memory from its options, no file."""

    name = "synthetic"

    def stored_image_shape(self, parsed: DatasetSpec, data_file: Path | None) -> tuple[int, int] | None:
        options = dict(parsed.options)
        return (int(options["size"]),) * 2 if "size" in options else None

    def training_class_counts(self, parsed: DatasetSpec, data_dir: Path | None) -> list[int] | None:
        options = dict(parsed.options)
        counts = _class_counts(int(options["n_train"]), int(options["classes"]), float(options["imbalance"]))
        return [int(c) for c in counts]

    def matches(self, spec: str) -> bool:
        return spec == "synthetic" or spec.startswith("synthetic:")

    def parse(self, spec: str) -> DatasetSpec:
        return _parse_synthetic(spec)

    def short_name(self, parsed: DatasetSpec) -> str:
        return "-".join(["synthetic"] + [f"{key}{value:g}" for key, value in parsed.explicit_options])

    def load(
        self,
        parsed: DatasetSpec,
        name: str,
        data_dir: Path | None,
        allow_download: bool,
        workers: int | None,
        log: Callable | None,
    ) -> ImageData:
        return make_synthetic(dict(parsed.options), name=name)

    def facts(
        self, parsed: DatasetSpec, name: str, data_dir: Path | None, given: Sequence[int] | None
    ) -> dict[str, Any]:
        options = dict(parsed.options)
        classes = int(options["classes"])
        counts = synthetic_class_counts(int(options["n_train"]), classes, float(options["imbalance"]))
        return facts_dict(
            options["n_train"],
            options["n_val"],
            options["n_test"],
            options["channels"],
            classes,
            options["size"],
            tuple(counts),
            "synthetic options",
        )
