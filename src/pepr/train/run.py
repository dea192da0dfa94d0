"""Train, evaluate and measure one timm model on one dataset: one cell of a PePR grid.

``run_training(TrainConfig(...))`` does the whole job and writes ``out_dir/metrics.json`` and
``out_dir/history.csv`` (the contract in :mod:`pepr.results.runs` and ARCHITECTURE.md):

1. a transfer cell whose pretraining failed (``pretrain_metrics``) is recorded as failed at once;
   otherwise everything cheap is validated (:func:`validate_train_config`) and the run folder is
   locked (:func:`pepr.results.runs.run_lock`: one training per folder);
2. the data are loaded, the stratified train fraction taken and all splits moved to the device
   once (:mod:`pepr.train.loop`); the model is built (:mod:`pepr.train.models`) and probed with one
   forward/backward pass: a model that cannot run on this input is a ``"failed"`` record;
3. Adam + cross-entropy epochs, evaluating val and the full test set after each, measuring time,
   energy (a CodeCarbon task per epoch, CPU/RAM charged at the job's share of the node), CO2
   (country average or a time series) and the training's working-set memory (:mod:`pepr.train.measure`);
4. after each epoch ``out_dir/resume.pt`` (:mod:`pepr.train.resume`) lets a re-run continue from the last
   finished epoch; at the end the result is kept in ``previous/<UTC time>/``
   (:func:`pepr.results.runs.archive_result`), the optional model file is saved, and history.csv then
   metrics.json (the finished marker) are placed in ``out_dir``.

Time and energy cover the same span: every epoch's training loop plus its val/test evaluation
(``train_loop_time_s`` and ``eval_time_s`` split it). Final performance is the last epoch's, as
in the PePR paper; the best-val epoch is recorded too.

torch/timm/codecarbon are imported inside functions: ``pepr.cli.train`` imports this module only
when a training actually runs. :class:`pepr.train.settings.TrainConfig` (the settings) and the device
loop (:mod:`pepr.train.loop`), metrics (:mod:`pepr.train.metrics`) and device choice
(:mod:`pepr.train.devices`) are imported from their own modules.
"""

from __future__ import annotations

import gc
import json
import math
import os
import platform
import random
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pepr.datasets import core as data_module
from pepr.datasets.registry import kind_of
from pepr.errors import PeprInputError
from pepr.results import runs
from pepr.results.runs import RESULT_KEYS, RESUME_FILE, failed_record, json_safe
from pepr.train import adaptive_run
from pepr.train.devices import resolve_device
from pepr.train.loop import (
    DeviceSplits,
    Precision,
    eval_batch_size,
    evaluate,
    normalise,
    predict,
    select_precision,
    sync,
    to_device,
    train_epoch,
)
from pepr.train.loop import autocast as _autocast
from pepr.train.loop import loss as loss_function
from pepr.train.resume import RunState, load_resume, remove_stale_temp_files, save_resume
from pepr.train.settings import TrainConfig, train_fields

if TYPE_CHECKING:  # pragma: no cover
    import torch


# --------------------------------------------------------------------------------------------
# Validation and device selection (cheap, no torch needed for most of it)
# --------------------------------------------------------------------------------------------


def validate_train_config(cfg: TrainConfig) -> None:
    """Raise :class:`PeprInputError` listing every problem with ``cfg`` found without training.

    The checks are :func:`pepr.train.checks.training_problems`, the same ones ``snakemake -n`` runs on
    every job of a sweep: numbers and ranges, device, country, init and checkpoint file, braces
    in paths, the dataset (a MedMNIST file may be downloaded later, so its absence is fine), the
    ``--save-model`` path, the carbon-intensity file, and the timm model name and pretrained tag
    (against timm's catalogue: imports timm, ~3 s).
    """
    from pepr.train.checks import model_catalogue, training_problems
    from pepr.train.imports import import_timm

    import_timm()  # before the catalogue's `import timm`: without torchvision's model zoo
    settings = {item.name: getattr(cfg, item.name) for item in train_fields()}
    named = isinstance(cfg.model, str) and bool(cfg.model.strip())
    catalogue = model_catalogue(cfg.model) if named else None  # no name: nothing to look up
    # folder:/csv: images are checked by converting them (one decode of every file, not two)
    kind = kind_of(cfg.dataset)
    problems = training_problems(settings, catalogue, check_data=not kind.converted, check_checkpoint=True)
    problems.extend(_machine_problems(cfg))  # threads bounded before images are converted with them
    if kind.converted and not any(problem.startswith("--threads") for problem in problems):
        problems += kind.prepare_problems(cfg.dataset, cfg.data_dir, workers=cfg.threads)
    if problems and any("\n" in problem for problem in problems):  # file lists (folder:/csv:): one per line
        raise PeprInputError("invalid training configuration:\n" + "\n".join(f"  - {problem}" for problem in problems))
    if problems:
        raise PeprInputError("invalid training configuration: " + "; ".join(problems))


def _machine_problems(cfg: TrainConfig) -> list[str]:
    """What this machine cannot do for ``cfg``: more threads than it has cores (5000 threads hung
    torch, 100000 crashed it), an output folder or model file it cannot write or has no room for.
    Checked in ``pepr train`` only: while planning, the jobs' machines are not known."""
    from pepr.results.outputs import MIN_FREE_BYTES, free_space_problem, output_dir_problems

    problems = []
    cores = os.cpu_count() or 1
    if isinstance(cfg.threads, int) and not isinstance(cfg.threads, bool) and cfg.threads > cores:
        problems.append(
            f"--threads {cfg.threads} is more than the {cores} CPU cores of this machine; use at most {cores} (or leave it out: all cores this job may use)"
        )
    out_problems = output_dir_problems(cfg.out_dir, "--out")
    problems.extend(out_problems)
    if not out_problems:
        space = free_space_problem(cfg.out_dir, MIN_FREE_BYTES, "--out", "the run's files")
        if space:
            problems.append(space)
    return problems


def _check_room(cfg: TrainConfig, params: int | None) -> None:
    """Free space for resume.pt (weights + Adam's two moments, fp32) and the --save-model file."""
    from pepr.results.outputs import MIN_FREE_BYTES, free_space_problem

    weights = 4 * int(params or 0)
    problems = [free_space_problem(cfg.out_dir, MIN_FREE_BYTES + 2 * 3 * weights, "--out", "resume.pt and the results")]
    if cfg.save_model is not None:
        problems.append(
            free_space_problem(cfg.save_model.parent, MIN_FREE_BYTES + weights, "--save-model", "the model file")
        )
    found = [problem for problem in problems if problem]
    if found:
        raise PeprInputError("; ".join(found))


def default_threads() -> int:
    """Cores this process may use (respects SLURM/cgroup CPU affinity, unlike os.cpu_count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


def _stderr_log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for package in ("torch", "timm", "codecarbon", "numpy", "pepr-bench"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


def base_record(cfg: TrainConfig) -> dict[str, Any]:
    """The cell identification and resolved settings shared by ok and failed records."""
    return {
        "status": "ok",
        "reason": "",
        "model": cfg.model,
        "dataset": cfg.dataset,
        "dataset_name": data_module.dataset_name(cfg.dataset),
        "init": cfg.init,
        "fraction": cfg.fraction,
        "seed": cfg.seed,
        "epochs": cfg.epochs,
        "batch_size": cfg.batch_size,
        "lr": cfg.lr,
        "country": cfg.country,
        "host": socket.gethostname(),
    }


def run_training(cfg: TrainConfig, log: Callable[[str], None] = _stderr_log) -> dict[str, Any]:
    """Train, evaluate and measure one cell; write metrics.json + history.csv; return the metrics.

    Raises :class:`PeprInputError` (before any training) for bad input, or when another process
    trains the same ``out_dir`` (:func:`pepr.results.runs.run_lock`). A model that cannot run on this
    input (cannot be built for the size, fails the probe pass, or runs out of GPU memory) gives a
    record with ``status == "failed"`` and the reason; so does a transfer cell whose pretraining
    (``cfg.pretrain_metrics``) failed. Other errors propagate.
    """
    from pepr.train import measure

    # before torch's import and the data: the allocator then places every block of the run alike
    unpinned = measure.pin_allocator()
    if unpinned:
        log(f"pepr train: {unpinned}; the CPU working-set memory may vary a little between runs of one cell")
    failed_source = _failed_pretraining(cfg)
    if failed_source is None:
        validate_train_config(cfg)  # before the lock: bad input leaves no run folder behind
    runs.refuse_links(cfg.out_dir, [cfg.save_model] if cfg.save_model is not None else [])
    with runs.run_lock(cfg.out_dir):
        if failed_source is not None:
            return _fail(cfg, base_record(cfg), failed_source, log)
        identity = training_identity(cfg)
        if cfg.stop_after is not None:
            reached = adaptive_run.rung_from_finished(cfg.out_dir, cfg.stop_after)
            if reached is not None:  # finished before (a full grid, a higher keep): the rung is in its history
                log(
                    f"pepr train: {cfg.out_dir} has finished; its rung-{cfg.stop_after} record is taken from its history"
                )
                return reached
        if not cfg.retrain:
            restored = _restore_finished(cfg, identity, log)
            if restored is not None:
                return restored
        if cfg.stopped_at is not None:  # adaptive sweeps: stopped at a rung; no training
            return adaptive_run.record_stopped(cfg, _versions(), log)
        try:
            setup = _Setup.build(cfg, log)
        except (MemoryError, RuntimeError) as exc:  # the data do not fit this machine or device
            reason = out_of_memory_reason(exc)
            if reason is None:
                raise
            return _fail(cfg, base_record(cfg), f"out of memory loading {cfg.dataset} onto the device ({reason})", log)
        record = setup.record
        if identity.get("data_sha256") is None:  # a MedMNIST file downloaded just now
            identity = training_identity(cfg)
        record["training_identity"] = identity
        try:
            model = setup.build_model(cfg)
        except PeprInputError:  # the user's input (e.g. weights unavailable offline): exit 2, not a "failed" run
            setup.energy.close()
            raise
        except _CannotRun as exc:
            setup.energy.close()
            return _fail(cfg, record, str(exc), log)
        _check_room(cfg, record.get("params"))  # before the first epoch: resume.pt and --save-model sizes are known now
        try:
            state, model = _train(cfg, setup, model, log, identity)
            if cfg.stop_after is not None:  # adaptive sweeps: a rung reached, the checkpoint kept
                return adaptive_run.write_rung(cfg.out_dir, cfg.stop_after, record, state.history, state.peak, log)
            results, predictions = _results(cfg, setup, model, state)
        except _CannotRun as exc:
            if exc.epoch is not None:
                record["failed_epoch"] = exc.epoch
            return _fail(cfg, record, str(exc), log)
        except (MemoryError, RuntimeError) as exc:  # out of memory after training (the final timed pass)
            reason = out_of_memory_reason(exc)
            if reason is None:
                raise
            return _fail(cfg, record, f"out of memory after training {cfg.model} ({reason})", log)
        record.update(results)
        record["config"] = cfg.as_dict()
        record["versions"] = _versions()
        if cfg.save_model is not None:
            record["saved_model"] = str(cfg.save_model)
        # The results into previous/ first (kept even if saving the weights fails), then the
        # weights, then the run folder's files, metrics.json last: it marks the run finished, so
        # a kill at any point never leaves a finished pretraining without its model.pt (the
        # transfer cells' planning refuses that state as a lost checkpoint).
        archive = runs.archive_result(cfg.out_dir, record, state.history, predictions)
        if cfg.save_model is not None:
            from pepr.train import models

            models.save_model(model, cfg.save_model)
            runs.keep_in_archive(archive, cfg.save_model)
        runs.mark_finished(archive, cfg.out_dir)
        (cfg.out_dir / RESUME_FILE).unlink(missing_ok=True)
        log(
            f"done: test accuracy {record['test_accuracy']:.4f}, balanced {record['test_balanced_accuracy']:.4f}, "
            f"AUC {record['test_auc']:.4f}; {record['train_time_s']:.1f} s, {record['energy_kwh']:.3g} kWh "
            f"({record['energy_method']}), {record['co2_kg']:.3g} kg CO2, working set {record['peak_memory_mb']:.0f} MiB"
        )
        from pepr.train.measure import contention_warning

        contended = contention_warning(record.get("cpu_share"), setup.threads)
        if contended:
            log(contended)
        return json_safe(record)


#: Settings that make two trainings the same training (with the data's and checkpoint's content):
#: what a restored result and a resumed segment must share. Not country/carbon_intensity (CO2 is
#: derived from the measured energy), not data_dir (where the data is), not threads or paths.
IDENTITY_SETTINGS: tuple[str, ...] = (
    "model",
    "init",
    "fraction",
    "epochs",
    "seed",
    "image_size",
    "batch_size",
    "lr",
    "precision",
    "device",
)


def training_identity(cfg: TrainConfig) -> dict[str, Any]:
    """What makes this training this training: :data:`IDENTITY_SETTINGS`, the dataset's declared
    name and the SHA-256 of its file (None for synthetic data, or a file not there yet), and for
    ``--init checkpoint:PATH`` the checkpoint file's SHA-256 instead of its path."""
    from pepr.files import file_sha256

    identity: dict[str, Any] = {key: getattr(cfg, key) for key in IDENTITY_SETTINGS}
    identity["dataset"] = data_module.dataset_name(cfg.dataset)
    parsed = data_module.parse_dataset_spec(cfg.dataset)
    path = data_module.dataset_file(parsed, cfg.data_dir)
    identity["data_sha256"] = file_sha256(path) if path is not None else None
    if isinstance(cfg.init, str) and cfg.init.startswith("checkpoint:"):
        identity["init"] = "checkpoint"
        identity["init_sha256"] = file_sha256(cfg.init[len("checkpoint:") :])
    return json_safe(identity)


def _restore_finished(cfg: TrainConfig, identity: dict[str, Any], log: Callable[[str], None]) -> dict[str, Any] | None:
    """Put back a finished result of this very training kept in ``previous/`` (the kill window:
    Snakemake deleted the outputs of a job that had finished; a requeued or forced job); None
    when there is none."""
    weights = cfg.save_model
    archive = runs.find_finished(cfg.out_dir, identity, weights.name if weights is not None else None)
    if archive is None:
        return None
    metrics = runs.restore_finished(archive, cfg.out_dir, weights)
    (cfg.out_dir / RESUME_FILE).unlink(missing_ok=True)
    log(
        f"pepr train: restored the finished result of this training (same settings and data) from {archive}/, "
        "not trained again; pass --retrain (workflow: --config retrain=true) to train it again"
    )
    return metrics


class _CannotRun(Exception):
    """The model cannot run on this input (recorded as a failed run, the sweep goes on)."""

    def __init__(self, message: str, epoch: int | None = None) -> None:
        super().__init__(message)
        self.epoch = epoch


#: Texts of the RuntimeErrors PyTorch raises when an allocation fails (CPU and accelerators).
_OOM_TEXTS = ("can't allocate memory", "out of memory", "defaultcpuallocator", "failed to allocate")


def out_of_memory_reason(exc: BaseException) -> str | None:
    """One line describing ``exc`` when it is an out-of-memory failure (torch.OutOfMemoryError,
    MemoryError, or a RuntimeError from an allocator), else None: such a run is a "failed"
    record (the job cannot fit this machine), not a crash that every rerun repeats."""
    text = " ".join(str(exc).split())
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__
    if isinstance(exc, RuntimeError) and any(marker in text.lower() for marker in _OOM_TEXTS):
        return f"{type(exc).__name__}: {text[:300]}"
    return None


def _failed_pretraining(cfg: TrainConfig) -> str | None:
    """The failure reason when ``cfg.pretrain_metrics`` says the transfer source failed, else None."""
    path = cfg.pretrain_metrics
    if path is None:
        return None
    from pepr.files import file_kind_problem

    kind = file_kind_problem(path, "--pretrain-metrics")
    if kind and not kind.endswith("not found"):  # a FIFO would block the read
        raise PeprInputError(kind)
    try:
        source = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        raise PeprInputError(
            f"--pretrain-metrics {path} cannot be read as JSON ({type(exc).__name__}); run the pretraining first"
        ) from None
    if not isinstance(source, dict) or "status" not in source:
        raise PeprInputError(f"--pretrain-metrics {path} is not a pepr metrics.json (no status)")
    if source["status"] == "ok":
        return None
    return f"pretraining on the transfer source failed ({source.get('reason') or 'no reason recorded'}); see {path}"


@dataclass
class _Setup:
    """What a run resolves before the model exists: device, numerics, data on the device, record."""

    device: Any
    precision: Precision
    threads: int
    image_size: int
    splits: DeviceSplits
    dataset: Any
    record: dict[str, Any]
    carbon: Any  # measure.IntensitySeries or None
    share: Any  # measure.NodeShare: the job's part of the node's CPU/RAM energy
    memory: Any = None  # measure.WorkingSetMeter, started once the data are on the device
    energy: Any = None  # measure.EnergyMeter, started before the memory baseline

    @classmethod
    def build(cls, cfg: TrainConfig, log: Callable[[str], None]) -> _Setup:
        """Seed, pick device and precision, load the data and move them to the device."""
        import torch

        from pepr.train import measure

        cfg.out_dir.mkdir(parents=True, exist_ok=True)
        threads = cfg.threads or default_threads()
        torch.set_num_threads(threads)
        _seed_everything(cfg.seed)
        cuda = torch.cuda.is_available()
        mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
        device = torch.device(resolve_device(cfg.device, cuda, torch.cuda.device_count() if cuda else 0, mps))
        bf16 = bool(cuda and device.type == "cuda" and torch.cuda.is_bf16_supported())
        precision = select_precision(device.type, bf16, cfg.precision)
        if cfg.precision == "bf16" and precision.autocast_dtype is None:
            log(f"--precision bf16: {device} has no bf16 autocast here; training in fp32 (recorded)")
        carbon = measure.read_carbon_intensity(cfg.carbon_intensity) if cfg.carbon_intensity else None
        if carbon is not None:
            carbon.at(time.time())  # a series that does not cover now fails before training, not after epoch 1
        dataset = data_module.load_dataset(cfg.dataset, cfg.data_dir, allow_download=True, workers=threads, log=log)
        height, width = dataset.image_size
        if cfg.image_size is None and height != width:
            raise PeprInputError(
                f"dataset {cfg.dataset!r} has {height}x{width} images; pass --image-size to train on square images"
            )
        image_size = cfg.image_size or height
        dataset = dataset.with_train_subset(data_module.stratified_subset(dataset.train_y, cfg.fraction, cfg.seed))
        record = base_record(cfg) | {
            "image_size": image_size,
            "device": str(device),
            "threads": threads,
            "n_train": int(len(dataset.train_y)),
            "n_val": int(len(dataset.val_y)),
            "n_test": int(len(dataset.test_y)),
            "num_classes": dataset.num_classes,
            "channels": dataset.channels,
            "precision": "bf16" if precision.autocast_dtype == "bfloat16" else "fp32",
            "dataset_description": dataset.description,
            "task": "multi-label" if dataset.multi_label else "single-label",
            # class names in label order (runs.csv and the report show them); folder/csv datasets
            # also record their counts per split, split rule and converted file (dataset_info)
            "class_names": "; ".join(dataset.class_names),
            **({"dataset_info": dataset.details} if dataset.details else {}),
            # identical images across splits/classes (a scalar, so runs.csv carries it: the report's data_leak check)
            **(
                {"duplicate_images": dataset.details["duplicates"]["count"]}
                if (dataset.details.get("duplicates") or {}).get("count")
                else {}
            ),
        }
        log(
            f"pepr train: {cfg.model} on {dataset.description}, init {cfg.init}, fraction {cfg.fraction} "
            f"({record['n_train']} train images), {image_size}px, {cfg.epochs} epochs, device {device}, "
            f"{threads} threads, {record['precision']}"
        )
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed batch shapes: let cuDNN pick the fastest kernels
            record["device_name"] = torch.cuda.get_device_name(device)
        splits = to_device(dataset, device, image_size)
        setup = cls(device, precision, threads, image_size, splits, dataset, record, carbon, measure.this_node_share())
        # one-off imports of the measured windows (CodeCarbon, the FLOP counter, the optimizer's
        # torch._dynamo) before the memory baseline and the first epoch's timer
        measure.import_dependencies()
        from pepr.train import models  # noqa: F401 - build_model's import, outside the memory window too

        # the imported libraries' objects live as long as the process: set aside from the garbage
        # collector, the memory meter's collections (baseline, each epoch) scan only the run's own
        gc.freeze()

        # CodeCarbon's hardware probing, lazy imports and threads: before the memory baseline
        setup.energy = measure.EnergyMeter(
            cfg.country, gpu_ids=measure.own_gpu_ids(device.type, device.index, os.environ)
        )
        setup.energy.start()
        setup.memory = measure.WorkingSetMeter(device)  # baseline: data resident, no model yet
        return setup

    def build_model(self, cfg: TrainConfig) -> Any:
        """Create, place and probe the model; record its parameters, init and FLOPs."""
        import torch

        from pepr.train import measure, models

        channels, size = self.dataset.channels, self.image_size
        try:
            model, init_description = models.create_model(cfg.model, cfg.init, self.dataset.num_classes, channels, size)
            self.record["params"] = models.count_trainable_parameters(model)
            model = model.to(self.device)
            if self.precision.channels_last:
                model = model.to(memory_format=torch.channels_last)
            _probe(model, self.splits, self.precision, cfg.batch_size)
        except PeprInputError:
            raise
        except models.ModelInputError as exc:
            raise _CannotRun(str(exc)) from exc
        except (RuntimeError, AssertionError, ValueError, IndexError, MemoryError) as exc:
            # raised by the probe pass: the architecture cannot run on this input/batch
            raise _CannotRun(
                f"{cfg.model} cannot run on {channels}x{size}x{size} input at batch {cfg.batch_size}: {models.describe_exception(exc)}"
            ) from exc
        self.record["init_description"] = init_description
        # FLOPs in float32 (autocast does not change the count); layout as in training
        sample = normalise(self.splits.test_x[:1], self.splits, Precision(None, self.precision.channels_last))
        self.record["flops_per_image"] = measure.flops_per_image(model, sample)
        return model


def _train(
    cfg: TrainConfig, setup: _Setup, model: Any, log: Callable[[str], None], identity: dict[str, Any] | None = None
) -> tuple[RunState, Any]:
    """The epochs (resumed where a previous segment stopped), each measured; returns the state."""
    import torch

    from pepr.train import models

    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    generator = torch.Generator().manual_seed(cfg.seed)
    resume_path = cfg.out_dir / RESUME_FILE
    settings = {**cfg.as_dict(), "identity": identity}
    remove_stale_temp_files(cfg.out_dir, log)
    state = load_resume(resume_path, settings, model, optimizer, generator, log) if resume_path.exists() else RunState()
    state.segments += 1
    segment = state.segments - 1
    meter = setup.energy  # started in _Setup.build
    setup.memory.start()
    epoch = first_epoch = state.epochs_done + 1
    try:
        last_epoch = cfg.stop_after or cfg.epochs  # an adaptive sweep's rung stops before the end
        while state.epochs_done < last_epoch:
            epoch = state.epochs_done + 1
            # the paper's memory measure: reserved after the 2nd epoch's training, before its evaluation
            after_training = _read_reserved_epoch2(setup.device, state.peak) if epoch == 2 else None
            row = _run_epoch(
                epoch, segment, model, optimizer, setup, generator, cfg.batch_size, meter, state.history, after_training
            )
            state.process_seconds += row["_process_s"]
            state.history.append(row)
            state.epochs_done = epoch
            state.peak = _merge_peak(state.peak, setup.memory.read())
            log(
                f"epoch {epoch}/{cfg.epochs}: loss {row['train_loss']:.4f}, val acc {row['val_accuracy']:.4f}, "
                f"test acc {row['test_accuracy']:.4f}, {row['epoch_time_s']:.1f} s, "
                f"{row['cumulative_energy_kwh']:.3g} kWh so far"
            )
            # the last epoch too: when the final write fails (a full disk), a rerun writes the
            # record from it instead of losing the run
            save_resume(resume_path, settings, model, optimizer, generator, state)
            if setup.carbon is not None and epoch == first_epoch and epoch < last_epoch:
                # the first epoch's time plans the rest: a series ending before it fails now
                # (this epoch is saved), not after hours of training
                now = time.time()
                planned_end = now + 1.25 * (cfg.epochs - epoch) * row["epoch_time_s"]
                problem = setup.carbon.span_problem(
                    now, planned_end, f"{cfg.epochs - epoch} more epoch(s) of {row['epoch_time_s']:.0f} s + 25%"
                )
                if problem:
                    raise PeprInputError(f"{problem}; epoch {epoch} is kept in {resume_path}")
        setup.record["energy_method"] = meter.method()
        setup.record.update(meter.details())
    except torch.OutOfMemoryError as exc:
        raise _CannotRun(
            f"out of memory training {cfg.model} at batch {cfg.batch_size}, {setup.image_size}px in epoch {epoch}: "
            f"{models.describe_exception(exc)}",
            epoch,
        ) from exc
    except (MemoryError, RuntimeError) as exc:  # CPU allocator failures (e.g. under ulimit -v) are not OutOfMemoryError
        reason = out_of_memory_reason(exc)
        if reason is None:
            raise
        raise _CannotRun(
            f"out of memory in epoch {epoch} of {cfg.model} at batch {cfg.batch_size}, {setup.image_size}px ({reason})",
            epoch,
        ) from exc
    finally:
        meter.close()
        setup.memory.stop()
    return state, model


def _read_reserved_epoch2(device: Any, peak: dict[str, Any]) -> Callable[[], None]:
    """A callback for :func:`_run_epoch` that stores ``memory_reserved_epoch2_mb`` in ``peak``
    (CUDA only: :func:`pepr.train.measure.cuda_memory_reserved_mb` is None elsewhere)."""
    from pepr.train import measure

    def read() -> None:
        reserved = measure.cuda_memory_reserved_mb(device)
        if reserved is not None:
            peak["memory_reserved_epoch2_mb"] = reserved

    return read


def _results(cfg: TrainConfig, setup: _Setup, model: Any, state: RunState) -> tuple[dict[str, Any], bytes]:
    """Final performance (last epoch, best-val epoch), energy/CO2/time/memory sums, inference
    time; and the test_predictions.npz bytes of the timed pass (the final model's test outputs)."""
    from pepr.results import predictions
    from pepr.train import measure

    splits, device = setup.splits, setup.device
    eval_batch = eval_batch_size(cfg.batch_size)
    sync(device)  # inference time per image: one timed pass over the full test set, after training
    started = time.perf_counter()
    logits = predict(model, splits.test_x, splits, setup.precision, eval_batch)
    sync(device)
    inference_s = time.perf_counter() - started
    scores = logits.sigmoid() if splits.multi_label else logits.softmax(dim=1)
    test_predictions = predictions.encode(splits.test_y.cpu().numpy(), scores.cpu().numpy())
    history = state.history
    last = history[-1]
    best = max(history, key=lambda row: (row["val_accuracy"], -row["epoch"]))
    wall = sum(row["epoch_time_s"] for row in history)
    share = setup.share
    energy = sum(row["epoch_energy_kwh"] for row in history)
    # CO2 of every epoch from its measured energy with ONE intensity source, today's: a run
    # resumed after a country (or series) change never mixes two intensities in one figure.
    midpoints = [row.get("_midpoint_unix") for row in history]
    try:
        per_epoch_co2, _ = measure.epochs_co2_kg(
            [row["epoch_energy_kwh"] for row in history], midpoints, cfg.country, setup.carbon
        )
    except PeprInputError:  # epochs of an earlier pepr's segment without their times: as measured
        per_epoch_co2 = [row["epoch_co2_kg"] for row in history]
    total = 0.0
    for row, value in zip(history, per_epoch_co2):
        total += value
        row["epoch_co2_kg"], row["cumulative_co2_kg"] = value, total
    co2 = total
    peaks = {"memory_reserved_epoch2_mb": None, **state.peak}
    return {
        **{f"test_{k}": last[f"test_{k}"] for k in ("accuracy", "balanced_accuracy", "auc", "f1")},
        "val_accuracy": last["val_accuracy"],
        "best_val_epoch": best["epoch"],
        "best_val_accuracy": best["val_accuracy"],
        "best_val_test_accuracy": best["test_accuracy"],
        "energy_kwh": energy,
        "cpu_energy_kwh": sum(row["_cpu_kwh"] for row in history),
        "gpu_energy_kwh": sum(row["_gpu_kwh"] for row in history),
        "ram_energy_kwh": sum(row["_ram_kwh"] for row in history),
        "co2_kg": co2,
        "energy_method": f"{setup.record.get('energy_method', 'not measured')}; {share.description}",
        "memory_method": setup.memory.description,
        "cpu_share_of_node": share.cpu,
        "ram_share_of_node": share.ram,
        "carbon_intensity_source": setup.carbon.source if setup.carbon else f"CodeCarbon country {cfg.country}",
        "carbon_intensity_g_per_kwh": 1000 * co2 / energy if energy else None,
        "train_time_s": wall,
        "train_loop_time_s": sum(row["train_loop_time_s"] for row in history),
        "eval_time_s": sum(row["eval_time_s"] for row in history),
        "inference_ms_per_image": 1000.0 * inference_s / setup.record["n_test"],
        "cpu_share": measure.cpu_share(state.process_seconds, wall, setup.threads) if device.type == "cpu" else None,
        "segments": state.segments,
        "energy_per_epoch": [row["epoch_energy_kwh"] for row in history],
        "epoch_midpoints_unix": midpoints,
        **peaks,
    }, test_predictions


def _seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _probe(model: torch.nn.Module, splits: DeviceSplits, precision: Precision, batch_size: int) -> None:
    """One forward/backward at the training batch size and one eval forward, state restored.

    Catches kernel-larger-than-image, fixed-input-size and out-of-memory cases before the run
    starts. BatchNorm statistics touched by the probe are restored so it does not change results.
    """
    import torch

    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    n = min(batch_size, splits.train_x.shape[0])
    x = normalise(splits.train_x[:n], splits, precision)
    model.train()
    with _autocast(x.device, precision):
        loss = loss_function(model(x), splits.train_y[:n], splits.multi_label)
    loss.backward()
    model.zero_grad(set_to_none=True)
    predict(model, splits.test_x[:2], splits, precision, 2)
    with torch.no_grad():
        model.load_state_dict(saved)


def _run_epoch(
    epoch: int,
    segment: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    setup: _Setup,
    generator: torch.Generator,
    batch_size: int,
    meter: Any,
    history: list[dict[str, Any]],
    after_training: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Train one epoch, evaluate val/test, measure time and energy; return the history row.

    ``after_training`` is called once the epoch's training steps are done (device synced) and
    before its evaluation: the point where the paper reads its memory measure.

    CPU and RAM energy are charged at the job's share of the node (:func:`pepr.train.measure.node_share`);
    CO2 follows the energy, at the series' intensity at the epoch midpoint when one is given.
    """
    from pepr.train import measure

    splits, precision, device = setup.splits, setup.precision, setup.device
    eval_batch = eval_batch_size(batch_size)
    name = f"epoch{epoch}"
    setup.memory.begin_training()  # before the timer: it returns the allocator's free memory
    meter.begin(name)
    clock_start, started, cpu_started = time.time(), time.perf_counter(), time.process_time()
    train_loss = train_epoch(model, optimizer, splits, batch_size, generator, precision)
    sync(device)
    _check_finite(epoch, "train loss", train_loss, optimizer)
    _check_finite(epoch, "a weight", _weights_finite(model), optimizer)
    trained = time.perf_counter()
    setup.memory.end_training()  # the evaluation (batch >= 256) is measured apart
    if after_training is not None:
        after_training()
    val = evaluate(model, splits.val_x, splits.val_y, splits, precision, eval_batch)
    test = evaluate(model, splits.test_x, splits.test_y, splits, precision, eval_batch)
    sync(device)
    _check_finite(epoch, "validation loss", val["loss"], optimizer)  # NaN outputs: accuracies would be a constant guess
    finished, clock_end, cpu_finished = time.perf_counter(), time.time(), time.process_time()
    raw = meter.end(name)
    cpu, ram = raw.cpu_energy_kwh * setup.share.cpu, raw.ram_energy_kwh * setup.share.ram
    energy = cpu + raw.gpu_energy_kwh + ram
    if setup.carbon is not None:
        co2, _ = measure.epoch_co2_kg(energy, clock_start, clock_end, setup.carbon)
    else:  # CodeCarbon's country intensity, scaled to the charged energy
        co2 = raw.co2_kg * energy / raw.energy_kwh if raw.energy_kwh else 0.0
    epoch_time = finished - started
    previous = (
        history[-1] if history else {"cumulative_time_s": 0.0, "cumulative_energy_kwh": 0.0, "cumulative_co2_kg": 0.0}
    )
    return {
        "epoch": epoch,
        "segment": segment,
        "train_loss": train_loss,
        "val_loss": val["loss"],
        **{f"val_{k}": val[k] for k in ("accuracy", "balanced_accuracy", "auc", "f1")},
        **{f"test_{k}": test[k] for k in ("accuracy", "balanced_accuracy", "auc", "f1")},
        "epoch_time_s": epoch_time,
        "train_loop_time_s": trained - started,
        "eval_time_s": finished - trained,
        "cumulative_time_s": previous["cumulative_time_s"] + epoch_time,
        "train_images_per_s": splits.train_x.shape[0] / (trained - started),
        "epoch_energy_kwh": energy,
        "cumulative_energy_kwh": previous["cumulative_energy_kwh"] + energy,
        "epoch_co2_kg": co2,
        "cumulative_co2_kg": previous["cumulative_co2_kg"] + co2,
        "_midpoint_unix": (clock_start + clock_end) / 2,  # for CO2 with an intensity series
        # CPU seconds over the same window as epoch_time_s (cpu_share compares like with like:
        # the allocator trim, the energy readings and the resume save stay outside both)
        "_process_s": cpu_finished - cpu_started,
        # energy parts, summed into metrics.json (not history columns)
        "_cpu_kwh": cpu,
        "_gpu_kwh": raw.gpu_energy_kwh,
        "_ram_kwh": ram,
    }


def _weights_finite(model: torch.nn.Module) -> float:
    """0.0 when every parameter is finite, else NaN (one host sync for the whole model)."""
    import torch

    with torch.no_grad():
        flags = [torch.isfinite(p).all() for p in model.parameters()]
        ok = bool(torch.stack(flags).all()) if flags else True
    return 0.0 if ok else float("nan")


def _check_finite(epoch: int, what: str, value: float, optimizer: Any) -> None:
    """A diverged model (NaN/inf loss or weights) is a failed record, never an "ok" of constant guesses."""
    if not math.isfinite(value):
        lr = optimizer.param_groups[0]["lr"]
        raise _CannotRun(
            f"training diverged in epoch {epoch}: {what} is not finite (learning rate {lr:g}); lower lr", epoch
        )


def _merge_peak(old: dict[str, float], new: dict[str, float]) -> dict[str, float]:
    return {k: max(old.get(k, 0.0), new.get(k, 0.0)) for k in set(old) | set(new)}


def _fail(cfg: TrainConfig, record: dict[str, Any], reason: str, log: Callable[[str], None]) -> dict[str, Any]:
    """Record a run that could not be done (status "failed"), with empty results, and return it."""
    record = failed_record(record, reason, **{k: v for k, v in record.items() if k not in ("status", "reason")})
    for key in RESULT_KEYS:
        record.setdefault(key, None)
    record["config"] = cfg.as_dict()
    record["versions"] = _versions()
    runs.publish_finished(cfg.out_dir, record, [])
    (cfg.out_dir / RESUME_FILE).unlink(missing_ok=True)
    if cfg.stop_after is not None:  # the rung job's own output says so too: the cell drops out
        adaptive_run.write_failed_rung(cfg.out_dir, cfg.stop_after, record)
    log(f"failed: {reason}")
    return json_safe(record)
