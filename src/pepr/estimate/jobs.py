"""From a workflow config to the jobs an estimate prices: :class:`Job`, dataset facts, batch counts.

The batch-count and fraction rules are pepr.loop's and pepr.data's own public functions
(:func:`pepr.loop.train_batch_count`, :func:`pepr.loop.eval_batch_size`,
:func:`pepr.data.stratified_subset_size`), so the estimate counts exactly what training runs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pepr import loop
from pepr.errors import PeprInputError
from pepr.runs import IDENTITY_COLUMNS

#: Columns identifying one job, named as in ``results/runs.csv``.
JOB_KEYS: tuple[str, ...] = IDENTITY_COLUMNS


@dataclass(frozen=True)
class Job:
    """One training job of a grid, with what its cost depends on.

    ``dataset``/``init``/``fraction``/``model``/``seed`` name the job as ``runs.csv`` does.
    ``n_train`` is the number of training images after the data fraction; ``n_val``/``n_test``
    the images evaluated after every epoch, in batches of ``eval_batch_size`` (pepr.train uses
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
    """Training steps per epoch, as :func:`pepr.loop.batch_order` makes them.

    ``ceil(n / batch)``, except that a last batch of a single image is merged into the previous
    one (BatchNorm cannot train on one sample): :func:`pepr.loop.train_batch_count`.
    """
    return loop.train_batch_count(n_train, batch_size)


def eval_batches(n_val: int, n_test: int, eval_batch_size: int) -> int:
    """Evaluation batches per epoch: val and test are predicted separately, each in full."""
    return loop.eval_batch_count(n_val, eval_batch_size) + loop.eval_batch_count(n_test, eval_batch_size)


def eval_batch_size(batch_size: int) -> int:
    """Batch size of pepr.train's evaluation passes (:func:`pepr.loop.eval_batch_size`)."""
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
        """Training images after the workflow's stratified ``fraction`` (pepr.data's rule)."""
        from pepr.data import stratified_subset_size

        if self.train_class_counts is None:
            # Class counts unknown (file not downloaded): the rule applied to the split as one class.
            return max(1, int(math.floor(fraction * self.n_train + 0.5)))
        return stratified_subset_size(self.train_class_counts, fraction)


def dataset_facts(spec: str, data_dir: Path | None) -> DatasetFacts:
    """Split sizes, classes and geometry of a dataset spec, reading labels and headers only.

    MedMNIST flags whose file is not present use MedMNIST's published split sizes (stated in
    ``source``); npz files and present MedMNIST files are read (labels only); synthetic sets are
    computed from their options, as :func:`pepr.data.make_synthetic` would draw them.
    """
    import numpy as np

    from pepr import data

    parsed = data.parse_dataset_spec(spec)
    name = data.dataset_name(spec)
    if parsed.kind == "synthetic":
        options = dict(parsed.options)
        classes = int(options["classes"])
        counts = data.synthetic_class_counts(int(options["n_train"]), classes, float(options["imbalance"]))
        return DatasetFacts(
            spec, name, int(options["n_train"]), int(options["n_val"]), int(options["n_test"]),
            int(options["channels"]), classes, int(options["size"]), tuple(int(c) for c in counts),
            "synthetic options",
        )
    path = data.dataset_file(parsed, data_dir)
    assert path is not None
    if parsed.kind == "medmnist":
        info = data.medmnist_info(parsed.flag)
        if not path.exists():
            sizes = info["n_samples"]
            return DatasetFacts(
                spec, name, int(sizes["train"]), int(sizes["val"]), int(sizes["test"]), int(info["n_channels"]),
                len(info["label"]), int(parsed.size), None,
                f"MedMNIST's published split sizes ({path} not present yet)",
            )
    problems = data.dataset_problems(spec, data_dir)
    if problems:
        raise PeprInputError("; ".join(problems))
    headers = data.npz_headers(path)
    shape = headers["train_images"][0]
    channels = int(shape[3]) if len(shape) == 4 else 1
    with np.load(path, allow_pickle=False) as archive:  # labels only: images are not read
        train_labels = np.asarray(archive["train_labels"]).reshape(-1).astype(np.int64)
        n_val = int(np.asarray(archive["val_labels"]).reshape(-1).shape[0])
        n_test = int(np.asarray(archive["test_labels"]).reshape(-1).shape[0])
    if parsed.kind == "medmnist":
        num_classes = len(data.medmnist_info(parsed.flag)["label"])
    else:
        num_classes = int(train_labels.max()) + 1
    counts = np.bincount(train_labels, minlength=num_classes)
    return DatasetFacts(
        spec, name, int(len(train_labels)), n_val, n_test, channels, num_classes, int(shape[1]),
        tuple(int(c) for c in counts), f"labels read from {path}",
    )


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
) -> GridJobs:
    """Validate a workflow config (pepr.config) and turn its grid into :class:`Job` objects.

    ``config`` is the loaded YAML mapping (defaults are filled in, in place, by pepr.config).
    Pretraining jobs of the ``transfer`` strategy are included (init ``pretrain``, dataset = the
    source's short name). ``models`` keeps only those models (each must be in the grid);
    ``max_models`` keeps the first N models of the grid in config order. Raises PeprInputError
    for a bad config, an unknown model in ``models``, or ``max_models < 1``.
    """
    from pepr import plan

    schema_path = Path(schema_path)
    if not schema_path.is_file():
        raise PeprInputError(
            f"workflow config schema '{schema_path}' not found; run from the project root or pass --schema PATH"
        )
    if max_models is not None and max_models < 1:
        raise PeprInputError(f"--max-models must be at least 1, got {max_models}")
    grid = plan.prepare_grid(config, schema_path, cache_dir, validate=True, source=source)
    grid_models = list(dict.fromkeys(cell.model for cell in grid.cells))
    all_job_count = len(grid.cells) + len(grid.pretrain_jobs)
    keep = grid_models
    if models:
        unknown = [m for m in models if m not in grid_models]
        if unknown:
            raise PeprInputError(
                f"--models: {', '.join(unknown)} not in the grid of {source} "
                f"(its {len(grid_models)} models start with {', '.join(grid_models[:5])})"
            )
        keep = [m for m in grid_models if m in set(models)]
    if max_models is not None:
        keep = keep[:max_models]
    keep_set = set(keep)
    data_dir = Path(config["data_dir"]) if config.get("data_dir") else None
    specs = [cell.dataset for cell in grid.cells] + [job.source for job in grid.pretrain_jobs]
    facts = {spec: dataset_facts(spec, data_dir) for spec in dict.fromkeys(specs)}
    jobs: list[Job] = []

    def make(model: str, spec: str, init: str, fraction: float, seed: int, epochs: int) -> Job:
        fact = facts[spec]
        image_size = int(config["image_size"]) if config.get("image_size") else fact.stored_size
        return Job(
            dataset=fact.name, init=init, fraction=float(fraction), model=model, seed=int(seed), epochs=int(epochs),
            image_size=image_size, batch_size=int(config["batch_size"]),
            eval_batch_size=eval_batch_size(int(config["batch_size"])),
            n_train=fact.train_size(float(fraction), int(seed)), n_val=fact.n_val, n_test=fact.n_test,
            in_chans=fact.channels, num_classes=fact.num_classes,
        )

    for job in grid.pretrain_jobs:
        if job.model in keep_set:
            jobs.append(make(job.model, job.source, "pretrain", job.fraction, job.seed, job.epochs))
    for cell in grid.cells:
        if cell.model in keep_set:
            jobs.append(make(cell.model, cell.dataset, cell.init, cell.fraction, cell.seed, config["epochs"]))
    notes = [f"dataset {fact.name}: {fact.n_train}/{fact.n_val}/{fact.n_test} train/val/test images, "
             f"{fact.channels} channel(s), {fact.num_classes} classes ({fact.source})" for fact in facts.values()]
    if grid.pretrain_jobs:
        notes.append("jobs include the transfer strategy's pretraining runs (init 'pretrain').")
    return GridJobs(jobs=jobs, grid_models=grid_models, grid_jobs=all_job_count, datasets=facts, config=config, notes=notes)

