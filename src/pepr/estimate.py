"""``pepr estimate``: what a sweep will cost (device-hours, kWh, kg CO2) before it is launched.

Three steps, each usable on its own:

1. **Calibration** (:func:`calibrate_models`): on the current device, each model runs a few
   timed training steps (forward, backward, optimizer step) and evaluation batches at the sweep's
   image size and batch size, after warm-up, on random tensors. The device's power during those
   timed batches is measured with CodeCarbon's offline tracker (one task per model), or given by
   the user (``power_w``). A model that cannot run (kernel larger than the image, out of memory,
   unknown to timm) is recorded as failed with the reason; it is never dropped.
2. **Arithmetic** (:func:`estimate_jobs`): every job of the grid (dataset x init x fraction x
   model x seed) costs ``epochs x (train batches x train s/batch + eval batches x eval s/batch)
   + job overhead`` seconds; energy = time x power; CO2 = energy x the country's carbon
   intensity (CodeCarbon's table). Pure arithmetic on :class:`Job` and :class:`Calibration`.
3. **Comparison** (:func:`compare_estimate`): after the sweep, estimate vs measurement per model,
   from ``results/estimate.csv`` and ``results/runs.csv``.

torch, timm and codecarbon are imported inside the functions that need them, so that the
arithmetic and the comparison stay light.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import pandas as pd

from pepr.errors import PeprInputError

__all__ = [
    "Job",
    "CalibrationSpec",
    "Calibration",
    "EstimateAssumptions",
    "carbon_intensity_g_per_kwh",
    "calibration_specs",
    "calibrate_models",
    "estimate_jobs",
    "summarise_by_model",
    "totals",
    "format_report",
    "compare_estimate",
    "plot_comparison",
    "compare_files",
    "JOB_KEYS",
    "DatasetFacts",
    "dataset_facts",
    "GridJobs",
    "jobs_from_config",
    "EstimateSettings",
    "EstimateResult",
    "run_estimate",
    "build_training_model",
    "train_batches",
    "eval_batches",
    "eval_batch_size",
]

#: Columns identifying one job, named as in ``results/runs.csv``.
JOB_KEYS: tuple[str, ...] = ("dataset", "init", "fraction", "model", "seed")

#: Below this CPU share the calibration's machine was busy and the report warns.
BUSY_CPU_SHARE = 0.8

_SECONDS_PER_HOUR = 3600.0
_JOULES_PER_KWH = 3.6e6


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
    """Training steps per epoch, as :func:`pepr.train.batch_order` makes them.

    ``ceil(n / batch)``, except that a last batch of a single image is merged into the previous
    one (BatchNorm cannot train on one sample).
    """
    batches = math.ceil(n_train / batch_size)
    last = n_train - (batches - 1) * batch_size
    if batches > 1 and last == 1:
        batches -= 1
    return batches


def eval_batches(n_val: int, n_test: int, eval_batch_size: int) -> int:
    """Evaluation batches per epoch: val and test are predicted separately, each in full."""
    return math.ceil(n_val / eval_batch_size) + math.ceil(n_test / eval_batch_size)


@dataclass(frozen=True, order=True)
class CalibrationSpec:
    """What one calibration measures: a model at one input shape and batch sizes.

    Jobs with the same :attr:`cost_key` share a calibration; ``num_classes`` is the largest
    among them (it only sizes the classifier).
    """

    model: str
    image_size: int
    batch_size: int
    eval_batch_size: int
    in_chans: int
    num_classes: int

    @property
    def cost_key(self) -> tuple[str, int, int, int, int]:
        """The key jobs are matched on (see :attr:`Job.cost_key`)."""
        return (self.model, self.image_size, self.batch_size, self.eval_batch_size, self.in_chans)


@dataclass(frozen=True)
class Calibration:
    """Measured cost of one :class:`CalibrationSpec` on one device.

    ``status`` is ``"ok"`` or ``"failed"`` (then ``reason`` says why and the timings are NaN).
    ``train_s_per_batch``: one training step (forward + backward + Adam step) on a full batch
    of ``batch_size``; ``eval_s_per_batch``: one inference forward pass on ``eval_batch_size``
    images. Both are measured with pepr.train's own loops (same precision and memory layout). ``power_w``: mean power of the
    whole machine as measured (or given) while the timed batches ran; ``power_method`` says how.
    """

    model: str
    image_size: int
    batch_size: int
    eval_batch_size: int
    in_chans: int
    num_classes: int
    device: str
    status: str
    reason: str = ""
    params: int | None = None
    train_s_per_batch: float = math.nan
    eval_s_per_batch: float = math.nan
    train_batches_timed: int = 0
    eval_batches_timed: int = 0
    power_w: float = math.nan
    power_method: str = ""
    peak_memory_mb: float = math.nan
    cpu_share: float = math.nan
    calibration_wall_s: float = math.nan

    @property
    def cost_key(self) -> tuple[str, int, int, int, int]:
        """The key jobs are matched on (see :attr:`Job.cost_key`)."""
        return (self.model, self.image_size, self.batch_size, self.eval_batch_size, self.in_chans)

    @property
    def spec(self) -> CalibrationSpec:
        """The spec this calibration answers."""
        return CalibrationSpec(
            self.model, self.image_size, self.batch_size, self.eval_batch_size, self.in_chans, self.num_classes
        )

    @property
    def ok(self) -> bool:
        """True when the model ran and has timings."""
        return self.status == "ok"


@dataclass(frozen=True)
class EstimateAssumptions:
    """Settings of the arithmetic that are not measured, printed with every estimate.

    ``job_overhead_s`` is added once per job (process start, imports, data loading, model
    creation; not in the calibration). ``pue`` multiplies energy (1.0 = the device alone, as
    CodeCarbon reports by default). ``carbon_intensity_g_per_kwh`` and ``country`` set CO2.
    """

    country: str
    carbon_intensity_g_per_kwh: float
    job_overhead_s: float = 0.0
    pue: float = 1.0

    def __post_init__(self) -> None:
        if not (self.job_overhead_s >= 0 and math.isfinite(self.job_overhead_s)):
            raise PeprInputError(f"job overhead must be a non-negative number of seconds, got {self.job_overhead_s}")
        if not (self.pue >= 1.0 and math.isfinite(self.pue)):
            raise PeprInputError(f"PUE must be a number >= 1.0, got {self.pue}")
        if not (self.carbon_intensity_g_per_kwh >= 0 and math.isfinite(self.carbon_intensity_g_per_kwh)):
            raise PeprInputError(f"carbon intensity must be >= 0 g/kWh, got {self.carbon_intensity_g_per_kwh}")


# --------------------------------------------------------------------------------------------
# From a workflow config to jobs
# --------------------------------------------------------------------------------------------


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
        if self.train_class_counts is None:
            return max(1, int(math.floor(fraction * self.n_train + 0.5)))
        import numpy as np

        from pepr.data import stratified_subset

        labels = np.repeat(np.arange(len(self.train_class_counts)), self.train_class_counts)
        return int(len(stratified_subset(labels, fraction, seed)))


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
        counts = data._class_counts(int(options["n_train"]), classes, float(options["imbalance"]))
        return DatasetFacts(
            spec, name, int(options["n_train"]), int(options["n_val"]), int(options["n_test"]),
            int(options["channels"]), classes, int(options["size"]), tuple(int(c) for c in counts),
            "synthetic options",
        )
    path = data.dataset_file(parsed, data_dir)
    assert path is not None
    if parsed.kind == "medmnist":
        info = data._medmnist_info()[parsed.flag]
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
    headers = data._npz_headers(path)
    shape = headers["train_images"][0]
    channels = int(shape[3]) if len(shape) == 4 else 1
    with np.load(path, allow_pickle=False) as archive:  # labels only: images are not read
        train_labels = np.asarray(archive["train_labels"]).reshape(-1).astype(np.int64)
        n_val = int(np.asarray(archive["val_labels"]).reshape(-1).shape[0])
        n_test = int(np.asarray(archive["test_labels"]).reshape(-1).shape[0])
    if parsed.kind == "medmnist":
        num_classes = len(data._medmnist_info()[parsed.flag]["label"])
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
    """Validate a workflow config (pepr.grid) and turn its grid into :class:`Job` objects.

    ``config`` is the loaded YAML mapping (defaults are filled in, in place, by pepr.grid).
    Pretraining jobs of the ``transfer`` strategy are included (init ``pretrain``, dataset = the
    source's short name). ``models`` keeps only those models (each must be in the grid);
    ``max_models`` keeps the first N models of the grid in config order. Raises PeprInputError
    for a bad config, an unknown model in ``models``, or ``max_models < 1``.
    """
    from pepr import grid as grid_mod

    schema_path = Path(schema_path)
    if not schema_path.is_file():
        raise PeprInputError(
            f"workflow config schema '{schema_path}' not found; run from the project root or pass --schema PATH"
        )
    if max_models is not None and max_models < 1:
        raise PeprInputError(f"--max-models must be at least 1, got {max_models}")
    grid = grid_mod.prepare_grid(config, schema_path, cache_dir, validate=True, source=source)
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


# --------------------------------------------------------------------------------------------
# Carbon intensity
# --------------------------------------------------------------------------------------------


def carbon_intensity_g_per_kwh(country_iso_code: str) -> float:
    """Average grid carbon intensity (g CO2eq per kWh) of a country, from CodeCarbon's table.

    ``country_iso_code`` is a 3-letter ISO code (e.g. ``DNK``), the same value CodeCarbon's
    offline tracker takes. Raises :class:`PeprInputError` for a code CodeCarbon does not know.
    """
    from codecarbon.input import DataSource

    code = str(country_iso_code).strip().upper()
    mix = DataSource().get_global_energy_mix_data()
    if code not in mix or "carbon_intensity" not in mix[code]:
        raise PeprInputError(
            f"country {country_iso_code!r} is not in CodeCarbon's energy-mix table; use a 3-letter ISO "
            f"code such as DNK, DEU, USA, GBR, FRA ({len(mix)} countries known)"
        )
    return float(mix[code]["carbon_intensity"])


# --------------------------------------------------------------------------------------------
# Calibration
# --------------------------------------------------------------------------------------------


def calibration_specs(jobs: Iterable[Job]) -> list[CalibrationSpec]:
    """The distinct calibrations a list of jobs needs, in first-seen order (one per cost key,
    with the largest number of classes among its jobs)."""
    classes: dict[tuple, int] = {}
    for job in jobs:
        classes[job.cost_key] = max(classes.get(job.cost_key, 0), job.num_classes)
    return [CalibrationSpec(*key, num_classes=n) for key, n in classes.items()]


def eval_batch_size(batch_size: int) -> int:
    """Batch size of pepr.train's evaluation passes (``max(batch_size, 256)``)."""
    return max(batch_size, 256)


def _describe_failure(exc: BaseException, spec: CalibrationSpec, stage: str) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if len(text) > 300:
        text = text[:297] + "..."
    if "out of memory" in text.lower():
        return f"out of memory while {stage} at {spec.image_size} px, batch {spec.batch_size}: {text}"
    return f"cannot run while {stage} at {spec.image_size} px, batch {spec.batch_size}: {type(exc).__name__}: {text}"


def _random_splits(spec: CalibrationSpec, device, n_train: int, n_eval: int):
    """pepr.train.DeviceSplits of random uint8 images (content does not change the cost)."""
    import torch

    from pepr.train import DeviceSplits

    generator = torch.Generator().manual_seed(0)

    def images(n: int):
        return torch.randint(0, 256, (n, spec.in_chans, spec.image_size, spec.image_size), generator=generator,
                             dtype=torch.uint8).to(device)

    def labels(n: int):
        return torch.randint(0, spec.num_classes, (n,), generator=generator).to(device)

    eval_x = images(n_eval)
    return DeviceSplits(
        train_x=images(n_train), train_y=labels(n_train), val_x=eval_x, val_y=labels(n_eval), test_x=eval_x,
        test_y=labels(n_eval), mean=torch.full((1, spec.in_chans, 1, 1), 0.5, device=device),
        std=torch.full((1, spec.in_chans, 1, 1), 0.25, device=device), scale=1.0 / 255.0,
    )


def calibrate_one(
    spec: CalibrationSpec,
    device_name: str,
    build_model: Callable[[CalibrationSpec], object],
    *,
    batches: int = 5,
    warmup: int = 2,
    min_seconds: float = 1.0,
    lr: float = 1e-3,
    power: Callable[[str], object] | None = None,
) -> Calibration:
    """Calibrate one spec on ``device_name`` (``cpu``, ``cuda``, ``cuda:1``).

    Runs pepr.train's own loops (:func:`pepr.train.train_epoch`, :func:`pepr.train.predict`) with
    its precision policy (bf16 autocast + channels_last on CUDA) on random images: ``warmup``
    untimed training steps and one untimed evaluation batch, then ``batches`` timed training steps
    (repeated until ``min_seconds`` have passed) and ``max(1, batches // 2)`` timed evaluation
    batches of ``spec.eval_batch_size``. ``build_model(spec)`` returns the torch module as
    training builds it (random weights: initialisation does not change the cost). ``power``
    (optional) is a factory ``power(task_name)`` of a context manager that has ``power_w`` and
    ``method`` after exit; it spans the timed batches only. Any exception while building or
    running the model gives a ``failed`` calibration with the reason (the others go on).
    """
    import torch

    from pepr import train

    if batches < 1 or warmup < 0 or min_seconds < 0:
        raise PeprInputError(f"calibration needs batches >= 1, warmup >= 0, min_seconds >= 0 (got {batches}, {warmup}, {min_seconds})")
    device = torch.device(device_name)
    common = dict(asdict(spec), device=device_name)
    started = time.perf_counter()
    stage = "building the model"
    model = optimizer = splits = None
    try:
        model = build_model(spec)
        params = int(sum(p.numel() for p in model.parameters() if p.requires_grad))
        stage = "moving the model to the device"
        cuda = device.type == "cuda"
        precision = train.select_precision(device.type, bool(cuda and torch.cuda.is_bf16_supported()))
        model = model.to(device)
        if precision.channels_last:
            model = model.to(memory_format=torch.channels_last)
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        n_eval_batches = max(1, batches // 2)
        stage = "creating the calibration batches"
        splits = _random_splits(spec, device, batches * spec.batch_size, n_eval_batches * spec.eval_batch_size)
        warm = train.DeviceSplits(**{**vars(splits), "train_x": splits.train_x[: max(warmup, 1) * spec.batch_size],
                                     "train_y": splits.train_y[: max(warmup, 1) * spec.batch_size]})
        generator = torch.Generator().manual_seed(0)
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        stage = "warming up (training step)"
        if warmup:
            train.train_epoch(model, optimizer, warm, spec.batch_size, generator, precision)
        stage = "warming up (evaluation)"
        train.predict(model, splits.val_x[: spec.eval_batch_size], splits, precision, spec.eval_batch_size)
        _synchronize(device)
        # CodeCarbon task names must be unique: specs are, so their fields make the name.
        task = f"{spec.model}/{spec.image_size}px/{spec.batch_size}b/{spec.eval_batch_size}e/{spec.in_chans}c/{spec.num_classes}k"
        power_context = power(task) if power is not None else None
        if power_context is not None:
            power_context.__enter__()
        try:
            stage = "timing training steps"
            steps = 0
            cpu_start = time.process_time()
            loop_start = time.perf_counter()
            while steps == 0 or (time.perf_counter() - loop_start < min_seconds and steps < 20 * batches):
                train.train_epoch(model, optimizer, splits, spec.batch_size, generator, precision)
                _synchronize(device)
                steps += batches
            train_s = (time.perf_counter() - loop_start) / steps
            stage = "timing evaluation"
            eval_start = time.perf_counter()
            train.predict(model, splits.val_x, splits, precision, spec.eval_batch_size)
            _synchronize(device)
            eval_s = (time.perf_counter() - eval_start) / n_eval_batches
            # Share of the threads' time this process got (about 1.0 on a quiet machine; much
            # lower means other work competed for the cores and inflated the timings).
            busy = (time.process_time() - cpu_start) / ((time.perf_counter() - loop_start) * torch.get_num_threads())
        finally:
            if power_context is not None:
                power_context.__exit__(None, None, None)
        peak = torch.cuda.max_memory_allocated(device) / 2**20 if cuda else math.nan
        return Calibration(
            **common,
            status="ok",
            params=params,
            train_s_per_batch=train_s,
            eval_s_per_batch=eval_s,
            train_batches_timed=steps,
            eval_batches_timed=n_eval_batches,
            power_w=power_context.power_w if power_context is not None else math.nan,
            power_method=power_context.method if power_context is not None else "",
            peak_memory_mb=peak,
            cpu_share=busy if not cuda else math.nan,
            calibration_wall_s=time.perf_counter() - started,
        )
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # recorded as the model's failure (status + reason), never swallowed
        return Calibration(
            **common,
            status="failed",
            reason=_describe_failure(exc, spec, stage),
            calibration_wall_s=time.perf_counter() - started,
        )
    finally:
        del model, optimizer, splits
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()


def _synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _MeasuredPower:
    """Mean power over each model's timed batches, from pepr.measure's CodeCarbon meter.

    One :class:`pepr.measure.EnergyMeter` (CodeCarbon's offline tracker, as training uses) is
    shared by all calibrations, one span per model.
    """

    def __init__(self, country: str) -> None:
        from pepr.measure import EnergyMeter

        self.meter = EnergyMeter(country)
        self.meter.start()
        self.method = f"measured by CodeCarbon during calibration ({self.meter.method()})"

    def __call__(self, task_name: str) -> "_PowerSpan":
        return _PowerSpan(self, task_name)

    def stop(self) -> None:
        self.meter.close()


class _PowerSpan:
    """Context measuring the mean power over one span of the shared meter."""

    def __init__(self, owner: _MeasuredPower, name: str) -> None:
        self.owner, self.name = owner, f"calibrate:{name}"
        self.power_w, self.method = math.nan, owner.method

    def __enter__(self) -> "_PowerSpan":
        self.owner.meter.begin(self.name)
        return self

    def __exit__(self, *exc_info) -> None:
        sample = self.owner.meter.end(self.name)
        if sample.duration_s > 0:
            self.power_w = sample.energy_kwh * _JOULES_PER_KWH / sample.duration_s


def calibrate_models(
    specs: Sequence[CalibrationSpec],
    device_name: str,
    build_model: Callable[[CalibrationSpec], object],
    *,
    batches: int = 5,
    warmup: int = 2,
    min_seconds: float = 1.0,
    lr: float = 1e-3,
    power_w: float | None = None,
    country: str = "DNK",
    progress: Callable[[str], None] | None = None,
) -> list[Calibration]:
    """Calibrate every spec on one device; return one :class:`Calibration` per spec, in order.

    Power: ``power_w`` given -> that figure for every model (method "given"); otherwise one
    CodeCarbon offline tracker measures each model's timed batches (method says whether
    CodeCarbon measured it, e.g. NVML/RAPL, or modelled it, e.g. cpu_load x TDP).
    """
    power_source: _MeasuredPower | None = None
    if power_w is None:
        power_source = _MeasuredPower(country)
    results: list[Calibration] = []
    try:
        for index, spec in enumerate(specs, 1):
            result = calibrate_one(
                spec, device_name, build_model, batches=batches, warmup=warmup, min_seconds=min_seconds,
                lr=lr, power=power_source,
            )
            if power_w is not None and result.ok:
                result = _replace(result, power_w=float(power_w), power_method=f"given: {power_w:g} W (--power-w)")
            results.append(result)
            if progress is not None:
                what = (
                    f"{result.train_s_per_batch * 1000:.1f} ms/train batch, {result.eval_s_per_batch * 1000:.1f} ms/eval batch, "
                    f"{result.power_w:.0f} W" + (f", CPU share {result.cpu_share:.0%}" if result.cpu_share == result.cpu_share else "")
                    if result.ok
                    else f"FAILED: {result.reason}"
                )
                progress(f"[{index}/{len(specs)}] {spec.model} @{spec.image_size}px x{spec.in_chans}ch: {what}")
    finally:
        if power_source is not None:
            power_source.stop()
    return results


def _replace(calibration: Calibration, **changes) -> Calibration:
    values = {f.name: getattr(calibration, f.name) for f in fields(calibration)}
    values.update(changes)
    return Calibration(**values)


# --------------------------------------------------------------------------------------------
# Arithmetic
# --------------------------------------------------------------------------------------------


def estimate_jobs(jobs: Sequence[Job], calibrations: Sequence[Calibration], assumptions: EstimateAssumptions) -> pd.DataFrame:
    """One row per job: the job's columns, its calibration, and the estimated cost.

    Per job and epoch: :func:`train_batches` training steps and :func:`eval_batches` evaluation
    batches (val + test after every epoch, as pepr.train does; a partial last batch counts as a
    full one). ``est_time_s = epochs x (train batches x train_s_per_batch + eval batches x
    eval_s_per_batch) + job_overhead_s``; ``est_energy_kwh = est_time_s x power_w x pue / 3.6e6``;
    ``est_co2_kg = est_energy_kwh x carbon intensity / 1000``. Jobs whose model failed
    calibration keep their row with ``status = failed``, the reason, and empty estimates.
    Raises PeprInputError when a job has no calibration.
    """
    by_key = {c.cost_key: c for c in calibrations}
    rows = []
    for job in jobs:
        if job.cost_key not in by_key:
            raise PeprInputError(
                f"no calibration for model {job.model} at {job.image_size} px, batch {job.batch_size}, "
                f"{job.in_chans} channel(s); calibrate every model of the grid first"
            )
        cal = by_key[job.cost_key]
        n_train_batches = train_batches(job.n_train, job.batch_size)
        n_eval_batches = eval_batches(job.n_val, job.n_test, job.eval_batch_size)
        row = asdict(job)
        row.update(
            status=cal.status,
            reason=cal.reason,
            device=cal.device,
            params=cal.params,
            train_batches_per_epoch=n_train_batches,
            eval_batches_per_epoch=n_eval_batches,
            train_s_per_batch=cal.train_s_per_batch,
            eval_s_per_batch=cal.eval_s_per_batch,
            power_w=cal.power_w,
            power_method=cal.power_method,
            peak_memory_mb=cal.peak_memory_mb,
            calibration_cpu_share=cal.cpu_share,
        )
        if cal.ok:
            seconds = job.epochs * (n_train_batches * cal.train_s_per_batch + n_eval_batches * cal.eval_s_per_batch)
            seconds += assumptions.job_overhead_s
            energy = seconds * cal.power_w * assumptions.pue / _JOULES_PER_KWH
            row.update(
                est_time_s=seconds,
                est_device_hours=seconds / _SECONDS_PER_HOUR,
                est_energy_kwh=energy,
                est_co2_kg=energy * assumptions.carbon_intensity_g_per_kwh / 1000.0,
            )
        else:
            row.update(est_time_s=math.nan, est_device_hours=math.nan, est_energy_kwh=math.nan, est_co2_kg=math.nan)
        row.update(country=assumptions.country, carbon_intensity_g_per_kwh=assumptions.carbon_intensity_g_per_kwh,
                   job_overhead_s=assumptions.job_overhead_s, pue=assumptions.pue)
        rows.append(row)
    columns = [f.name for f in fields(Job)]
    return pd.DataFrame(rows, columns=None if rows else columns)


_SUM_COLUMNS = ("est_time_s", "est_device_hours", "est_energy_kwh", "est_co2_kg")


def summarise_by_model(estimate: pd.DataFrame) -> pd.DataFrame:
    """Per model: jobs, status (failure reason kept), calibration figures and summed estimates."""
    if estimate.empty:
        return pd.DataFrame(columns=["model", "status", "jobs", *_SUM_COLUMNS])
    grouped = estimate.groupby("model", sort=False)
    summary = grouped.agg(
        status=("status", "first"),
        reason=("reason", "first"),
        jobs=("model", "size"),
        params=("params", "first"),
        train_s_per_batch=("train_s_per_batch", "mean"),
        eval_s_per_batch=("eval_s_per_batch", "mean"),
        power_w=("power_w", "mean"),
        **{column: (column, lambda s: s.sum(min_count=1)) for column in _SUM_COLUMNS},
    ).reset_index()
    # A model failing at one input shape but not another is reported as partly failed.
    mixed = grouped["status"].nunique() > 1
    summary.loc[summary["model"].isin(mixed[mixed].index), "status"] = "partly failed"
    return summary


def totals(estimate: pd.DataFrame) -> dict[str, float]:
    """Grid totals over jobs that calibrated (failed jobs counted separately)."""
    ok = estimate[estimate["status"] == "ok"] if not estimate.empty else estimate
    result = {column: float(ok[column].sum()) if not ok.empty else 0.0 for column in _SUM_COLUMNS}
    result["jobs"] = int(len(estimate))
    result["jobs_estimated"] = int(len(ok))
    result["jobs_failed"] = int(len(estimate) - len(ok))
    result["models"] = int(estimate["model"].nunique()) if not estimate.empty else 0
    result["models_failed"] = (
        int(estimate.loc[estimate["status"] != "ok", "model"].nunique()) if not estimate.empty else 0
    )
    return result


def _num(value: float) -> str:
    """A figure with 3 significant digits (thousands separated), for the printed report."""
    if value != value:
        return "n/a"
    if value == 0:
        return "0"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def format_report(
    estimate: pd.DataFrame,
    assumptions: EstimateAssumptions,
    *,
    device_label: str,
    grid_models: int | None = None,
    grid_jobs: int | None = None,
    notes: Sequence[str] = (),
) -> str:
    """Human-readable estimate: per-model table, totals, and every assumption behind them.

    ``grid_models``/``grid_jobs``: size of the whole grid when only a subset of its models was
    calibrated; the report then says that the total covers the subset only, and adds a
    clearly labelled per-job extrapolation to the whole grid.
    """
    summary = summarise_by_model(estimate)
    total = totals(estimate)
    hours_label = "GPU-h" if device_label.startswith("cuda") else "device-h"
    lines = [f"pepr estimate: {total['jobs']} jobs, {total['models']} models, calibrated on {device_label}", ""]
    header = f"{'model':<34} {'jobs':>5} {'s/train batch':>13} {'power W':>8} {hours_label:>10} {'kWh':>10} {'kg CO2':>9}"
    lines += [header, "-" * len(header)]
    for row in summary.itertuples(index=False):
        if row.status == "failed":
            lines.append(f"{row.model:<34} {row.jobs:>5}  FAILED: {row.reason}")
            continue
        flag = " (partly failed)" if row.status == "partly failed" else ""
        lines.append(
            f"{row.model:<34} {row.jobs:>5} {row.train_s_per_batch:>13.4f} {row.power_w:>8.1f} "
            f"{_num(row.est_device_hours):>10} {_num(row.est_energy_kwh):>10} {_num(row.est_co2_kg):>9}{flag}"
        )
    lines.append("-" * len(header))
    lines.append(
        f"{'TOTAL (' + str(total['jobs_estimated']) + ' jobs estimated)':<34} {total['jobs']:>5} {'':>13} {'':>8} "
        f"{_num(total['est_device_hours']):>10} {_num(total['est_energy_kwh']):>10} {_num(total['est_co2_kg']):>9}"
    )
    if total["jobs_failed"]:
        lines.append(
            f"NOT INCLUDED: {total['jobs_failed']} jobs of {total['models_failed']} model(s) that failed calibration "
            "(they cannot run at this size on this device; the sweep records them as failed runs)."
        )
    if grid_models is not None and grid_jobs is not None and grid_jobs > total["jobs"]:
        lines.append(
            f"SUBSET: the total covers {total['models']} of the grid's {grid_models} models "
            f"({total['jobs']} of {grid_jobs} jobs); the other models were not calibrated."
        )
        if total["jobs_estimated"]:
            scale = grid_jobs / total["jobs_estimated"] * (1 - total["jobs_failed"] / max(total["jobs"], 1))
            lines.append(
                f"  Rough extrapolation (assumes the uncalibrated models cost, per job, the mean of the calibrated "
                f"ones and fail as often): ~{_num(total['est_device_hours'] * scale)} {hours_label}, "
                f"~{_num(total['est_energy_kwh'] * scale)} kWh, ~{_num(total['est_co2_kg'] * scale)} kg CO2 for the whole grid."
            )
    shares = pd.to_numeric(estimate.get("calibration_cpu_share", pd.Series(dtype=float)), errors="coerce").dropna()
    if len(shares) and shares.min() < BUSY_CPU_SHARE:
        lines.append(
            f"WARNING: the CPU was busy during calibration (this process got {shares.min():.0%}-{shares.max():.0%} of its "
            "threads' time; about 100% on a quiet machine), so the times above are inflated. Re-run on a quiet machine."
        )
    methods = sorted({m for m in estimate.get("power_method", pd.Series(dtype=str)).dropna() if m})
    lines += ["", "Assumptions:"]
    lines.append(
        "  time per job = epochs x (ceil(n_train / batch) x s per training step + (ceil(n_val / eval batch) + "
        "ceil(n_test / eval batch)) x s per eval batch) + job overhead, as pepr.train runs a job (val and test "
        "evaluated after every epoch, eval batch = max(batch, 256)); steps timed with pepr.train's own loops "
        "(same precision and memory layout) after warm-up, on random images at the configured image size and batch size."
    )
    lines.append(
        f"  job overhead: {assumptions.job_overhead_s:g} s per job (process start, imports, data loading; "
        "set with --job-overhead-s)."
    )
    lines.append(f"  power: {'; '.join(methods) if methods else 'n/a'}; PUE {assumptions.pue:g}.")
    lines.append(
        f"  CO2: {assumptions.carbon_intensity_g_per_kwh:g} g/kWh, the average grid intensity of {assumptions.country} "
        "in CodeCarbon's energy-mix table."
    )
    lines.append(f"  device: timings are for {device_label}; another GPU/CPU type needs its own calibration.")
    lines += [f"  {note}" for note in notes]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# The whole estimate (CLI and workflow rule)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EstimateSettings:
    """Options of one estimate; ``None`` means "as the workflow config says".

    ``device``: auto, cpu, cuda, cuda:N. ``threads``: torch threads on CPU (the config's
    ``resources.train.cpus`` by default, as every training job uses). ``power_w``: a given power
    instead of CodeCarbon's measurement. See :func:`calibrate_one` for batches/warmup/min_seconds.
    """

    models: tuple[str, ...] | None = None
    max_models: int | None = None
    device: str | None = None
    batches: int = 5
    warmup: int = 2
    min_seconds: float = 1.0
    threads: int | None = None
    power_w: float | None = None
    country: str | None = None
    job_overhead_s: float = 0.0
    pue: float = 1.0

    def __post_init__(self) -> None:
        if self.batches < 1 or self.warmup < 0 or not (self.min_seconds >= 0):
            raise PeprInputError("batches must be >= 1, warmup >= 0 and min_seconds >= 0")
        if self.threads is not None and self.threads < 1:
            raise PeprInputError(f"threads must be >= 1, got {self.threads}")
        if self.power_w is not None and not (self.power_w > 0 and math.isfinite(self.power_w)):
            raise PeprInputError(f"power must be a positive number of watts, got {self.power_w}")
        if self.max_models is not None and self.max_models < 1:
            raise PeprInputError(f"max_models must be at least 1, got {self.max_models}")
        if self.device is not None:
            from pepr.train import parse_device

            parse_device(self.device)


@dataclass
class EstimateResult:
    """Per-job table, per-model summary and the printed report of one estimate."""

    table: pd.DataFrame
    by_model: pd.DataFrame
    report: str
    calibrations: list[Calibration]


def device_label(device: str, threads: int | None) -> str:
    """A readable name of the calibration device (GPU model, or CPU model and threads)."""
    import platform

    import torch

    if device.startswith("cuda"):
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass  # not Linux: platform's answer is used
    return f"cpu ({cpu}, {threads} thread(s))"


def run_estimate(
    config: dict,
    schema_path: str | Path,
    settings: EstimateSettings,
    *,
    source: str = "config",
    cache_dir: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
    build_model: Callable[[CalibrationSpec], object] | None = None,
) -> EstimateResult:
    """Validate the config, calibrate its models on this device, estimate every job.

    Everything that can be wrong with the input (config, country, device, model subset) is
    raised as PeprInputError before the first calibration starts.
    """
    grid_jobs = jobs_from_config(
        config, schema_path, source=source, models=settings.models, max_models=settings.max_models, cache_dir=cache_dir
    )
    config = grid_jobs.config
    country = (settings.country or config["country"]).strip().upper()
    assumptions = EstimateAssumptions(
        country=country, carbon_intensity_g_per_kwh=carbon_intensity_g_per_kwh(country),
        job_overhead_s=settings.job_overhead_s, pue=settings.pue,
    )
    import torch

    from pepr.train import resolve_device

    cuda = torch.cuda.is_available()
    device = resolve_device(settings.device or config["device"], cuda, torch.cuda.device_count() if cuda else 0)
    if device == "mps":
        raise PeprInputError("calibration on 'mps' is not supported; use cpu (or a CUDA machine)")
    threads = None
    if device == "cpu":
        threads = settings.threads or int(config["resources"]["train"]["cpus"])
        torch.set_num_threads(threads)
    specs = calibration_specs(grid_jobs.jobs)
    if progress is not None:
        progress(f"calibrating {len(specs)} model/input combination(s) on {device} ...")
    calibrations = calibrate_models(
        specs, device, build_model or build_training_model, batches=settings.batches, warmup=settings.warmup,
        min_seconds=settings.min_seconds, lr=float(config["lr"]), power_w=settings.power_w, country=country,
        progress=progress,
    )
    table = estimate_jobs(grid_jobs.jobs, calibrations, assumptions)
    notes = list(grid_jobs.notes)
    if threads is not None:
        job_threads = int(config["resources"]["train"]["cpus"])
        if threads == job_threads:
            notes.append(f"CPU calibration used {threads} torch thread(s), as each training job does (resources.train.cpus).")
        else:
            notes.append(
                f"CPU calibration used {threads} torch thread(s) (--threads), but the training jobs are configured "
                f"with {job_threads} (resources.train.cpus): their times will differ."
            )
    subset = len({job.model for job in grid_jobs.jobs}) < len(grid_jobs.grid_models)
    report = format_report(
        table, assumptions, device_label=device_label(device, threads),
        grid_models=len(grid_jobs.grid_models) if subset else None,
        grid_jobs=grid_jobs.grid_jobs if subset else None, notes=notes,
    )
    return EstimateResult(table=table, by_model=summarise_by_model(table), report=report, calibrations=calibrations)


def build_training_model(spec: CalibrationSpec):
    """Build a model exactly as pepr.train does (:func:`pepr.models.create_model`), randomly initialised."""
    from pepr.models import create_model

    model, _ = create_model(spec.model, "scratch", spec.num_classes, spec.in_chans, spec.image_size)
    return model


# --------------------------------------------------------------------------------------------
# Estimate vs measurement
# --------------------------------------------------------------------------------------------

#: (estimate column, measured runs.csv column, label)
COMPARED = (
    ("est_time_s", "train_time_s", "time_s"),
    ("est_energy_kwh", "energy_kwh", "energy_kwh"),
    ("est_co2_kg", "co2_kg", "co2_kg"),
)


def _normalise_keys(df: pd.DataFrame, where: str) -> pd.DataFrame:
    missing = [k for k in JOB_KEYS if k not in df.columns]
    if missing:
        raise PeprInputError(f"{where} lacks the column(s) {', '.join(missing)} that identify a run ({', '.join(JOB_KEYS)})")
    out = df.copy()
    for key in ("dataset", "init", "model"):
        out[key] = out[key].astype(str)
    try:
        out["fraction"] = pd.to_numeric(out["fraction"]).astype(float).round(9)
        out["seed"] = pd.to_numeric(out["seed"]).astype(int)
    except (ValueError, TypeError) as exc:
        raise PeprInputError(f"{where}: 'fraction' and 'seed' must be numbers ({exc})") from None
    return out


def compare_estimate(estimate: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Per model: estimated vs measured time, energy and CO2 over the runs both tables have.

    Only successful runs that the estimate covered (and estimated) are compared, matched on
    ``dataset, init, fraction, model, seed``. Columns: ``model, runs_compared, est_X,
    measured_X, ratio_X`` (estimate / measurement) for X in time_s, energy_kwh, co2_kg, plus
    ``est_status`` and ``runs_not_estimated`` (measured runs without an estimate).
    """
    est = _normalise_keys(estimate, "the estimate table")
    measured = _normalise_keys(runs, "the runs table")
    needed = [m for _, m, _ in COMPARED] + ["status"]
    missing = [c for c in needed if c not in measured.columns]
    if missing:
        raise PeprInputError(f"the runs table lacks the measured column(s) {', '.join(missing)}")
    measured = measured[measured["status"] == "ok"]
    est_ok = est[est["status"] == "ok"]
    merged = measured.merge(
        est_ok[list(JOB_KEYS) + [e for e, _, _ in COMPARED]], on=list(JOB_KEYS), how="left", validate="one_to_one"
    )
    merged["_estimated"] = merged["est_time_s"].notna()
    rows = []
    models = list(dict.fromkeys(list(est["model"]) + list(measured["model"])))
    for model in models:
        part = merged[merged["model"] == model]
        matched = part[part["_estimated"]]
        est_status = est.loc[est["model"] == model, "status"]
        row = {
            "model": model,
            "est_status": est_status.iloc[0] if len(est_status) else "not estimated",
            "runs_compared": int(len(matched)),
            "runs_not_estimated": int(len(part) - len(matched)),
        }
        for est_col, meas_col, label in COMPARED:
            est_sum = float(matched[est_col].sum()) if len(matched) else math.nan
            meas_sum = float(pd.to_numeric(matched[meas_col]).sum()) if len(matched) else math.nan
            row[f"est_{label}"] = est_sum
            row[f"measured_{label}"] = meas_sum
            row[f"ratio_{label}"] = est_sum / meas_sum if len(matched) and meas_sum > 0 else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def plot_comparison(comparison: pd.DataFrame, path: Path) -> None:
    """Scatter of estimated vs measured training time per model (log-log, y = x line)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = comparison[(comparison["runs_compared"] > 0)]
    fig, ax = plt.subplots(figsize=(5.5, 5))
    if data.empty:
        ax.text(0.5, 0.5, "no run has both an estimate and a measurement", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    else:
        # hours for real sweeps, seconds for small ones (so the tick labels stay readable)
        unit, scale = ("h", 3600.0) if max(data["measured_time_s"].max(), data["est_time_s"].max()) >= 3600 else ("s", 1.0)
        x = data["measured_time_s"] / scale
        y = data["est_time_s"] / scale
        ax.scatter(x, y, s=18)
        for model, xi, yi in zip(data["model"], x, y):
            ax.annotate(model, (xi, yi), fontsize=6, alpha=0.7, xytext=(2, 2), textcoords="offset points")
        low = float(min(x.min(), y.min())) * 0.8
        high = float(max(x.max(), y.max())) * 1.25
        ax.plot([low, high], [low, high], color="grey", linestyle="--", linewidth=1, label="estimate = measured")
        if low > 0:
            ax.set_xscale("log")
            ax.set_yscale("log")
        ax.set_xlabel(f"measured training time ({unit}, summed over the model's runs)")
        ax.set_ylabel(f"estimated time ({unit}, pepr estimate)")
        ax.set_title("pepr estimate vs measurement, per model")
        ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def compare_files(
    estimate_path: str | Path, runs_path: str | Path, output: str | Path, figure: str | Path | None = None
) -> pd.DataFrame:
    """Read ``results/estimate.csv`` and ``results/runs.csv``, write the per-model comparison
    (:func:`compare_estimate`) to ``output`` and, when given, its figure; return the table."""
    from pepr.tableio import read_table, table_format, write_table

    table_format(output)
    comparison = compare_estimate(read_table(estimate_path), read_table(runs_path))
    write_table(comparison, output)
    if figure is not None:
        plot_comparison(comparison, Path(figure))
    return comparison
