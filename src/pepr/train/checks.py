"""The checks on one training run's settings, shared by ``pepr train`` and planning.

* :func:`training_problems`: the single list of what makes one training run fail before it
  starts (unknown country, batch of 1, infinite learning rate, unknown timm tag, ...), with
  :class:`pepr.train.settings.TrainConfig`'s defaults for missing keys; the bounds and choices of
  each setting are its field's (:func:`pepr.train.settings.limit_problem`). ``pepr train`` runs it
  on its flags (:func:`pepr.train.run.validate_train_config`) and planning on every job
  (:func:`pepr.plan.prepare.job_problems`);
* :func:`model_problems`: the one model-name check (safe characters, timm name, tag, weights);
* :func:`timm_catalogue` / :func:`model_catalogue`: what timm knows (cached).

Below both the engine and planning: nothing here imports planning, torch, or timm at import.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pepr.errors import PeprInputError
from pepr.train.devices import device_problems
from pepr.train.settings import has_default, limit_problem, train_fields

#: File name endings ``--save-model`` writes.
SAVE_MODEL_SUFFIXES = (".pt", ".pth", ".safetensors")
#: Characters allowed in model names: every timm name fits, and nothing a shell or a path could
#: misread (config values become path components and job arguments).
_SAFE_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
#: Keys of a training-settings mapping that hold file system paths.
PATH_KEYS = ("out_dir", "data_dir", "save_model", "carbon_intensity", "dataset", "init")


def country_problems(country: Any) -> list[str]:
    """Problems with a country code: it must be an ISO 3166-1 alpha-3 code CodeCarbon knows."""
    if isinstance(country, str):
        return list(_country_problems(country))
    return list(_country_problems.__wrapped__(country))


@functools.lru_cache(maxsize=64)
def _country_problems(country: Any) -> tuple[str, ...]:
    # cached: CodeCarbon's country table is a JSON file read per check, and planning checks
    # every distinct job (hundreds) with the same country
    from pepr.results.carbon import check_country

    try:
        check_country(country)
    except PeprInputError as exc:
        return (str(exc),)
    return ()


def carbon_intensity_problems(path: str | os.PathLike) -> list[str]:
    """Problems with a carbon-intensity CSV (columns ``timestamp,gco2_per_kwh``)."""
    from pepr.results.carbon import read_carbon_intensity

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
        return [f"--save-model {path}: use a .pt, .pth or .safetensors file name"]
    if path.is_dir():
        return [f"--save-model {path} is a folder; give a file name"]
    parent = path.parent.absolute()
    while not parent.exists():  # the nearest existing ancestor decides whether it can be created
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        return [f"--save-model {path}: {parent} is not a writable folder; choose another path"]
    return []


def init_problems(init: Any, check_checkpoint: bool) -> tuple[str | None, list[str]]:
    """(kind, problems) for an init string: scratch, imagenet or checkpoint:PATH."""
    if not isinstance(init, str) or not init:
        return None, [f"unknown init {init!r}; use scratch, imagenet or checkpoint:PATH"]
    if init in ("scratch", "imagenet"):
        return init, []
    if init.startswith("checkpoint:"):
        path = init[len("checkpoint:") :]
        if not path:
            return "checkpoint", [f"init {init!r} names no checkpoint file; use checkpoint:PATH"]
        if check_checkpoint and not Path(path).is_file():
            from pepr.files import file_kind_problem

            # a folder, FIFO or device is named as such, not "not found"
            problem = file_kind_problem(path, "checkpoint file") or f"checkpoint file {path} not found"
            return "checkpoint", [f"{problem} (init {init!r})"]
        return "checkpoint", []
    return None, [f"unknown init {init!r}; use scratch, imagenet or checkpoint:PATH"]


def model_problems(model: Any, init_kind: str | None, catalogue: Mapping[str, Any] | None) -> list[str]:
    """Problems with a timm model name (``arch`` or ``arch.tag``): the one model-name check.

    A name must be non-empty and path/shell safe (:data:`_SAFE_MODEL_NAME`); with a
    ``catalogue`` (:func:`timm_catalogue`'s dict: ``models`` (architectures), ``pretrained``
    (architectures with weights) and, when present, ``pretrained_tags`` (``arch.tag`` names))
    it must be a timm name, its tag a known one, and an ``imagenet`` init needs weights.
    """
    if not isinstance(model, str) or not model.strip():
        return ["model name is empty"]
    if not _SAFE_MODEL_NAME.match(model):
        return [
            f"{model!r} is not a valid model name (only letters, digits, '_', '.', '-' are allowed, as in "
            "every timm name); model names are used as paths and job arguments"
        ]
    if catalogue is None:
        return []
    arch, _, tag = model.partition(".")
    models = set(catalogue.get("models", ()))
    if arch not in models:
        close = close_names(arch, models) or sorted(name for name in models if arch[:6] and arch[:6] in name)[:3]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
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
    :func:`timm_catalogue`'s dict; without it the model is not checked (the caller
    checks it with timm). ``check_data`` runs :func:`pepr.datasets.core.dataset_problems` (a MedMNIST
    file may be downloaded later, so its absence is fine); ``check_checkpoint`` requires a
    ``checkpoint:PATH`` file to exist (off while planning, when a pretraining job writes it).
    """
    problems: list[str] = []
    defaults = {item.name: item.default for item in train_fields() if has_default(item)}

    def get(key: str) -> Any:
        return settings.get(key, defaults.get(key))

    # every number's limits and every choice, as the setting's field defines them
    for item in train_fields():
        problem = limit_problem(item, get(item.name))
        if problem:
            problems.append(problem)
    epochs = get("epochs")
    for key in ("stop_after", "stopped_at"):  # adaptive sweeps: a rung is an epoch before the last
        value = get(key)
        # the field's own limits say >= 1; a rung must also come before the last epoch
        if isinstance(value, int) and isinstance(epochs, int) and value >= epochs:
            problems.append(f"--{key.replace('_', '-')} must be an epoch in 1..epochs-1, got {value!r}")
    if get("stop_after") is not None and get("stopped_at") is not None:
        problems.append("give --stop-after or --stopped-at, not both")
    problems.extend(device_problems(get("device")))
    problems.extend(country_problems(get("country")))

    # Snakemake reads { } in a path as a wildcard; a path holding them breaks the rule files.
    for key in PATH_KEYS:
        value = get(key)
        if value is not None and any(brace in str(value) for brace in "{}"):
            problems.append(
                f"{key} {str(value)!r} contains '{{' or '}}'; rename it (Snakemake reads braces as wildcards)"
            )

    init_kind, init_issues = init_problems(get("init"), check_checkpoint)
    problems.extend(init_issues)
    problems.extend(model_problems(get("model"), init_kind, catalogue))

    dataset = get("dataset")
    if not isinstance(dataset, str) or not dataset.strip():
        problems.append("dataset is empty")
    elif check_data:
        from pepr.datasets.core import dataset_problems

        data_dir = get("data_dir")
        problems.extend(
            dataset_problems(dataset, Path(data_dir) if data_dir is not None else None, allow_download=True)
        )

    if get("save_model") is not None:
        problems.extend(save_model_problems(get("save_model")))
    if get("carbon_intensity") is not None:
        problems.extend(carbon_intensity_problems(get("carbon_intensity")))
    return problems


# --------------------------------------------------------------------------------------------
# timm catalogue (cached: importing timm costs seconds)
# --------------------------------------------------------------------------------------------


def _timm_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("timm")
    except PackageNotFoundError:
        raise PeprInputError("timm is not installed: install the project (`make install`)") from None


def timm_catalogue(cache_dir: str | os.PathLike | None = None) -> dict[str, list[str]]:
    """timm's model names and which of them have ImageNet weights.

    Returns ``{"models": [...], "pretrained": [...], "pretrained_tags": [...]}`` (architecture
    names, deprecated aliases such as ``gluon_resnet34_v1b`` included; tags as ``arch.tag``). Cached in ``cache_dir/timm-VERSION.json`` when a
    cache folder is given, so only the first call per timm version imports timm (~3 s).
    """
    cache_file = Path(cache_dir) / f"timm-{_timm_version()}.json" if cache_dir is not None else None
    if cache_file is not None and cache_file.is_file():
        try:
            with open(cache_file, encoding="utf-8") as handle:
                cached = json.load(handle)
            # A cache without the tags predates them: rebuild it so tagged names are checked.
            if all(isinstance(cached.get(key), list) for key in ("models", "pretrained", "pretrained_tags")):
                return cached
        except (OSError, ValueError):
            pass  # a damaged cache is rebuilt below
    import warnings

    import timm
    import timm.models

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation chatter from aliases
        models = set(timm.list_models())
        pretrained_tags = set(timm.list_pretrained())
        pretrained = {name.split(".")[0] for name in pretrained_tags}
        for alias, target in timm.models.get_deprecated_models().items():
            models.add(alias)
            # An alias points at a tagged weight set (resnet34.gluon_in1k) or a plain architecture.
            if target and (target in pretrained_tags or ("." not in target and target in pretrained)):
                pretrained.add(alias)
    catalogue = {"models": sorted(models), "pretrained": sorted(pretrained), "pretrained_tags": sorted(pretrained_tags)}
    if cache_file is not None:
        from pepr.results.runs import atomic_write_json

        atomic_write_json(cache_file, catalogue, indent=None)
    return catalogue


def model_catalogue(model: str) -> dict[str, list[str]]:
    """The part of :func:`timm_catalogue` that checking ``model`` needs (imports timm).

    ``pepr train`` checks one model: asking timm about that architecture is instant, while
    listing every model costs ~0.3 s per job. An unknown name (or a deprecated alias, which
    timm's registry lists elsewhere) gets the full catalogue, for the alias and the hint.
    """
    import timm
    import timm.models

    arch = model.partition(".")[0]
    if not timm.is_model(arch) or arch in timm.models.get_deprecated_models():
        return timm_catalogue(None)
    return {
        "models": [arch],
        "pretrained": [arch] if timm.models.is_model_pretrained(arch) else [],
        "pretrained_tags": timm.list_pretrained(f"{arch}.*"),
    }


def close_names(name: str, known: Iterable[str]) -> list[str]:
    import difflib

    return difflib.get_close_matches(name, list(known), n=3, cutoff=0.75)
