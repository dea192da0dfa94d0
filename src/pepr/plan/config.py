"""Config loading, schema defaults and the checks on one training run's settings.

* :func:`load_config`, :func:`load_schema`, :func:`apply_defaults`, :func:`schema_problems`: read
  a YAML config, give every schema key its default, list its schema violations;
* :func:`training_problems`: the single list of what makes one training run fail before it
  starts (unknown country, batch of 1, infinite learning rate, unknown timm tag, ...), with
  :class:`pepr.train.settings.TrainConfig`'s defaults for missing keys; ``pepr train`` runs it on its
  flags (:func:`pepr.train.run.validate_train_config`) and planning on every job
  (:func:`pepr.plan.prepare.job_problems`);
* :func:`model_problems`: the one model-name check (safe characters, timm name, tag, weights);
* :func:`timm_catalogue` / :func:`model_catalogue`: what timm knows (cached).

The checks of a whole workflow config are :mod:`pepr.plan.prepare`'s (it imports this module, never
the reverse). Nothing here imports torch; timm is imported only to build the catalogue.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import numbers
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pepr.train.devices import device_problems
from pepr.errors import PeprInputError
from pepr.columns import MAX_SEED
from pepr.train.settings import PRECISIONS, has_default, train_fields

#: File name endings ``--save-model`` writes.
SAVE_MODEL_SUFFIXES = (".pt", ".pth", ".safetensors")
#: Characters allowed in model names: every timm name fits, and nothing a shell or a path could
#: misread (config values become path components and job arguments).
_SAFE_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
#: Keys of a training-settings mapping that hold file system paths.
PATH_KEYS = ("out_dir", "data_dir", "save_model", "carbon_intensity", "dataset", "init")


def _is_int(value: Any) -> bool:
    # numbers.Integral also admits numpy integers (a TrainConfig built from arrays)
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


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
            from pepr.plan.safeyaml import file_kind_problem

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

    def check(condition: bool, message: str) -> None:
        if not condition:
            problems.append(message)

    fraction, epochs, seed = get("fraction"), get("epochs"), get("seed")
    batch_size, lr, image_size = get("batch_size"), get("lr"), get("image_size")
    threads, precision = get("threads"), get("precision")
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
    for key in ("stop_after", "stopped_at"):  # adaptive sweeps: a rung is an epoch before the last
        value = get(key)
        check(value is None or (_is_int(value) and value >= 1 and (not _is_int(epochs) or value < epochs)),
              f"--{key.replace('_', '-')} must be an epoch in 1..epochs-1, got {value!r}")
    check(get("stop_after") is None or get("stopped_at") is None, "give --stop-after or --stopped-at, not both")
    problems.extend(device_problems(get("device")))
    problems.extend(country_problems(get("country")))

    # Snakemake reads { } in a path as a wildcard; a path holding them breaks the rule files.
    for key in PATH_KEYS:
        value = get(key)
        if value is not None and any(brace in str(value) for brace in "{}"):
            problems.append(f"{key} {str(value)!r} contains '{{' or '}}'; rename it (Snakemake reads braces as wildcards)")

    init_kind, init_issues = init_problems(get("init"), check_checkpoint)
    problems.extend(init_issues)
    problems.extend(model_problems(get("model"), init_kind, catalogue))

    dataset = get("dataset")
    if not isinstance(dataset, str) or not dataset.strip():
        problems.append("dataset is empty")
    elif check_data:
        from pepr.datasets.core import dataset_problems

        data_dir = get("data_dir")
        problems.extend(dataset_problems(dataset, Path(data_dir) if data_dir is not None else None, allow_download=True))

    if get("save_model") is not None:
        problems.extend(save_model_problems(get("save_model")))
    if get("carbon_intensity") is not None:
        problems.extend(carbon_intensity_problems(get("carbon_intensity")))
    return problems


# --------------------------------------------------------------------------------------------
# Loading and defaults
# --------------------------------------------------------------------------------------------


def load_schema(path: str | os.PathLike) -> dict[str, Any]:
    """Read the workflow's JSON schema (YAML file)."""
    import yaml

    with open(path, encoding="utf-8") as handle:
        return yaml.load(handle, Loader=_yaml_loader())


def load_config(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> dict[str, Any]:
    """Read one or more YAML config files; later files override earlier ones key by key.

    Nested mappings are merged, everything else (lists included) replaced, as Snakemake does.
    Raises PeprInputError when a file is missing or not a YAML mapping.
    """
    # the workflow's own reader (pepr.plan.safeyaml): limits on size, depth and alias expansion,
    # duplicate keys refused, 1e-3 a number; only the missing-file message is said here
    from pepr.plan.safeyaml import load_workflow_config

    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    for path in paths:
        if not os.path.lexists(path):
            raise PeprInputError(f"config file '{path}' does not exist")
    return load_workflow_config(list(paths), None)


def _yaml_loader() -> type:
    """PyYAML's safe loader, the C one when available (10x faster; parsed at every workflow start)."""
    import yaml

    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _resolve_ref(schema: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    """Follow a local ``$ref`` (``#/$defs/name``), keeping sibling keys (e.g. a default)."""
    ref = schema.get("$ref")
    if not isinstance(ref, str) or not ref.startswith("#/"):
        return schema
    target: Any = root
    for part in ref[2:].split("/"):
        target = target[part]
    merged = dict(_resolve_ref(target, root))
    merged.update({k: v for k, v in schema.items() if k != "$ref"})
    return merged


def apply_defaults(config: dict[str, Any], schema: Mapping[str, Any]) -> dict[str, Any]:
    """Fill every missing key that has a schema default, recursively, in place; return config.

    Only mappings are descended into (list items have no defaults). Values of the wrong type are
    left alone: :func:`schema_problems` reports them.
    """

    def fill(node: dict[str, Any], node_schema: Mapping[str, Any]) -> None:
        node_schema = _resolve_ref(node_schema, schema)
        for key, sub_schema in node_schema.get("properties", {}).items():
            sub_schema = _resolve_ref(sub_schema, schema)
            if key not in node and "default" in sub_schema:
                node[key] = copy.deepcopy(sub_schema["default"])
            if isinstance(node.get(key), dict) and sub_schema.get("type") == "object":
                fill(node[key], sub_schema)

    fill(config, schema)
    return config


def schema_problems(config: Mapping[str, Any], schema: Mapping[str, Any]) -> list[str]:
    """Every JSON-schema violation of ``config``, one readable line each (empty: valid)."""
    import jsonschema

    validator_class = jsonschema.validators.validator_for(schema)
    validator = validator_class(schema)
    problems = []
    for error in sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path))):
        where = ".".join(str(part) for part in error.absolute_path) or "(top level)"
        message = error.message
        if error.validator == "additionalProperties":
            allowed = ", ".join(sorted(error.schema.get("properties", {})))
            message += f"; known keys here: {allowed}"
        elif error.validator == "oneOf" and error.absolute_path and error.absolute_path[0] in ("include", "exclude"):
            message = f"{error.instance!r} must be a value (text or number) or a non-empty list of values"
        problems.append(f"config key '{where}': {message}")
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


# --------------------------------------------------------------------------------------------
# This machine's GPUs (a local sweep's cuda device is checked against them at planning)
# --------------------------------------------------------------------------------------------


def local_gpu_count(environ: Mapping[str, str] | None = None) -> tuple[int, str]:
    """NVIDIA GPUs this machine shows a process (and how that was found), without importing
    torch: ``/proc/driver/nvidia/gpus/`` (one folder per GPU), else ``nvidia-smi -L``; then
    limited by CUDA_VISIBLE_DEVICES when set. (0, reason) when there is no NVIDIA driver."""
    import shutil
    import subprocess

    environ = os.environ if environ is None else environ
    count, how = 0, "no NVIDIA driver (/proc/driver/nvidia/gpus absent, no nvidia-smi)"
    proc = Path("/proc/driver/nvidia/gpus")
    if proc.is_dir():
        count, how = len(list(proc.iterdir())), f"{len(list(proc.iterdir()))} in /proc/driver/nvidia/gpus"
    elif shutil.which("nvidia-smi"):
        try:
            listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
            count = sum(1 for line in listed.splitlines() if line.startswith("GPU "))
            how = f"{count} listed by nvidia-smi -L"
        except (OSError, subprocess.SubprocessError):
            pass
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and count:
        shown = [d for d in visible.split(",") if d.strip() and not d.strip().startswith("-")]
        count, how = min(count, len(shown)), f"{how}, CUDA_VISIBLE_DEVICES={visible!r}"
    return count, how


def local_device_problems(device: Any, environ: Mapping[str, str] | None = None) -> list[str]:
    """``device: cuda``/``cuda:N`` of a sweep whose training jobs run on this machine (given no
    GPU by a scheduler) against this machine's GPUs: a job would fail at start otherwise."""
    text = device.strip() if isinstance(device, str) else ""
    if not (text == "cuda" or (text.startswith("cuda:") and text[5:].isdigit())):
        return []
    index = int(text[5:]) if ":" in text else 0
    count, how = local_gpu_count(environ)
    if index < count:
        return []
    if count == 0:
        return [f"device: {text!r} but this machine has no CUDA GPU ({how}); the training jobs run here "
                "(no GPU requested from a scheduler): use device: cpu or auto"]
    return [f"device: {text!r} but this machine has {count} CUDA GPU(s) ({how}), cuda:0..cuda:{count - 1}; "
            "use one of those, or device: cuda (or auto)"]
