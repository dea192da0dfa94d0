"""Workflow configuration -> validated grid of cells (the jobs of a sweep).

A *cell* is one model x dataset x init strategy x data fraction x seed; the workflow trains each
cell once, in ``results/runs/{dataset}/{init}/{fraction}/{model}/seed{seed}/``. This module:

* loads and completes a config (:func:`load_config`, :func:`apply_defaults`: every schema key
  gets its default),
* finds every problem in it at once (:func:`config_problems`) and raises them as one
  :class:`~pepr.errors.PeprInputError` (:func:`check_config`),
* expands it into :class:`Cell` objects (:func:`build_grid`), including the pretraining jobs of
  the ``transfer`` strategy (:class:`PretrainJob`).

It imports neither torch nor timm at module level. The timm model catalogue (names, which have
ImageNet weights) is read once per timm version and cached as JSON (:func:`timm_catalogue`), and
a config that passed validation is remembered by its hash (:func:`prepare_grid`), because
Snakemake parses the workflow in every job and importing timm costs seconds.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pepr.errors import PeprInputError

__all__ = [
    "INIT_STRATEGIES",
    "Cell",
    "PretrainJob",
    "Grid",
    "load_config",
    "load_schema",
    "apply_defaults",
    "schema_problems",
    "config_problems",
    "check_config",
    "build_grid",
    "prepare_grid",
    "timm_catalogue",
    "format_fraction",
]

#: Init strategies of the workflow (``transfer`` becomes ``--init checkpoint:PATH`` per job).
INIT_STRATEGIES: tuple[str, ...] = ("scratch", "imagenet", "transfer")

#: Characters allowed in model names: every timm name fits, and nothing a shell or a path could
#: misread (config values become path components and job arguments).
_SAFE_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

#: Where the workflow writes runs and pretraining results (the ARCHITECTURE.md layout).
RUNS_DIR = "results/runs"
PRETRAIN_DIR = "results/pretrain"

#: Keys of a cell pattern in ``include``/``exclude``.
_PATTERN_KEYS: tuple[str, ...] = ("model", "dataset", "init", "fraction", "seed")


def format_fraction(fraction: float) -> str:
    """Canonical text of a data fraction, used in paths and job names (``1.0``, ``0.1``, ``0.25``)."""
    return repr(float(fraction))


# --------------------------------------------------------------------------------------------
# Cells
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PretrainJob:
    """One pretraining run of the ``transfer`` strategy: ``model`` trained on the source dataset."""

    model: str
    source: str  # dataset spec
    source_name: str  # path-safe short name
    epochs: int
    fraction: float
    seed: int

    @property
    def directory(self) -> str:
        """Folder of this pretraining run (relative to the working directory)."""
        return f"{PRETRAIN_DIR}/{self.source_name}/{self.model}"

    @property
    def checkpoint(self) -> str:
        """The saved weights fine-tune jobs start from (``--init checkpoint:PATH``)."""
        return f"{self.directory}/model.pt"

    @property
    def metrics(self) -> str:
        """Declared output of the pretraining job."""
        return f"{self.directory}/metrics.json"


@dataclass(frozen=True)
class Cell:
    """One training run of the sweep, with the names the workflow gives it."""

    model: str
    dataset: str  # spec as given in the config (what `pepr train --dataset` takes)
    dataset_name: str  # path-safe short name (pepr.data.dataset_name)
    init: str  # workflow strategy: scratch, imagenet, transfer
    fraction: float
    seed: int
    pretrain: PretrainJob | None = field(default=None, compare=False)

    @property
    def key(self) -> str:
        """The cell's path below ``results/runs`` (also its identity in the workflow)."""
        return cell_key(self.dataset_name, self.init, format_fraction(self.fraction), self.model, self.seed)

    @property
    def directory(self) -> str:
        """Folder of this run (relative to the working directory)."""
        return f"{RUNS_DIR}/{self.key}"

    @property
    def metrics(self) -> str:
        """Declared output: the run's metrics.json."""
        return f"{self.directory}/metrics.json"

    @property
    def init_arg(self) -> str:
        """The ``--init`` value for ``pepr train`` (``checkpoint:PATH`` for transfer)."""
        if self.init == "transfer":
            assert self.pretrain is not None
            return f"checkpoint:{self.pretrain.checkpoint}"
        return self.init


def cell_key(dataset_name: str, init: str, fraction: str, model: str, seed: int | str) -> str:
    """``{dataset}/{init}/{fraction}/{model}/seed{seed}`` from the workflow's wildcard values."""
    return f"{dataset_name}/{init}/{fraction}/{model}/seed{seed}"


@dataclass
class Grid:
    """The expanded sweep: cells in a deterministic order, pretraining jobs, lookups by key."""

    cells: list[Cell]
    pretrain_jobs: list[PretrainJob]
    config: dict[str, Any]
    #: spec -> {"name", "kind", "file"} for every dataset read (targets and transfer source)
    datasets: dict[str, dict[str, Any]] = field(default_factory=dict)
    by_key: dict[str, Cell] = field(init=False, repr=False)
    pretrain_by_key: dict[str, PretrainJob] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.by_key = {cell.key: cell for cell in self.cells}
        self.pretrain_by_key = {f"{job.source_name}/{job.model}": job for job in self.pretrain_jobs}

    def cell(self, dataset: str, init: str, fraction: str, model: str, seed: str | int) -> Cell:
        """The cell behind a set of wildcard values; PeprInputError when the sweep has no such cell."""
        key = cell_key(dataset, init, fraction, model, seed)
        try:
            return self.by_key[key]
        except KeyError:
            raise PeprInputError(
                f"results/runs/{key} is not a cell of this sweep's config; add its model/dataset/"
                "init/fraction/seed to the config (or request only targets of the configured grid)"
            ) from None

    def pretrain_job(self, source_name: str, model: str) -> PretrainJob:
        """The pretraining job behind wildcard values; PeprInputError when not in the sweep."""
        try:
            return self.pretrain_by_key[f"{source_name}/{model}"]
        except KeyError:
            raise PeprInputError(
                f"{PRETRAIN_DIR}/{source_name}/{model} is not a pretraining job of this config "
                "(only models with the `transfer` init under transfer.source are pretrained)"
            ) from None

    @property
    def metrics_files(self) -> list[str]:
        """Every run's metrics.json, in grid order."""
        return [cell.metrics for cell in self.cells]

    @property
    def pretrain_metrics_files(self) -> list[str]:
        """Every pretraining run's metrics.json."""
        return [job.metrics for job in self.pretrain_jobs]

    def data_file(self, spec: str) -> str | None:
        """The file a dataset spec reads (None for synthetic data)."""
        return self.datasets[spec]["file"]

    @property
    def medmnist_files(self) -> dict[str, str]:
        """File -> spec for the MedMNIST datasets the sweep uses (what download_data fetches)."""
        used = {cell.dataset for cell in self.cells} | {job.source for job in self.pretrain_jobs}
        return {
            item["file"]: spec for spec, item in self.datasets.items() if item["kind"] == "medmnist" and spec in used
        }

    @property
    def imagenet_models(self) -> list[str]:
        """Models with at least one ``imagenet`` cell (their weights are prefetched)."""
        return list(dict.fromkeys(cell.model for cell in self.cells if cell.init == "imagenet"))


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
        _write_json_atomic(cache_file, catalogue)
    return catalogue


def _write_json_atomic(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(payload, handle)
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


def _pattern_matches(pattern: Mapping[str, Any], cell: Cell) -> bool:
    for key, wanted in pattern.items():
        values = _as_list(wanted)
        if key == "dataset":
            if cell.dataset not in values and cell.dataset_name not in values:
                return False
        elif key == "fraction":
            if not any(_is_number(v) and float(v) == cell.fraction for v in values):
                return False
        elif key == "seed":
            if not any(_is_number(v) and int(v) == cell.seed for v in values):
                return False
        elif getattr(cell, key) not in values:
            return False
    return True


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


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
    empty grid. Returns readable lines (empty list: the config is usable).
    """
    in_schema = schema_problems(config, schema)
    problems = list(in_schema)
    models = [m for m in config.get("models", []) if isinstance(m, str)] if isinstance(config.get("models"), list) else []
    datasets = [d for d in config.get("datasets", []) if isinstance(d, str)] if isinstance(config.get("datasets"), list) else []
    inits = [i for i in config.get("inits", []) if i in INIT_STRATEGIES] if isinstance(config.get("inits"), list) else []

    for fraction in config.get("fractions", []) if isinstance(config.get("fractions"), list) else []:
        if _is_number(fraction) and not 0 < fraction <= 1:
            problems.append(f"fractions: {fraction!r} is outside (0, 1]; use e.g. 1.0 for all training data, 0.1 for 10%")
    transfer = config.get("transfer") if isinstance(config.get("transfer"), dict) else {}
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
            cells = _expand(config, names, apply_filters=True)
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
    return problems




def _close_names(name: str, known: Iterable[str]) -> list[str]:
    import difflib

    return difflib.get_close_matches(name, list(known), n=3, cutoff=0.75)


def _grid_problems(config: Mapping[str, Any], names: Mapping[str, str]) -> list[str]:
    problems = []
    all_cells = _expand(config, names, apply_filters=False)
    for key in ("include", "exclude"):
        for pattern in config.get(key, []):
            if not any(_pattern_matches(pattern, cell) for cell in all_cells):
                problems.append(f"{key}: the pattern {pattern!r} matches no cell of the grid (a typo?)")
    if not problems and not _expand(config, names, apply_filters=True):
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
    problems = config_problems(config, schema, catalogue=catalogue, check_data=check_data)
    if problems:
        listing = "\n".join(f"  - {problem}" for problem in problems)
        raise PeprInputError(f"{source} has {len(problems)} problem(s); nothing was run:\n{listing}")


# --------------------------------------------------------------------------------------------
# Grid expansion
# --------------------------------------------------------------------------------------------


def _expand(config: Mapping[str, Any], names: Mapping[str, str], apply_filters: bool) -> list[Cell]:
    transfer = config["transfer"]
    pretrain: dict[str, PretrainJob] = {}
    if "transfer" in config["inits"]:
        from pepr.data import dataset_name

        source_name = names.get(transfer["source"]) or dataset_name(transfer["source"])
        for model in config["models"]:
            pretrain[model] = PretrainJob(
                model=model,
                source=transfer["source"],
                source_name=source_name,
                epochs=int(transfer["epochs"]),
                fraction=float(transfer["fraction"]),
                seed=int(transfer["seed"]),
            )
    cells = []
    for dataset, init, fraction, model, seed in itertools.product(
        config["datasets"], config["inits"], config["fractions"], config["models"], config["seeds"]
    ):
        cell = Cell(
            model=model,
            dataset=dataset,
            dataset_name=names[dataset],
            init=init,
            fraction=float(fraction),
            seed=int(seed),
            pretrain=pretrain.get(model) if init == "transfer" else None,
        )
        if apply_filters:
            include = config.get("include") or []
            if include and not any(_pattern_matches(p, cell) for p in include):
                continue
            if any(_pattern_matches(p, cell) for p in config.get("exclude") or []):
                continue
        cells.append(cell)
    return cells


def build_grid(config: Mapping[str, Any], datasets: Mapping[str, Mapping[str, Any]] | None = None) -> Grid:
    """Expand a validated, defaults-filled config into its :class:`Grid`.

    Cells come in config order (dataset, init, fraction, model, seed); include/exclude applied.
    Pretraining jobs exist only for models with at least one ``transfer`` cell.
    ``datasets`` (spec -> info, see :func:`dataset_info`) avoids re-deriving names and files (see
    :func:`prepare_grid`); by default it is computed here.
    """
    if datasets is None:
        specs = list(config["datasets"])
        if "transfer" in config["inits"]:
            specs.append(config["transfer"]["source"])
        datasets = dataset_info(dict.fromkeys(specs), config.get("data_dir"))
    names = {spec: item["name"] for spec, item in datasets.items()}
    cells = _expand(config, names, apply_filters=True)
    jobs = list({cell.pretrain.model: cell.pretrain for cell in cells if cell.pretrain is not None}.values())
    return Grid(cells=cells, pretrain_jobs=jobs, config=dict(config), datasets=dict(datasets))


# --------------------------------------------------------------------------------------------
# The workflow's entry point: validate once, remember, expand
# --------------------------------------------------------------------------------------------


def _data_fingerprint(config: Mapping[str, Any]) -> list[Any]:
    """Size and mtime of every data file validation may read (so a changed file re-validates)."""
    entries: list[Any] = []
    paths = []
    data_dir = config.get("data_dir")
    if isinstance(data_dir, str) and Path(data_dir).is_dir():
        paths += sorted(Path(data_dir).glob("*.npz"))
    specs = list(config.get("datasets") or [])
    transfer = config.get("transfer")
    if isinstance(transfer, dict):
        specs.append(transfer.get("source"))
    paths += [Path(spec[len("npz:"):]) for spec in specs if isinstance(spec, str) and spec.startswith("npz:")]
    for path in paths:
        try:
            stat = path.stat()
            entries.append([str(path), stat.st_size, stat.st_mtime_ns])
        except OSError:
            entries.append([str(path), None, None])
    return entries


def _validation_key(config: Mapping[str, Any], schema: Mapping[str, Any]) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        pepr_version = version("pepr-bench")
    except PackageNotFoundError:
        pepr_version = "unknown"
    payload = {
        "config": config,
        "schema": schema,
        "timm": _timm_version(),
        "pepr": pepr_version,
        "data": _data_fingerprint(config),
        "cwd": os.getcwd(),
    }
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def prepare_grid(
    config: dict[str, Any],
    schema_path: str | os.PathLike,
    cache_dir: str | os.PathLike | None,
    validate: bool = True,
    source: str = "config",
) -> Grid:
    """What the Snakefile calls: fill defaults into ``config`` (in place), validate, expand.

    With ``validate`` every problem is raised at once as a PeprInputError before any job exists.
    A config that validated is remembered in ``cache_dir`` (key: hash of config, schema, timm and
    pepr versions and data-file stamps) together with its dataset short names, so re-parsing the
    same workflow (``snakemake -n``, each job, ``--report``) neither imports timm nor reads data
    again. ``validate=False`` (inside a job, where the driver has validated) skips the checks.
    """
    schema = load_schema(schema_path)
    apply_defaults(config, schema)
    cache_file = None
    if cache_dir is not None:
        cache_file = Path(cache_dir) / f"validated-{_validation_key(config, schema)}.json"
        if cache_file.is_file():
            try:
                with open(cache_file, encoding="utf-8") as handle:
                    info = json.load(handle)["datasets"]
                return build_grid(config, datasets=info)
            except (OSError, ValueError, KeyError, TypeError):
                pass  # damaged cache: validate again
    if validate:
        catalogue = timm_catalogue(cache_dir)
        check_config(config, schema, catalogue=catalogue, check_data=True, source=source)
    specs = list(config["datasets"])
    if "transfer" in config["inits"]:
        specs.append(config["transfer"]["source"])
    try:
        info = dataset_info(dict.fromkeys(specs), config["data_dir"])
    except PeprInputError as exc:
        raise PeprInputError(f"{source}: {exc}") from None
    grid = build_grid(config, datasets=info)
    if validate:
        check_jobs(grid, config, catalogue, source=source)
    if validate and cache_file is not None:
        _write_json_atomic(cache_file, {"datasets": info})
    return grid


def check_jobs(grid: Grid, config: Mapping[str, Any], catalogue: Mapping[str, Any] | None, source: str = "config") -> None:
    """Run ``pepr train``'s own checks (:func:`pepr.config.training_problems`) on every job.

    Each distinct job's settings are checked once (a sweep's thousands of cells share a handful
    of settings once seed/fraction/dataset are factored out), so a value ``pepr train`` would
    reject (country DEN, batch 1, lr inf, an unknown timm tag, ...) stops planning here, before a
    finished cell is scheduled again. Data files were checked by :func:`config_problems`;
    checkpoints are written by pretraining jobs later, so neither is checked here.
    """
    from pepr.config import training_problems

    seen: dict[str, list[str]] = {}
    jobs: list[Cell | PretrainJob] = [*grid.cells, *grid.pretrain_jobs]
    for job in jobs:
        settings = train_settings(job, config)
        # seed and fraction differ per cell but are checked identically: one check per shape
        key = json.dumps({k: v for k, v in settings.items() if k not in ("seed", "fraction")}, sort_keys=True, default=str)
        if key in seen:
            continue
        seen[key] = training_problems(settings, catalogue, check_data=False, check_checkpoint=False)
    for seed in dict.fromkeys(config.get("seeds", [])):
        if isinstance(seed, int) and not isinstance(seed, bool) and not 0 <= seed <= 2**32 - 1:
            seen[f"seed {seed}"] = [f"seeds: {seed} is outside 0..{2**32 - 1}"]
    problems = list(dict.fromkeys(problem for found in seen.values() for problem in found))
    if problems:
        listing = "\n".join(f"  - {problem}" for problem in problems)
        raise PeprInputError(f"{source} has {len(problems)} problem(s); nothing was run:\n{listing}")


def dataset_info(specs: Iterable[str], data_dir: str | os.PathLike | None) -> dict[str, dict[str, Any]]:
    """spec -> ``{"name": short name, "kind": medmnist|npz|synthetic, "file": path or None}``."""
    from pepr.data import dataset_file, dataset_name, parse_dataset_spec

    info = {}
    for spec in specs:
        parsed = parse_dataset_spec(spec)
        path = dataset_file(parsed, Path(data_dir) if data_dir is not None else None)
        info[spec] = {"name": dataset_name(spec), "kind": parsed.kind, "file": str(path) if path is not None else None}
    return info


def train_settings(cell: Cell | PretrainJob, config: Mapping[str, Any]) -> dict[str, Any]:
    """The ``pepr.train.TrainConfig`` fields of a cell or pretraining job, minus out_dir/threads.

    Only training settings go in (they are the train rules' ``params``, so Snakemake retrains a
    cell exactly when one of them changes): no report or scoring settings.
    """
    common = {
        "model": cell.model,
        "epochs": int(config["epochs"]),
        "batch_size": int(config["batch_size"]),
        "lr": float(config["lr"]),
        "image_size": config["image_size"],
        "device": config["device"],
        "country": config["country"],
        "data_dir": config["data_dir"],
    }
    if isinstance(cell, PretrainJob):
        common.update(
            dataset=cell.source,
            init="scratch",
            fraction=cell.fraction,
            seed=cell.seed,
            epochs=cell.epochs,
            save_model=cell.checkpoint,
        )
    else:
        common.update(dataset=cell.dataset, init=cell.init_arg, fraction=cell.fraction, seed=cell.seed)
    # Passed through only when set, so a finished sweep's params (the rerun trigger) stay the same.
    if config.get("precision", "fp32") != "fp32":
        common["precision"] = config["precision"]
    if config.get("carbon_intensity") is not None:
        common["carbon_intensity"] = config["carbon_intensity"]
    return common


# --------------------------------------------------------------------------------------------
# Running one job of the grid (called by scripts/train_model.py)
# --------------------------------------------------------------------------------------------


def failed_record(settings: Mapping[str, Any], reason: str) -> dict[str, Any]:
    """A metrics.json record for a run that could not start (ARCHITECTURE.md contract keys)."""
    return {
        "status": "failed",
        "reason": reason,
        "model": settings["model"],
        "dataset": settings["dataset"],
        "init": settings["init"],
        "fraction": settings["fraction"],
        "seed": settings["seed"],
        "epochs": settings["epochs"],
    }


def train_job(
    settings: Mapping[str, Any],
    out_dir: str | os.PathLike,
    threads: int | None = None,
    pretrain_metrics: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Train one cell or pretraining job: ``pepr.train.run_training`` with these settings.

    ``settings`` comes from :func:`train_settings`. For a transfer cell, ``pretrain_metrics`` is
    the pretraining run's metrics.json: when that run failed (the model cannot take the source
    data), this cell is recorded as failed with the reason, without training, so the sweep goes
    on and the table lists it. Returns the metrics dict; writes out_dir/metrics.json and
    out_dir/history.csv either way.
    """
    out_dir = Path(out_dir)
    if pretrain_metrics is not None:
        with open(pretrain_metrics, encoding="utf-8") as handle:
            pretrained = json.load(handle)
        if pretrained.get("status") != "ok":
            record = failed_record(
                settings,
                f"pretraining on the transfer source failed ({pretrained.get('reason') or 'no reason recorded'}); "
                f"see {pretrain_metrics}",
            )
            out_dir.mkdir(parents=True, exist_ok=True)
            # An empty history (header only) keeps the declared outputs complete.
            (out_dir / "history.csv").write_text("epoch,train_loss,val_accuracy,test_accuracy,epoch_time_s,cumulative_time_s,cumulative_energy_kwh\n")
            _write_json_atomic(out_dir / "metrics.json", record)
            from pepr.runs import archive_finished

            archive_finished(out_dir)  # a later rerun that fails cannot take this record with it
            return record
    from pepr.train import TrainConfig, run_training

    fields = dict(settings)
    for key in ("data_dir", "save_model"):
        if fields.get(key) is not None:
            fields[key] = Path(fields[key])
    config = TrainConfig(out_dir=out_dir, threads=threads, **fields)
    return run_training(config)
