"""Checks on one training run's settings, shared by ``pepr train`` and the Snakemake workflow.

:func:`training_problems` is the single list of what makes a training run fail before it starts
(unknown country, batch of 1, infinite learning rate, unknown timm tag, ...). The workflow runs it
on every distinct job's settings while planning, so a config typo is reported before anything is
scheduled, instead of planning a retrain that fails. It never imports torch; timm is consulted
only through a catalogue (``pepr.grid.timm_catalogue``) when one is passed in.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pepr.errors import PeprInputError

#: Largest seed numpy/torch accept (uint32).
MAX_SEED = 2**32 - 1
#: Training precisions ``pepr train --precision`` accepts.
PRECISIONS = ("fp32", "bf16")
#: File name endings ``--save-model`` writes.
SAVE_MODEL_SUFFIXES = (".pt", ".pth", ".safetensors")
#: Keys of a training-settings mapping that hold file system paths.
PATH_KEYS = ("out_dir", "data_dir", "save_model", "carbon_intensity", "dataset", "init")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def device_problems(device: Any) -> list[str]:
    """Problems with a device string (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``)."""
    text = device.strip() if isinstance(device, str) else ""
    if text in ("auto", "cpu", "cuda", "mps") or (text.startswith("cuda:") and text[5:].isdigit()):
        return []
    return [f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps"]


def country_problems(country: Any) -> list[str]:
    """Problems with a country code: it must be an ISO 3166-1 alpha-3 code CodeCarbon knows."""
    from pepr.measure import check_country

    try:
        check_country(country)
    except PeprInputError as exc:
        return [str(exc)]
    return []


def carbon_intensity_problems(path: str | os.PathLike) -> list[str]:
    """Problems with a carbon-intensity CSV (columns ``timestamp,gco2_per_kwh``)."""
    from pepr.measure import read_carbon_intensity

    try:
        read_carbon_intensity(Path(path))
    except PeprInputError as exc:
        return [str(exc)]
    except (OSError, ValueError) as exc:  # read_carbon_intensity should wrap these; be safe
        return [f"carbon intensity file {path}: {exc}"]
    return []


def save_model_problems(path: str | os.PathLike) -> list[str]:
    """Problems with a ``save_model`` path: file suffix, not a folder, a writable parent."""
    path = Path(path)
    if path.suffix not in SAVE_MODEL_SUFFIXES:
        return [f"save_model {path}: use a {', '.join(SAVE_MODEL_SUFFIXES)} file name"]
    if path.is_dir():
        return [f"save_model {path} is a folder; give a file name"]
    parent = path.parent.absolute()
    while not parent.exists():  # the nearest existing ancestor decides whether it can be created
        parent = parent.parent
    if not os.access(parent, os.W_OK | os.X_OK):
        return [f"save_model {path}: folder {parent} is not writable"]
    return []


def _init_problems(init: Any, check_checkpoint: bool) -> tuple[str | None, list[str]]:
    """(kind, problems) for an init string: scratch, imagenet or checkpoint:PATH."""
    if not isinstance(init, str) or not init:
        return None, [f"init must be scratch, imagenet or checkpoint:PATH, got {init!r}"]
    if init in ("scratch", "imagenet"):
        return init, []
    if init.startswith("checkpoint:"):
        path = init[len("checkpoint:") :]
        if not path:
            return "checkpoint", [f"init {init!r} names no checkpoint file; use checkpoint:PATH"]
        if check_checkpoint and not Path(path).is_file():
            return "checkpoint", [f"checkpoint file {path} not found (init {init!r})"]
        return "checkpoint", []
    return None, [f"init must be scratch, imagenet or checkpoint:PATH, got {init!r}"]


def model_problems(model: Any, init_kind: str | None, catalogue: Mapping[str, Any]) -> list[str]:
    """Problems with a timm model name (``arch`` or ``arch.tag``) checked against a catalogue.

    ``catalogue`` is :func:`pepr.grid.timm_catalogue`'s dict: ``models`` (architectures),
    ``pretrained`` (architectures with weights) and, when present, ``pretrained_tags``
    (``arch.tag`` names); a tagged name is checked against the tags only when they are there.
    """
    if not isinstance(model, str) or not model.strip():
        return ["model name is empty"]
    arch, _, tag = model.partition(".")
    models = set(catalogue.get("models", ()))
    if arch not in models:
        close = sorted(name for name in models if arch[:6] and arch[:6] in name)[:5]
        hint = f" (similar names: {', '.join(close)})" if close else ""
        return [f"unknown timm model {model!r}{hint}; see timm.list_models()"]
    tags = catalogue.get("pretrained_tags")
    if tag and tags is not None and model not in set(tags):
        known = sorted(name for name in tags if name.split(".")[0] == arch)[:5]
        hint = f"; known tags: {', '.join(known)}" if known else f"; {arch!r} has no pretrained tags"
        return [f"unknown pretrained tag {model!r}{hint}"]
    if init_kind == "imagenet" and not tag and arch not in set(catalogue.get("pretrained", ())):
        return [f"timm has no pretrained weights for {model!r}; use init scratch for it"]
    return []


def training_problems(
    settings: Mapping[str, Any],
    catalogue: Mapping[str, Any] | None = None,
    check_data: bool = True,
    check_checkpoint: bool = True,
) -> list[str]:
    """Every problem ``pepr train`` would stop on, for a TrainConfig-like mapping; [] when fine.

    ``settings`` keys are TrainConfig fields (model, dataset, out_dir, init, fraction, epochs,
    seed, data_dir, image_size, batch_size, lr, device, country, save_model, threads, precision,
    carbon_intensity); missing keys take TrainConfig's defaults. ``catalogue`` is
    :func:`pepr.grid.timm_catalogue`'s dict; without it the model is not checked (the caller
    checks it with timm). ``check_data`` runs :func:`pepr.data.dataset_problems` (a MedMNIST
    file may be downloaded later, so its absence is fine); ``check_checkpoint`` requires a
    ``checkpoint:PATH`` file to exist (off while planning, when a pretraining job writes it).
    """
    problems: list[str] = []
    get = settings.get

    def check(condition: bool, message: str) -> None:
        if not condition:
            problems.append(message)

    fraction, epochs, seed = get("fraction", 1.0), get("epochs", 10), get("seed", 0)
    batch_size, lr, image_size = get("batch_size", 32), get("lr", 5e-4), get("image_size")
    threads, precision = get("threads"), get("precision", "fp32")
    check(_is_number(fraction) and 0.0 < fraction <= 1.0, f"fraction must be in (0, 1], got {fraction!r}")
    check(_is_int(epochs) and epochs >= 1, f"epochs must be an integer >= 1, got {epochs!r}")
    check(_is_int(seed) and 0 <= seed <= MAX_SEED, f"seed must be an integer in 0..{MAX_SEED}, got {seed!r}")
    check(precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    check(
        _is_int(batch_size) and batch_size >= 2,
        f"batch size must be an integer >= 2 (BatchNorm needs 2 samples), got {batch_size!r}",
    )
    check(_is_number(lr) and math.isfinite(lr) and lr > 0, f"learning rate must be a finite number > 0, got {lr!r}")
    check(
        image_size is None or (_is_int(image_size) and 8 <= image_size <= 1024),
        f"image size must be an integer in 8..1024 pixels, got {image_size!r}",
    )
    check(threads is None or (_is_int(threads) and threads >= 1), f"threads must be an integer >= 1, got {threads!r}")
    problems.extend(device_problems(get("device", "auto")))
    problems.extend(country_problems(get("country", "DNK")))

    # Snakemake reads { } in a path as a wildcard; a path holding them breaks the rule files.
    for key in PATH_KEYS:
        value = get(key)
        if value is not None and any(brace in str(value) for brace in "{}"):
            problems.append(f"{key} {str(value)!r} contains '{{' or '}}'; rename it (Snakemake reads braces as wildcards)")

    init_kind, init_issues = _init_problems(get("init", "scratch"), check_checkpoint)
    problems.extend(init_issues)
    if catalogue is not None:
        problems.extend(model_problems(get("model"), init_kind, catalogue))
    elif not isinstance(get("model"), str) or not get("model", "").strip():
        problems.append("model name is empty")

    dataset = get("dataset")
    if not isinstance(dataset, str) or not dataset.strip():
        problems.append("dataset is empty")
    elif check_data:
        from pepr.data import dataset_problems

        data_dir = get("data_dir")
        problems.extend(dataset_problems(dataset, Path(data_dir) if data_dir is not None else None, allow_download=True))

    if get("save_model") is not None:
        problems.extend(save_model_problems(get("save_model")))
    if get("carbon_intensity") is not None:
        problems.extend(carbon_intensity_problems(get("carbon_intensity")))
    return problems
