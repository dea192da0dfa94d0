"""Validated workflow config -> grid of cells (the jobs of a sweep), and the job command.

A *cell* is one model x dataset x init strategy x data fraction x seed; the workflow trains each
cell once, in ``results/runs/{dataset}/{init}/{fraction}/{model}/seed{seed}/`` (the layout of
:mod:`pepr.runs`). This module:

* expands a config into :class:`Cell` objects (:func:`build_grid`), including the pretraining
  jobs of the ``transfer`` strategy (:class:`PretrainJob`);
* gives each job its training settings (:func:`train_settings`: the train rules' ``params``) and
  the ``pepr train`` flags they stand for (:class:`TrainSettings`);
* is the Snakefile's entry point (:func:`prepare_grid`): validate once (:mod:`pepr.config`),
  remember the result by hash, expand.

Config loading and validation live in :mod:`pepr.config`; their public names (``load_config``,
``load_schema``, ``apply_defaults``, ``schema_problems``, ``config_problems``, ``check_config``,
``timm_catalogue``) are importable from here too. It imports neither torch nor timm at module
level: Snakemake parses the workflow in every job and importing timm costs seconds.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pepr.config import (  # noqa: F401 - re-exported: estimate, tests and older code import them from here
    apply_defaults,
    check_config,
    config_problems,
    load_config,
    load_schema,
    schema_problems,
    timm_catalogue,
)
from pepr.config import _timm_version
from pepr.errors import PeprInputError
from pepr.runs import PRETRAIN_DIR, RUNS_DIR, atomic_write_json, cell_key, format_fraction

__all__ = [
    "INIT_STRATEGIES",
    "Cell",
    "PretrainJob",
    "Grid",
    "TrainSettings",
    "load_config",
    "load_schema",
    "apply_defaults",
    "schema_problems",
    "config_problems",
    "check_config",
    "build_grid",
    "expand_cells",
    "pattern_matches",
    "prepare_grid",
    "timm_catalogue",
    "train_settings",
    "format_fraction",
    "cell_key",
]

#: Version of the checks behind a cached "validated" mark (part of its key): raise it when the
#: checks grow, so a config validated by fewer checks is checked again. 2: report settings,
#: seed range and pepr train's checks on every job joined the config check.
VALIDATION_VERSION = 2

#: Init strategies of the workflow (``transfer`` becomes ``--init checkpoint:PATH`` per job).
INIT_STRATEGIES: tuple[str, ...] = ("scratch", "imagenet", "transfer")


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
# Grid expansion
# --------------------------------------------------------------------------------------------


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


def pattern_matches(pattern: Mapping[str, Any], cell: Cell) -> bool:
    """Whether ``cell`` matches an include/exclude pattern (every key given matches)."""
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


def expand_cells(config: Mapping[str, Any], names: Mapping[str, str], apply_filters: bool) -> list[Cell]:
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
            if include and not any(pattern_matches(p, cell) for p in include):
                continue
            if any(pattern_matches(p, cell) for p in config.get("exclude") or []):
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
    cells = expand_cells(config, names, apply_filters=True)
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
        "checks": VALIDATION_VERSION,
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

    With ``validate`` every problem is raised at once as a PeprInputError before any job exists
    (:func:`pepr.config.check_config`: config, report settings and ``pepr train``'s own checks
    on every job).
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
    if validate and cache_file is not None:
        atomic_write_json(cache_file, {"datasets": info}, indent=None)
    return grid


def dataset_info(specs: Iterable[str], data_dir: str | os.PathLike | None) -> dict[str, dict[str, Any]]:
    """spec -> ``{"name": short name, "kind": medmnist|npz|synthetic, "file": path or None}``."""
    from pepr.data import dataset_file, dataset_name, parse_dataset_spec

    info = {}
    for spec in specs:
        parsed = parse_dataset_spec(spec)
        path = dataset_file(parsed, Path(data_dir) if data_dir is not None else None)
        info[spec] = {"name": dataset_name(spec), "kind": parsed.kind, "file": str(path) if path is not None else None}
    return info


def train_settings(cell: Cell | PretrainJob, config: Mapping[str, Any]) -> "TrainSettings":
    """The ``pepr.train.TrainConfig`` fields of a cell or pretraining job, minus out_dir/threads.

    Only training settings go in (they are the train rules' ``params``, so Snakemake retrains a
    cell exactly when one of them changes): no report or scoring settings. Returned as a
    :class:`TrainSettings`, a plain dict to Snakemake's params record, whose text is the
    matching ``pepr train`` flags.
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
        pretrain_metrics = None
    else:
        common.update(dataset=cell.dataset, init=cell.init_arg, fraction=cell.fraction, seed=cell.seed)
        pretrain_metrics = cell.pretrain.metrics if cell.pretrain is not None else None
    # Passed through only when set, so a finished sweep's params (the rerun trigger) stay the same.
    if config.get("precision", "fp32") != "fp32":
        common["precision"] = config["precision"]
    if config.get("carbon_intensity") is not None:
        common["carbon_intensity"] = config["carbon_intensity"]
    return TrainSettings(common, out_dir=cell.directory, pretrain_metrics=pretrain_metrics)


class TrainSettings(dict):
    """A job's training settings (``pepr.train.TrainConfig`` fields) whose text is the job's
    ``pepr train`` flags, each value shell-quoted.

    The train rules keep ``params: train=<these settings>`` exactly as sweeps finished before the
    rules became ``shell:`` rules recorded it: Snakemake records a dict param as its ``repr``,
    which a dict subclass does not change, so an old finished sweep plans no retrain. The
    ``shell:`` command writes ``{params.train}``, and Snakemake formats a value with ``str``: the
    flags below. ``out_dir`` (the job's run folder, ``--out``) and ``pretrain_metrics`` (a
    transfer cell's pretraining record, ``--pretrain-metrics``) are flags without being
    settings: the rule's output folder and input, not params. (One field instead of several
    also keeps Snakemake's formatting of the command cheap: it formats it for every job.)
    """

    #: Setting -> ``pepr train`` flag (every TrainConfig field a job sets; out_dir and threads
    #: come from the rule's output and threads).
    FLAGS: dict[str, str] = {
        "model": "--model",
        "dataset": "--dataset",
        "init": "--init",
        "fraction": "--fraction",
        "epochs": "--epochs",
        "seed": "--seed",
        "data_dir": "--data-dir",
        "image_size": "--image-size",
        "batch_size": "--batch-size",
        "lr": "--lr",
        "device": "--device",
        "country": "--country",
        "save_model": "--save-model",
        "precision": "--precision",
        "carbon_intensity": "--carbon-intensity",
    }

    def __init__(self, settings: Mapping[str, Any], out_dir: str | None = None, pretrain_metrics: str | None = None) -> None:
        super().__init__(settings)
        unknown = sorted(set(self) - set(self.FLAGS))
        if unknown:  # a programming error: every setting must reach pepr train
            raise ValueError(f"training settings without a pepr train flag: {', '.join(unknown)}")
        self.out_dir = out_dir
        self.pretrain_metrics = pretrain_metrics

    def arguments(self) -> list[str]:
        """The ``pepr train`` arguments (unquoted list; None values are left to the defaults)."""
        args: list[str] = []
        for key, value in self.items():
            if value is None:
                continue
            # repr keeps every digit of a float (0.1 stays 0.1, 5e-4 stays 0.0005)
            args += [self.FLAGS[key], repr(value) if isinstance(value, float) else str(value)]
        if self.out_dir is not None:
            args += ["--out", str(self.out_dir)]
        if self.pretrain_metrics is not None:
            args += ["--pretrain-metrics", str(self.pretrain_metrics)]
        return args

    def __str__(self) -> str:
        return shlex.join(self.arguments())

    def __repr__(self) -> str:
        # What Snakemake records and compares as the rerun trigger: pepr decides what counts as a
        # change (pepr.rerun: training settings and data content; not country or data_dir).
        from pepr.rerun import record_text

        return record_text(self)

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)
