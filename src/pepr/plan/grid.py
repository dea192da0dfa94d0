"""Validated workflow config -> grid of cells (the jobs of a sweep), and each job's settings.

A *cell* is one model x dataset x init strategy x data fraction x seed; the workflow trains each
cell once, in the run folder :mod:`pepr.results.runs` names. This module:

* expands a config into :class:`Cell` objects (:func:`build_grid`), including the pretraining
  jobs of the ``transfer`` strategy (:class:`PretrainJob`);
* gives each job its training settings (:func:`train_settings`: the train rules' ``params``,
  derived from :class:`pepr.train.settings.TrainConfig`'s fields) and the ``pepr train`` flags they
  stand for (:class:`TrainSettings`).

Validation and the workflow's entry point (``prepare_grid``) are :mod:`pepr.plan.prepare`'s; config
loading and defaults :mod:`pepr.plan.config`'s. It imports neither torch nor timm: Snakemake parses
the workflow in every job and importing timm costs seconds.
"""

from __future__ import annotations

import itertools
import os
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pepr.errors import PeprInputError
from pepr.results.runs import METRICS_FILE, cell_key, format_fraction, pretrain_folder, pretrain_key, run_folder
from pepr.train.settings import flag_of, workflow_fields

__all__ = [
    "INIT_STRATEGIES",
    "Cell",
    "PretrainJob",
    "Grid",
    "TrainSettings",
    "build_grid",
    "dataset_info",
    "expand_cells",
    "pattern_matches",
    "train_settings",
]

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
        return pretrain_folder(self.source_name, self.model)

    @property
    def checkpoint(self) -> str:
        """The saved weights fine-tune jobs start from (``--init checkpoint:PATH``)."""
        return f"{self.directory}/model.pt"

    @property
    def metrics(self) -> str:
        """Declared output of the pretraining job."""
        return f"{self.directory}/{METRICS_FILE}"


@dataclass(frozen=True)
class Cell:
    """One training run of the sweep, with the names the workflow gives it."""

    model: str
    dataset: str  # spec as given in the config (what `pepr train --dataset` takes)
    dataset_name: str  # path-safe short name (pepr.datasets.core.dataset_name)
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
        return run_folder(self.key)

    @property
    def metrics(self) -> str:
        """Declared output: the run's metrics.json."""
        return f"{self.directory}/{METRICS_FILE}"

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
    _source_changed: dict[str, bool] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.by_key = {cell.key: cell for cell in self.cells}
        self.pretrain_by_key = {pretrain_key(job.source_name, job.model): job for job in self.pretrain_jobs}

    def cell(self, dataset: str, init: str, fraction: str, model: str, seed: str | int) -> Cell:
        """The cell behind a set of wildcard values; PeprInputError when the sweep has no such cell."""
        key = cell_key(dataset, init, fraction, model, seed)
        try:
            return self.by_key[key]
        except KeyError:
            raise PeprInputError(
                f"{run_folder(key)} is not a cell of this sweep's config; add its model/dataset/"
                "init/fraction/seed to the config (or request only targets of the configured grid)"
            ) from None

    def pretrain_job(self, source_name: str, model: str) -> PretrainJob:
        """The pretraining job behind wildcard values; PeprInputError when not in the sweep."""
        try:
            return self.pretrain_by_key[pretrain_key(source_name, model)]
        except KeyError:
            raise PeprInputError(
                f"{pretrain_folder(source_name, model)} is not a pretraining job of this config "
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
        return {item["file"]: spec for spec, item in self.datasets.items() if item["fetched"] and spec in used}

    def planned_digests(self, data_dir: str | os.PathLike | None) -> dict[str, Any]:
        """Converted file -> its kind's ``planned_digest`` (one argument left: the file-digest
        function), for :class:`pepr.plan.rerun.DataDigests`."""
        import functools

        from pepr.datasets.core import parse_dataset_spec
        from pepr.datasets.registry import kind_of

        root = Path(data_dir) if data_dir is not None else None
        return {
            file: functools.partial(kind_of(parsed).planned_digest, parsed, root)
            for file, parsed in ((file, parse_dataset_spec(spec)) for file, spec in self.converted_files.items())
        }

    def source_changed(self, spec: str) -> bool:
        """Whether a converted dataset's files changed since its conversion (asked once per spec)."""
        if spec not in self._source_changed:
            from pepr.datasets.core import parse_dataset_spec
            from pepr.datasets.registry import kind_of

            parsed = parse_dataset_spec(spec)
            data_dir = self.config.get("data_dir")
            self._source_changed[spec] = kind_of(parsed).source_changed(
                parsed, Path(data_dir) if data_dir is not None else None
            )
        return self._source_changed[spec]

    @property
    def converted_files(self) -> dict[str, str]:
        """File -> spec for the datasets converted from the user's files (what prepare_images builds)."""
        return {item["file"]: spec for spec, item in self.datasets.items() if item["converted"]}

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
        from pepr.datasets.core import dataset_name

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


def dataset_info(specs: Iterable[str], data_dir: str | os.PathLike | None) -> dict[str, dict[str, Any]]:
    """spec -> ``{"name": short name, "kind": medmnist|npz|synthetic|folder|csv, "file": path or None,
    "fetched": a missing file is downloaded, "converted": the file is built from the user's files}``."""
    from pepr.datasets.core import dataset_file, dataset_name, parse_dataset_spec
    from pepr.datasets.registry import kind_of

    info = {}
    for spec in specs:
        parsed = parse_dataset_spec(spec)
        kind = kind_of(parsed)
        path = dataset_file(parsed, Path(data_dir) if data_dir is not None else None)
        info[spec] = {
            "name": dataset_name(spec),
            "kind": parsed.kind,
            "file": str(path) if path is not None else None,
            "fetched": kind.fetched,
            "converted": kind.converted,
        }
    return info


def train_settings(cell: Cell | PretrainJob, config: Mapping[str, Any]) -> TrainSettings:
    """The ``pepr.train.settings.TrainConfig`` fields of a cell or pretraining job that the workflow sets.

    Only training settings go in (they are the train rules' ``params``, so Snakemake retrains a
    cell exactly when one of them changes): no report or scoring settings, nor out_dir/threads.
    Fields come in TrainConfig's order (the text finished sweeps recorded): ``sweep`` fields
    from the config key of the same name (ints and floats as such), ``optional`` ones only when
    not at their default, ``job`` ones from the cell or pretraining job. Returned as a
    :class:`TrainSettings`, a plain dict to Snakemake's params record, whose text is the
    matching ``pepr train`` flags.
    """
    if isinstance(cell, PretrainJob):
        job = {
            "model": cell.model,
            "epochs": cell.epochs,
            "dataset": cell.source,
            "init": "scratch",
            "fraction": cell.fraction,
            "seed": cell.seed,
            "save_model": cell.checkpoint,
        }
        pretrain_metrics = None
    else:
        job = {
            "model": cell.model,
            "dataset": cell.dataset,
            "init": cell.init_arg,
            "fraction": cell.fraction,
            "seed": cell.seed,
        }
        pretrain_metrics = cell.pretrain.metrics if cell.pretrain is not None else None
    settings: dict[str, Any] = {}
    for item in workflow_fields():
        role, name = item.metadata["workflow"], item.name
        if name in job:
            settings[name] = job[name]
        elif role == "sweep":
            settings[name] = _COERCE.get(item.type, _same)(config[name])
        elif role == "optional" and config.get(name, item.default) != item.default:
            # Passed through only when set, so a finished sweep's params (the rerun trigger) stay the same.
            settings[name] = config[name]
    return TrainSettings(settings, out_dir=cell.directory, pretrain_metrics=pretrain_metrics)


def _same(value: Any) -> Any:
    return value


#: A sweep setting typed ``int`` or ``float`` in TrainConfig is written as one (lr: 1 -> 1.0).
_COERCE = {"int": int, "float": float, int: int, float: float}


class TrainSettings(dict):
    """A job's training settings (``pepr.train.settings.TrainConfig`` fields) whose text is the job's
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
    FLAGS: dict[str, str] = {item.name: flag_of(item) for item in workflow_fields()}

    def __init__(
        self, settings: Mapping[str, Any], out_dir: str | None = None, pretrain_metrics: str | None = None
    ) -> None:
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
        # change (pepr.plan.rerun: training settings and data content; not country or data_dir).
        from pepr.plan.rerun import record_text

        return record_text(self)

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)
