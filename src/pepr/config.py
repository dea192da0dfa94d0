"""Workflow config validation and the checks on one training run's settings.

One validation source for the workflow and ``pepr train`` (issue 9):

* :func:`load_config`, :func:`load_schema`, :func:`apply_defaults`: read a YAML config and give
  every schema key its default;
* :func:`training_problems`: the single list of what makes one training run fail before it
  starts (unknown country, batch of 1, infinite learning rate, unknown timm tag, ...); ``pepr
  train`` runs it on its flags (:func:`pepr.train.validate_train_config`);
* :func:`config_problems` / :func:`check_config`: every problem of a workflow config at once:
  schema, names, data files, ``report:`` settings, and :func:`training_problems` on every
  distinct job's settings, so ``snakemake -n`` rejects whatever a job would reject, before a
  finished cell is scheduled again.

Grid expansion lives in :mod:`pepr.grid` (imported lazily here: it imports this module). Nothing
here imports torch; timm is imported only to build :func:`timm_catalogue`'s cache.
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

from pepr.errors import PeprInputError

#: Largest seed numpy/torch accept (uint32).
MAX_SEED = 2**32 - 1
#: Training precisions ``pepr train --precision`` accepts.
PRECISIONS = ("fp32", "bf16")
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


def device_problems(device: Any) -> list[str]:
    """Problems with a device string (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``)."""
    text = device.strip() if isinstance(device, str) else ""
    if text in ("auto", "cpu", "cuda", "mps") or (text.startswith("cuda:") and text[5:].isdigit()):
        return []
    return [f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps"]


def country_problems(country: Any) -> list[str]:
    """Problems with a country code: it must be an ISO 3166-1 alpha-3 code CodeCarbon knows."""
    if isinstance(country, str):
        return list(_country_problems(country))
    return list(_country_problems.__wrapped__(country))


@functools.lru_cache(maxsize=64)
def _country_problems(country: Any) -> tuple[str, ...]:
    # cached: CodeCarbon's country table is a JSON file read per check, and planning checks
    # every distinct job (hundreds) with the same country
    from pepr.measure import check_country

    try:
        check_country(country)
    except PeprInputError as exc:
        return (str(exc),)
    return ()


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
        return [f"--save-model {path}: use a .pt, .pth or .safetensors file name"]
    if path.is_dir():
        return [f"--save-model {path} is a folder; give a file name"]
    parent = path.parent.absolute()
    while not parent.exists():  # the nearest existing ancestor decides whether it can be created
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        return [f"--save-model {path}: {parent} is not a writable folder; choose another path"]
    return []


def _init_problems(init: Any, check_checkpoint: bool) -> tuple[str | None, list[str]]:
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
            return "checkpoint", [f"checkpoint file {path} not found (init {init!r})"]
        return "checkpoint", []
    return None, [f"unknown init {init!r}; use scratch, imagenet or checkpoint:PATH"]


def model_problems(model: Any, init_kind: str | None, catalogue: Mapping[str, Any]) -> list[str]:
    """Problems with a timm model name (``arch`` or ``arch.tag``) checked against a catalogue.

    ``catalogue`` is :func:`timm_catalogue`'s dict: ``models`` (architectures),
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
    :func:`timm_catalogue`'s dict; without it the model is not checked (the caller
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
    import yaml

    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    merged: dict[str, Any] = {}
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise PeprInputError(f"config file '{path}' does not exist")
        try:
            with open(path, encoding="utf-8") as handle:
                loaded = yaml.load(handle, Loader=_yaml_loader())
        except yaml.YAMLError as exc:
            raise PeprInputError(f"config file '{path}' is not valid YAML: {exc}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise PeprInputError(f"config file '{path}' must hold a mapping of keys, not a {type(loaded).__name__}")
        _merge_into(merged, loaded)
    return merged


def _yaml_loader() -> type:
    """PyYAML's safe loader, the C one when available (10x faster; parsed at every workflow start)."""
    import yaml

    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _merge_into(target: dict[str, Any], update: Mapping[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _merge_into(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


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
        from pepr.runs import atomic_write_json

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

# --------------------------------------------------------------------------------------------
# Workflow config checks
# --------------------------------------------------------------------------------------------


def _dataset_names(specs: Iterable[str], problems: list[str], label: str = "datasets") -> dict[str, str]:
    """spec -> short name, recording malformed specs as problems (prefixed with ``label``)."""
    from pepr.data import dataset_name

    names: dict[str, str] = {}
    for spec in specs:
        try:
            names[spec] = dataset_name(spec)
        except PeprInputError as exc:
            problems.append(f"{label}: {exc}")
    return names


def config_problems(
    config: Mapping[str, Any],
    schema: Mapping[str, Any],
    catalogue: Mapping[str, Sequence[str]] | None = None,
    check_data: bool = True,
) -> list[str]:
    """Every problem of a defaults-filled config, found without training anything.

    Schema violations; fractions outside (0, 1]; unsafe or unknown model names (against
    ``catalogue``, see :func:`timm_catalogue`; skipped when None); ``imagenet`` init for models
    without ImageNet weights; malformed dataset specs, missing npz files and bad data files
    (``pepr.data.dataset_problems``; MedMNIST files may be missing, the download_data rule fetches
    them); two datasets sharing a short name; include/exclude patterns that match no cell; an
    empty grid; bad ``report:`` settings (:func:`report_problems`); and, once the grid can be
    expanded, :func:`training_problems` on every distinct job (:func:`job_problems`). Returns
    readable lines (empty list: the config is usable).
    """
    from pepr.grid import INIT_STRATEGIES, expand_cells

    in_schema = schema_problems(config, schema)
    problems = list(in_schema)
    models = [m for m in config.get("models", []) if isinstance(m, str)] if isinstance(config.get("models"), list) else []
    datasets = [d for d in config.get("datasets", []) if isinstance(d, str)] if isinstance(config.get("datasets"), list) else []
    inits = [i for i in config.get("inits", []) if i in INIT_STRATEGIES] if isinstance(config.get("inits"), list) else []

    for fraction in config.get("fractions", []) if isinstance(config.get("fractions"), list) else []:
        if _is_number(fraction) and not 0 < fraction <= 1:
            problems.append(f"fractions: {fraction!r} is outside (0, 1]; use e.g. 1.0 for all training data, 0.1 for 10%")
    # numpy/torch take seeds up to 2**32 - 1 only; the schema bounds them below
    for seed in config.get("seeds", []) if isinstance(config.get("seeds"), list) else []:
        if _is_int(seed) and seed > MAX_SEED:
            problems.append(f"seeds: {seed} is outside 0..{MAX_SEED} (numpy's seed range)")
    problems.extend(_device_index_problems(config))
    transfer = config.get("transfer") if isinstance(config.get("transfer"), dict) else {}
    if _is_int(transfer.get("seed")) and transfer["seed"] > MAX_SEED:
        problems.append(f"transfer.seed: {transfer['seed']} is outside 0..{MAX_SEED} (numpy's seed range)")
    fraction = transfer.get("fraction")
    if "transfer" in inits and _is_number(fraction) and not 0 < fraction <= 1:
        problems.append(f"transfer.fraction: {fraction!r} is outside (0, 1]")

    safe_models = []
    for model in models:
        if not model:
            continue  # the schema reports empty names
        if not _SAFE_MODEL_NAME.match(model):
            problems.append(
                f"models: {model!r} is not a valid model name (only letters, digits, '_', '.', '-' are "
                "allowed, as in every timm name); config values are used as paths and job arguments"
            )
        else:
            safe_models.append(model)
    without_weights: list[str] = []  # known models that an imagenet cell would need weights for
    if catalogue is not None:
        known = set(catalogue["models"])
        pretrained = set(catalogue["pretrained"])
        for model in safe_models:
            base = model.split(".")[0]
            if base not in known:
                close = _close_names(base, known)
                hint = f" (did you mean {', '.join(close)}?)" if close else ""
                problems.append(f"models: {model!r} is not a timm model name{hint}; see `timm.list_models()`")
            elif "imagenet" in inits and base not in pretrained:
                without_weights.append(model)

    names = _dataset_names(datasets, problems)
    by_name: dict[str, list[str]] = {}
    for spec, name in names.items():
        by_name.setdefault(name, []).append(spec)
    for name, specs in by_name.items():
        if len(specs) > 1:
            problems.append(
                f"datasets: {', '.join(repr(s) for s in specs)} all get the results folder name "
                f"'{name}'; keep one, or rename an npz file"
            )
    data_dir = Path(config["data_dir"]) if isinstance(config.get("data_dir"), str) else None
    source = transfer.get("source") if "transfer" in inits else None
    if "transfer" in inits and isinstance(source, str):
        source_names = _dataset_names([source], problems, label="transfer.source")
        if source in datasets:
            problems.append(
                f"transfer.source: {source!r} is also a target dataset; pretraining on the data a model "
                "is then evaluated on is not transfer — choose another source"
            )
        elif source in source_names and source_names[source] in by_name:
            problems.append(f"transfer.source: {source!r} has the same short name as a target dataset")
    if check_data:
        from pepr.data import dataset_problems

        labelled = [(spec, "datasets") for spec in names]
        if isinstance(source, str) and source not in names:
            labelled.append((source, "transfer.source"))
        for spec, label in labelled:
            for problem in dataset_problems(spec, data_dir, allow_download=True):
                # malformed specs were reported above, by _dataset_names
                if not problem.startswith(f"dataset spec {spec!r}:"):
                    problems.append(f"{label}: {problem}")

    # Cell-level checks need a schema-valid config whose datasets all have names.
    cells = None
    if not in_schema and len(names) == len(datasets):
        try:
            problems.extend(_grid_problems(config, names))
            cells = expand_cells(config, names, apply_filters=True)
        except PeprInputError:
            pass  # a malformed transfer.source, already reported above
    if cells is not None:  # exactly the models that keep an imagenet cell after include/exclude
        needing = {cell.model for cell in cells if cell.init == "imagenet"}
        without_weights = [model for model in without_weights if model in needing]
    for model in without_weights:
        problems.append(
            f"models: {model!r} has no pretrained ImageNet weights in timm, so init 'imagenet' "
            f"cannot run for it; exclude those cells (exclude: [{{model: {model}, init: imagenet}}]) "
            "or drop 'imagenet' from inits"
        )
    # the schema's own complaint about a report/pepr key is clearer than the report's echo of it
    if not any(problem.startswith(("config key 'report", "config key 'pepr")) for problem in in_schema):
        problems.extend(report_problems(config))
    if cells is not None:
        # models already reported above (unsafe or unknown names) are not checked again per job
        reported = {m for m in models if not _SAFE_MODEL_NAME.match(m)} | set(without_weights)
        if catalogue is not None:
            reported |= {m for m in safe_models if m.split(".")[0] not in set(catalogue["models"])}
        problems.extend(job_problems(config, [cell for cell in cells if cell.model not in reported], catalogue))
    return problems


def _device_index_problems(config: Mapping[str, Any]) -> list[str]:
    """``device: cuda:N`` against the GPUs each job is given.

    A job that asks the scheduler for G GPUs (``resources.train.gpu`` / ``pretrain.gpu``) sees
    exactly those, numbered ``cuda:0`` .. ``cuda:G-1`` (SLURM sets CUDA_VISIBLE_DEVICES), so
    ``cuda:N`` with N >= G would fail in every job. With ``gpu: 0`` (a local run) the GPUs are
    the machine's own and are not known while planning: not checked.
    """
    device = config.get("device")
    text = device.strip() if isinstance(device, str) else ""
    if not (text.startswith("cuda:") and text[5:].isdigit()):
        return []
    index = int(text[5:])
    resources = config.get("resources") if isinstance(config.get("resources"), Mapping) else {}
    problems = []
    for kind in ("train", "pretrain"):
        spec = resources.get(kind) if isinstance(resources.get(kind), Mapping) else {}
        gpus = spec.get("gpu")
        if _is_int(gpus) and gpus >= 1 and index >= gpus:
            problems.append(
                f"device: {text!r} but each {kind} job is given {gpus} GPU(s) (resources.{kind}.gpu), "
                f"visible to it as cuda:0..cuda:{gpus - 1}; use device: cuda (or auto)"
            )
            break
    return problems


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


def report_problems(config: Mapping[str, Any]) -> list[str]:
    """Problems of the ``report:`` settings, found by the report's own
    :meth:`pepr.report.config.ReportConfig.from_mapping` (the same call report.smk makes)."""
    from pepr.report.config import ReportConfig

    settings = config.get("report")
    if settings is None:
        return []
    if not isinstance(settings, Mapping):
        return [f"report: must be a mapping of settings, got {type(settings).__name__}"]
    if "performance" in settings:
        return [
            "report.performance is not a setting: the report uses pepr.performance, the column "
            "results/pepr.csv was scored with; set that instead"
        ]
    scoring = config.get("pepr") if isinstance(config.get("pepr"), Mapping) else {}
    values = dict(settings)
    if "performance" in scoring:
        values["performance"] = scoring["performance"]
    try:
        ReportConfig.from_mapping(values)
    except PeprInputError as exc:
        return [str(exc)]
    except (TypeError, ValueError) as exc:  # a value of a type the dataclass cannot take
        return [f"report settings: {exc}"]
    return []


def job_problems(config: Mapping[str, Any], cells: Iterable[Any], catalogue: Mapping[str, Any] | None) -> list[str]:
    """:func:`training_problems` on the training settings of every distinct job of ``cells``
    (``pepr.grid.Cell`` objects) and of their pretraining jobs, as ``pepr train`` would run them.

    A sweep's thousands of cells share a handful of settings once seed and fraction are set
    aside (both are checked on the config itself), so each (model, dataset, init) is checked
    once. Data files are checked by :func:`config_problems`, and checkpoints are written by
    pretraining jobs later, so neither is checked here.
    """
    from pepr.grid import train_settings

    jobs: dict[Any, Any] = {}
    for cell in cells:
        jobs.setdefault((cell.model, cell.dataset, cell.init), cell)
        if cell.pretrain is not None:
            jobs.setdefault(("pretrain", cell.pretrain.model), cell.pretrain)
    found: list[str] = []
    for job in jobs.values():
        settings = {**train_settings(job, config), "seed": 0, "fraction": 1.0}
        found.extend(training_problems(settings, catalogue, check_data=False, check_checkpoint=False))
    return list(dict.fromkeys(found))


def _close_names(name: str, known: Iterable[str]) -> list[str]:
    import difflib

    return difflib.get_close_matches(name, list(known), n=3, cutoff=0.75)


def _grid_problems(config: Mapping[str, Any], names: Mapping[str, str]) -> list[str]:
    problems = []
    from pepr.grid import expand_cells, pattern_matches

    all_cells = expand_cells(config, names, apply_filters=False)
    for key in ("include", "exclude"):
        for pattern in config.get(key, []):
            if not any(pattern_matches(pattern, cell) for cell in all_cells):
                problems.append(f"{key}: the pattern {pattern!r} matches no cell of the grid (a typo?)")
    if not problems and not expand_cells(config, names, apply_filters=True):
        problems.append("the grid is empty: include/exclude leave no cell to train")
    return problems


def check_config(
    config: Mapping[str, Any],
    schema: Mapping[str, Any],
    catalogue: Mapping[str, Sequence[str]] | None = None,
    check_data: bool = True,
    source: str = "config",
) -> None:
    """Raise one PeprInputError listing every problem of ``config`` (see :func:`config_problems`)."""
    raise_problems(config_problems(config, schema, catalogue=catalogue, check_data=check_data), source)


def raise_problems(problems: Sequence[str], source: str = "config") -> None:
    """Raise the one all-problems-at-once PeprInputError for ``problems`` (nothing when empty)."""
    if problems:
        listing = "\n".join(f"  - {problem}" for problem in problems)
        raise PeprInputError(f"{source} has {len(problems)} problem(s); nothing was run:\n{listing}")


# --------------------------------------------------------------------------------------------
