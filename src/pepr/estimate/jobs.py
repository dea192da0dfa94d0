"""From a workflow config to the jobs an estimate prices: :class:`Job`, dataset facts, batch counts.

The batch-count and fraction rules are pepr.train.loop's and pepr.datasets.core's own public functions
(:func:`pepr.train.loop.train_batch_count`, :func:`pepr.train.loop.eval_batch_size`,
:func:`pepr.datasets.core.stratified_subset_size`), so the estimate counts exactly what training runs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pepr.errors import PeprInputError
from pepr.results.runs import IDENTITY_COLUMNS
from pepr.train import loop

#: Columns identifying one job, named as in ``results/runs.csv``.
JOB_KEYS: tuple[str, ...] = IDENTITY_COLUMNS


@dataclass(frozen=True)
class Job:
    """One training job of a grid, with what its cost depends on.

    ``dataset``/``init``/``fraction``/``model``/``seed`` name the job as ``runs.csv`` does.
    ``n_train`` is the number of training images after the data fraction; ``n_val``/``n_test``
    the images evaluated after every epoch, in batches of ``eval_batch_size`` (pepr.train.run uses
    ``max(batch_size, 256)``). ``in_chans``/``num_classes`` shape the model.
    """

    dataset: str
    init: str
    fraction: float
    model: str
    seed: int
    epochs: int
    image_size: int
    batch_size: int
    eval_batch_size: int
    n_train: int
    n_val: int
    n_test: int
    in_chans: int
    num_classes: int

    def __post_init__(self) -> None:
        for name in ("epochs", "image_size", "batch_size", "eval_batch_size", "in_chans", "num_classes", "n_train"):
            if getattr(self, name) < 1:
                raise PeprInputError(f"job {self.model}/{self.dataset}: {name} must be >= 1, got {getattr(self, name)}")
        if self.n_val < 0 or self.n_test < 0:
            raise PeprInputError(f"job {self.model}/{self.dataset}: n_val and n_test must be >= 0")

    @property
    def cost_key(self) -> tuple[str, int, int, int, int]:
        """What the job's per-batch cost depends on: model, image size, batch sizes, channels.

        The number of classes only sizes the classifier's last layer, so jobs differing only in
        it share one calibration (built with the largest number of classes among them).
        """
        return (self.model, self.image_size, self.batch_size, self.eval_batch_size, self.in_chans)


def train_batches(n_train: int, batch_size: int) -> int:
    """Training steps per epoch, as :func:`pepr.train.loop.batch_order` makes them.

    ``ceil(n / batch)``, except that a last batch of a single image is merged into the previous
    one (BatchNorm cannot train on one sample): :func:`pepr.train.loop.train_batch_count`.
    """
    return loop.train_batch_count(n_train, batch_size)


def eval_batches(n_val: int, n_test: int, eval_batch_size: int) -> int:
    """Evaluation batches per epoch: val and test are predicted separately, each in full."""
    return loop.eval_batch_count(n_val, eval_batch_size) + loop.eval_batch_count(n_test, eval_batch_size)


def eval_batch_size(batch_size: int) -> int:
    """Batch size of pepr.train.run's evaluation passes (:func:`pepr.train.loop.eval_batch_size`)."""
    return loop.eval_batch_size(batch_size)


@dataclass(frozen=True)
class DatasetFacts:
    """What a job's cost depends on in a dataset: split sizes, class counts, image geometry.

    ``train_class_counts`` is None when only the split sizes are known (a MedMNIST file not
    downloaded yet: MedMNIST's published sizes are used and ``source`` says so).
    """

    spec: str
    name: str
    n_train: int
    n_val: int
    n_test: int
    channels: int
    num_classes: int
    stored_size: int
    train_class_counts: tuple[int, ...] | None
    source: str

    def train_size(self, fraction: float, seed: int = 0) -> int:
        """Training images after the workflow's stratified ``fraction`` (pepr.datasets.core's rule)."""
        from pepr.datasets.core import stratified_subset_size

        if self.train_class_counts is None:
            # Class counts unknown (file not downloaded): the rule applied to the split as one class.
            return max(1, int(math.floor(fraction * self.n_train + 0.5)))
        return stratified_subset_size(self.train_class_counts, fraction)


def parse_dataset_size(text: str) -> tuple[str, tuple[int, ...]]:
    """``NAME=TRAIN,VAL,TEST[,SIZE[,CHANNELS]]`` (``--dataset-size``) -> (name, numbers).

    NAME is the dataset's short name (its results folder, e.g. ``lidc`` for ``npz:data/lidc.npz``).
    """
    name, sep, numbers = text.partition("=")
    parts = [p.strip() for p in numbers.split(",")] if sep else []
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        values = ()
    if (
        not name.strip()
        or len(values) not in (3, 4, 5)
        or min(values, default=0) < 0
        or (len(values) > 3 and min(values[3:]) < 1)
    ):
        raise PeprInputError(
            f"--dataset-size {text!r}: expected NAME=TRAIN,VAL,TEST[,SIZE[,CHANNELS]] with whole numbers, "
            "e.g. lidc=6000,2000,2000,128 (images per split, image side in pixels, channels)"
        )
    if values[0] < 1:
        raise PeprInputError(f"--dataset-size {text!r}: the training split needs at least 1 image")
    return name.strip(), values


def dataset_facts(
    spec: str, data_dir: Path | None, given_sizes: Mapping[str, Sequence[int]] | None = None
) -> DatasetFacts:
    """Split sizes, classes and geometry of a dataset spec, reading labels and headers only.

    No data file is needed: MedMNIST flags whose file is not present use MedMNIST's published
    split sizes (stated in ``source``); npz files and present MedMNIST files are read (labels
    only); synthetic sets are computed from their options, as :func:`pepr.datasets.core.make_synthetic`
    would draw them. An npz file that is not there takes its sizes from ``given_sizes``
    (short name -> TRAIN, VAL, TEST[, SIZE[, CHANNELS]], the ``--dataset-size`` flag); without
    them a PeprInputError says to give them.
    """
    from pepr.datasets import core as data
    from pepr.datasets.registry import kind_of

    parsed = data.parse_dataset_spec(spec)
    name = data.dataset_name(spec)
    return DatasetFacts(spec, name, **kind_of(parsed).facts(parsed, name, data_dir, (given_sizes or {}).get(name)))


@dataclass
class GridJobs:
    """The jobs of a workflow config as the estimate sees them, and what was left out."""

    jobs: list[Job]
    grid_models: list[str]
    grid_jobs: int
    datasets: dict[str, DatasetFacts]
    config: dict
    notes: list[str] = field(default_factory=list)


def jobs_from_config(
    config: dict,
    schema_path: str | Path,
    *,
    source: str = "config",
    models: Sequence[str] | None = None,
    max_models: int | None = None,
    cache_dir: str | Path | None = None,
    dataset_sizes: Mapping[str, Sequence[int]] | None = None,
) -> GridJobs:
    """Validate a workflow config (pepr.plan.config) and turn its grid into :class:`Job` objects.

    ``config`` is the loaded YAML mapping (defaults are filled in, in place, by pepr.plan.config).
    The config is checked as ``snakemake -n`` checks it, except that data files need not exist
    (a cost estimate comes before the data: sizes come from MedMNIST's metadata, the npz header
    or ``dataset_sizes``, see :func:`dataset_facts`).
    Pretraining jobs of the ``transfer`` strategy are included (init ``pretrain``, dataset = the
    source's short name). ``models`` keeps only those models; a model that is not in the config
    is priced on the config's grid too (its datasets, inits, fractions and seeds, after
    include/exclude), checked like a config model (a timm name, ImageNet weights for imagenet
    cells). ``max_models`` keeps the first N models of the grid in config order. Raises
    PeprInputError for a bad config, an unknown model, or ``max_models < 1``.
    """
    import copy

    from pepr.plan import prepare as plan
    from pepr.plan.config import apply_defaults, load_schema
    from pepr.train.checks import timm_catalogue

    schema_path = Path(schema_path)
    if not schema_path.is_file():
        raise PeprInputError(
            f"workflow config schema '{schema_path}' not found; run from the project root or pass --schema PATH"
        )
    if max_models is not None and max_models < 1:
        raise PeprInputError(f"--max-models must be at least 1, got {max_models}")
    schema = load_schema(schema_path)
    apply_defaults(config, schema)
    config_models = [m for m in config.get("models") or [] if isinstance(m, str)]
    extra = [m for m in dict.fromkeys(models or ()) if m not in config_models]
    planned = config
    if extra:
        planned = copy.deepcopy(config)
        planned["models"] = config_models + extra
    # as `snakemake -n` checks it, but data files need not exist yet (check_data=False)
    plan.check_config(planned, schema, catalogue=timm_catalogue(cache_dir), check_data=False, source=source)
    grid = plan.prepare_grid(planned, schema_path, None, validate=False, source=source)
    config_set = set(config_models)
    grid_models = list(dict.fromkeys(cell.model for cell in grid.cells if cell.model in config_set))
    all_job_count = sum(c.model in config_set for c in grid.cells) + sum(
        j.model in config_set for j in grid.pretrain_jobs
    )
    keep = grid_models
    notes: list[str] = []
    if models:
        keep = [m for m in dict.fromkeys(models)]
        absent = [m for m in keep if not any(cell.model == m for cell in grid.cells)]
        if absent:
            raise PeprInputError(
                f"--models: {', '.join(absent)} keep no cell of {source} after its include/exclude filters"
            )
        if extra:
            notes.append(
                f"{', '.join(extra)} not in the models of {source}: priced on its grid "
                "(the same datasets, inits, fractions and seeds)"
            )
    if max_models is not None:
        keep = keep[:max_models]
    keep_set = set(keep)
    data_dir = Path(config["data_dir"]) if config.get("data_dir") else None
    known_names = {item["name"] for item in grid.datasets.values()}
    unknown_sizes = sorted(set(dataset_sizes or {}) - known_names)
    if unknown_sizes:
        raise PeprInputError(
            f"--dataset-size: {', '.join(unknown_sizes)} is not a dataset of {source} "
            f"(its datasets: {', '.join(sorted(known_names))})"
        )
    specs = [cell.dataset for cell in grid.cells] + [job.source for job in grid.pretrain_jobs]
    facts = {spec: dataset_facts(spec, data_dir, dataset_sizes) for spec in dict.fromkeys(specs)}
    jobs: list[Job] = []

    def make(model: str, spec: str, init: str, fraction: float, seed: int, epochs: int) -> Job:
        fact = facts[spec]
        image_size = int(config["image_size"]) if config.get("image_size") else fact.stored_size
        if image_size < 1:
            raise PeprInputError(
                f"dataset {fact.name}: its image size is unknown (no file, the config's image_size is null); "
                f"give it as the 4th number of --dataset-size {fact.name}=TRAIN,VAL,TEST,SIZE"
            )
        return Job(
            dataset=fact.name,
            init=init,
            fraction=float(fraction),
            model=model,
            seed=int(seed),
            epochs=int(epochs),
            image_size=image_size,
            batch_size=int(config["batch_size"]),
            eval_batch_size=eval_batch_size(int(config["batch_size"])),
            n_train=fact.train_size(float(fraction), int(seed)),
            n_val=fact.n_val,
            n_test=fact.n_test,
            in_chans=fact.channels,
            num_classes=fact.num_classes,
        )

    for job in grid.pretrain_jobs:
        if job.model in keep_set:
            jobs.append(make(job.model, job.source, "pretrain", job.fraction, job.seed, job.epochs))
    for cell in grid.cells:
        if cell.model in keep_set:
            jobs.append(make(cell.model, cell.dataset, cell.init, cell.fraction, cell.seed, config["epochs"]))
    notes += [
        f"dataset {fact.name}: {fact.n_train}/{fact.n_val}/{fact.n_test} train/val/test images, "
        f"{fact.channels} channel(s), {fact.num_classes} classes ({fact.source})"
        for fact in facts.values()
    ]
    if grid.pretrain_jobs:
        notes.append("jobs include the transfer strategy's pretraining runs (init 'pretrain').")
    return GridJobs(
        jobs=jobs, grid_models=grid_models, grid_jobs=all_job_count, datasets=facts, config=config, notes=notes
    )
