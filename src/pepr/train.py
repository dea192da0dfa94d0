"""Train, evaluate and measure one timm model on one dataset: one cell of a PePR grid.

``run_training(TrainConfig(...))`` does the whole job and writes ``out_dir/metrics.json`` (the
contract in ARCHITECTURE.md) and ``out_dir/history.csv`` (one row per epoch):

1. validate everything cheap (:func:`validate_train_config`), then load the data, take the
   stratified train fraction and move all splits to the device once (resized there if asked);
2. build the model (:mod:`pepr.models`) and probe it with one forward/backward pass: a model that
   cannot run on this input is recorded with status ``"failed"`` (the sweep goes on);
3. train with Adam + cross-entropy, evaluating on val and the full test set after every epoch,
   measuring each epoch's wall time and energy (CodeCarbon task per epoch);
4. after each epoch save ``out_dir/resume.pt``, so a re-run after preemption resumes from the last
   finished epoch and sums times/energy over the segments; it is removed on success.

Time and energy cover the same span: every epoch's training loop plus its val/test evaluation
(``train_loop_time_s`` and ``eval_time_s`` split it). Final performance is the last epoch's, as
in the PePR paper; the best-val epoch is recorded too.

torch/timm/codecarbon are imported inside functions: ``pepr.train_cli`` imports this module only
when a training actually runs.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import platform
import random
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pepr import data as data_module
from pepr.errors import PeprInputError

if TYPE_CHECKING:  # pragma: no cover
    import torch

#: Columns of history.csv, in order.
HISTORY_COLUMNS: tuple[str, ...] = (
    "epoch",
    "segment",
    "train_loss",
    "val_loss",
    "val_accuracy",
    "val_balanced_accuracy",
    "val_auc",
    "val_f1",
    "test_accuracy",
    "test_balanced_accuracy",
    "test_auc",
    "test_f1",
    "epoch_time_s",
    "train_loop_time_s",
    "eval_time_s",
    "cumulative_time_s",
    "train_images_per_s",
    "epoch_energy_kwh",
    "cumulative_energy_kwh",
    "epoch_co2_kg",
    "cumulative_co2_kg",
)

#: Keys written (as null) in metrics.json of a failed run, so every run has the same columns.
RESULT_KEYS: tuple[str, ...] = (
    "test_accuracy",
    "test_balanced_accuracy",
    "test_auc",
    "test_f1",
    "val_accuracy",
    "best_val_epoch",
    "best_val_accuracy",
    "energy_kwh",
    "cpu_energy_kwh",
    "gpu_energy_kwh",
    "ram_energy_kwh",
    "co2_kg",
    "energy_method",
    "train_time_s",
    "train_loop_time_s",
    "eval_time_s",
    "peak_memory_mb",
    "flops_per_image",
    "inference_ms_per_image",
    "cpu_share",
)

RESUME_FILE = "resume.pt"


@dataclass
class TrainConfig:
    """Everything one training run needs (the ``pepr train`` flags)."""

    model: str
    dataset: str
    out_dir: Path
    init: str = "scratch"
    fraction: float = 1.0
    epochs: int = 10
    seed: int = 0
    data_dir: Path | None = None
    image_size: int | None = None
    batch_size: int = 32
    lr: float = 5e-4
    device: str = "auto"
    country: str = "DNK"
    save_model: Path | None = None
    threads: int | None = None

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        if self.data_dir is not None:
            self.data_dir = Path(self.data_dir)
        if self.save_model is not None:
            self.save_model = Path(self.save_model)

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly copy (paths as strings)."""
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(self).items()}


# --------------------------------------------------------------------------------------------
# Validation and device selection (cheap, no torch needed for most of it)
# --------------------------------------------------------------------------------------------


def validate_train_config(cfg: TrainConfig) -> None:
    """Raise :class:`PeprInputError` listing every problem with ``cfg`` found without training.

    Checks numbers and ranges, init syntax and checkpoint file, the timm model name (imports
    timm, ~3 s), ImageNet weights availability in timm's registry, the country, the device
    string, and the dataset (:func:`pepr.data.dataset_problems`, a MedMNIST file may be
    downloaded later so its absence is not an error here).
    """
    from pepr.measure import check_country
    from pepr.models import model_problems

    problems: list[str] = []

    def check(condition: bool, message: str) -> None:
        if not condition:
            problems.append(message)

    check(isinstance(cfg.model, str) and bool(cfg.model.strip()), "model name is empty")
    check(_is_number(cfg.fraction) and 0.0 < cfg.fraction <= 1.0, f"fraction must be in (0, 1], got {cfg.fraction!r}")
    check(_is_int(cfg.epochs) and cfg.epochs >= 1, f"epochs must be an integer >= 1, got {cfg.epochs!r}")
    check(_is_int(cfg.seed) and cfg.seed >= 0, f"seed must be an integer >= 0, got {cfg.seed!r}")
    check(_is_int(cfg.batch_size) and cfg.batch_size >= 2, f"batch size must be an integer >= 2 (BatchNorm needs 2 samples), got {cfg.batch_size!r}")
    check(_is_number(cfg.lr) and cfg.lr > 0 and np.isfinite(cfg.lr), f"learning rate must be > 0, got {cfg.lr!r}")
    check(
        cfg.image_size is None or (_is_int(cfg.image_size) and 8 <= cfg.image_size <= 1024),
        f"image size must be an integer in 8..1024 pixels, got {cfg.image_size!r}",
    )
    check(cfg.threads is None or (_is_int(cfg.threads) and cfg.threads >= 1), f"threads must be >= 1, got {cfg.threads!r}")
    try:
        parse_device(cfg.device)
    except PeprInputError as exc:
        problems.append(str(exc))
    try:
        check_country(cfg.country)
    except PeprInputError as exc:
        problems.append(str(exc))
    if isinstance(cfg.model, str) and cfg.model.strip():
        problems.extend(model_problems(cfg.model, cfg.init))
    problems.extend(data_module.dataset_problems(cfg.dataset, cfg.data_dir, allow_download=True))
    if cfg.save_model is not None and cfg.save_model.suffix not in (".pt", ".pth", ".safetensors"):
        problems.append(f"--save-model {cfg.save_model}: use a .pt, .pth or .safetensors file name")
    if problems:
        raise PeprInputError("invalid training configuration: " + "; ".join(problems))


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def parse_device(requested: str) -> str:
    """Check the syntax of a device string (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``)."""
    text = (requested or "").strip()
    if text in ("auto", "cpu", "cuda", "mps") or (text.startswith("cuda:") and text[5:].isdigit()):
        return text
    raise PeprInputError(f"unknown device {requested!r}; use auto, cpu, cuda, cuda:N or mps")


def resolve_device(requested: str, cuda_available: bool, cuda_count: int = 1, mps_available: bool = False) -> str:
    """Pick the torch device: ``auto`` -> ``cuda`` when available, else ``cpu``.

    Pure function (availability passed in) so the choice is unit-tested without a GPU.
    An explicit GPU device that is not there is a :class:`PeprInputError`, never a silent CPU run.
    """
    text = parse_device(requested)
    if text == "auto":
        return "cuda" if cuda_available else "cpu"
    if text.startswith("cuda"):
        if not cuda_available:
            raise PeprInputError(f"device {text!r} requested but CUDA is not available here; use --device cpu or auto")
        index = int(text[5:]) if ":" in text else 0
        if index >= cuda_count:
            raise PeprInputError(f"device {text!r} requested but only {cuda_count} CUDA device(s) are visible")
    if text == "mps" and not mps_available:
        raise PeprInputError("device 'mps' requested but Apple MPS is not available; use --device cpu or auto")
    return text


@dataclass(frozen=True)
class Precision:
    """Numerics of the training loop on a device."""

    autocast_dtype: str | None  # "bfloat16" or None (float32)
    channels_last: bool


def select_precision(device_type: str, bf16_supported: bool) -> Precision:
    """bf16 autocast + channels_last on CUDA (when bf16 is supported), plain float32 elsewhere.

    bf16 needs no loss scaling (unlike fp16), so GPUs without bf16 train in float32.
    """
    if device_type == "cuda":
        return Precision(autocast_dtype="bfloat16" if bf16_supported else None, channels_last=True)
    return Precision(autocast_dtype=None, channels_last=False)


def default_threads() -> int:
    """Cores this process may use (respects SLURM/cgroup CPU affinity, unlike os.cpu_count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------


def classification_metrics(y_true: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """Accuracy, balanced accuracy, macro one-vs-rest AUC and macro F1 of class probabilities.

    Balanced accuracy averages the recall of the classes present in ``y_true``; AUC averages the
    one-vs-rest AUCs of classes with both positives and negatives in ``y_true`` (binary: the AUC
    of class 1), computed from ranks with ties averaged; F1 is the macro mean over all classes,
    0 for a class never predicted nor present.
    """
    from scipy.stats import rankdata

    y_true = np.asarray(y_true).reshape(-1)
    probs = np.asarray(probs, dtype=np.float64)
    n_classes = probs.shape[1]
    predicted = probs.argmax(axis=1)
    accuracy = float(np.mean(predicted == y_true))
    recalls, f1s, aucs = [], [], []
    for cls in range(n_classes):
        positive = y_true == cls
        predicted_positive = predicted == cls
        true_positive = np.sum(positive & predicted_positive)
        if positive.any():
            recalls.append(true_positive / positive.sum())
        denominator = positive.sum() + predicted_positive.sum()
        f1s.append(2 * true_positive / denominator if denominator else 0.0)
    auc_classes = [1] if n_classes == 2 else range(n_classes)
    for cls in auc_classes:
        positive = y_true == cls
        n_pos, n_neg = int(positive.sum()), int((~positive).sum())
        if n_pos == 0 or n_neg == 0:
            continue
        ranks = rankdata(probs[:, cls])
        aucs.append((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
    return {
        "accuracy": accuracy,
        "balanced_accuracy": float(np.mean(recalls)) if recalls else float("nan"),
        "auc": float(np.mean(aucs)) if aucs else float("nan"),
        "f1": float(np.mean(f1s)),
    }


# --------------------------------------------------------------------------------------------
# Tensors on the device and the inner loops (the benchmark calls these)
# --------------------------------------------------------------------------------------------


@dataclass
class DeviceSplits:
    """All splits on the device, images (N, C, S, S) in their stored dtype, plus normalisation."""

    train_x: "torch.Tensor"
    train_y: "torch.Tensor"
    val_x: "torch.Tensor"
    val_y: "torch.Tensor"
    test_x: "torch.Tensor"
    test_y: "torch.Tensor"
    mean: "torch.Tensor"  # (1, C, 1, 1), on the [0, 1] scale for uint8 data
    std: "torch.Tensor"
    scale: float  # 1/255 for uint8 images, 1 for float images


def _resize(images: "torch.Tensor", size: int, chunk: int = 1024) -> "torch.Tensor":
    import torch
    import torch.nn.functional as F

    out = []
    for start in range(0, images.shape[0], chunk):
        part = images[start : start + chunk].float()
        part = F.interpolate(part, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out.append(part.round().clamp_(0, 255).to(torch.uint8) if images.dtype == torch.uint8 else part)
    return torch.cat(out)


def to_device(data: "data_module.ImageData", device: "torch.device", image_size: int) -> DeviceSplits:
    """Move all splits to ``device`` once, resizing to ``image_size`` there if needed.

    Normalisation statistics are per channel over the (fraction-subset) train split.
    """
    import torch

    tensors = {}
    for split in data_module.SPLITS:
        x = torch.from_numpy(getattr(data, f"{split}_x")).to(device)
        if tuple(x.shape[2:]) != (image_size, image_size):
            x = _resize(x, image_size)
        tensors[f"{split}_x"] = x
        tensors[f"{split}_y"] = torch.from_numpy(getattr(data, f"{split}_y")).to(device)
    scale = 1.0 / 255.0 if tensors["train_x"].dtype == torch.uint8 else 1.0
    train = tensors["train_x"].float() * scale
    mean = train.mean(dim=(0, 2, 3), keepdim=True)
    std = train.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    return DeviceSplits(mean=mean, std=std, scale=scale, **tensors)


def normalise(x: "torch.Tensor", splits: DeviceSplits, precision: Precision) -> "torch.Tensor":
    """Scale and normalise a batch on its device (channels_last when the precision says so)."""
    import torch

    x = (x.float() * splits.scale - splits.mean) / splits.std
    if precision.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def _autocast(device: "torch.device", precision: Precision):
    import contextlib

    import torch

    if precision.autocast_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=getattr(torch, precision.autocast_dtype))


def batch_order(n: int, batch_size: int, generator: "torch.Generator") -> list["torch.Tensor"]:
    """Shuffled index batches covering all ``n`` samples (the last batch may be smaller).

    A final batch of a single sample is merged into the previous one: BatchNorm cannot train on
    one sample, and dropping it would silently lose data.
    """
    import torch

    order = torch.randperm(n, generator=generator)
    batches = list(order.split(batch_size))
    if len(batches) > 1 and len(batches[-1]) == 1:
        single = batches.pop()
        batches[-1] = torch.cat([batches[-1], single])
    return batches


def train_epoch(
    model: "torch.nn.Module",
    optimizer: "torch.optim.Optimizer",
    splits: DeviceSplits,
    batch_size: int,
    generator: "torch.Generator",
    precision: Precision,
) -> float:
    """One pass over the train split (Adam step per batch); returns the mean training loss.

    No per-sample Python work: batches are index-gathered from the tensors on the device and
    the loss is accumulated on the device (one host sync per epoch).
    """
    import torch
    import torch.nn.functional as F

    model.train()
    device = splits.train_x.device
    total = torch.zeros((), device=device)
    n = splits.train_x.shape[0]
    for index in batch_order(n, batch_size, generator):
        index = index.to(device, non_blocking=True)
        x = normalise(splits.train_x[index], splits, precision)
        y = splits.train_y[index]
        with _autocast(device, precision):
            loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.detach().float() * len(index)
    return float(total.item()) / n


def predict(
    model: "torch.nn.Module", x: "torch.Tensor", splits: DeviceSplits, precision: Precision, batch_size: int
) -> "torch.Tensor":
    """Logits (float32, on the device) for every image of ``x``; no dropped last batch."""
    import torch

    model.eval()
    device = x.device
    outputs = []
    with torch.inference_mode(), _autocast(device, precision):
        for start in range(0, x.shape[0], batch_size):
            outputs.append(model(normalise(x[start : start + batch_size], splits, precision)).float())
    return torch.cat(outputs)


def evaluate(
    model: "torch.nn.Module", x: "torch.Tensor", y: "torch.Tensor", splits: DeviceSplits, precision: Precision, batch_size: int
) -> dict[str, float]:
    """Loss and classification metrics of the model on one split."""
    import torch.nn.functional as F

    logits = predict(model, x, splits, precision, batch_size)
    loss = float(F.cross_entropy(logits, y).item())
    probs = logits.softmax(dim=1).cpu().numpy()
    return {"loss": loss, **classification_metrics(y.cpu().numpy(), probs)}


def _sync(device: "torch.device") -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


def _stderr_log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _json_safe(value: Any) -> Any:
    """NaN/inf -> null so metrics.json stays strict JSON; numpy scalars -> Python."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def write_outputs(out_dir: Path, metrics: dict[str, Any], history: list[dict[str, Any]]) -> None:
    """Write history.csv then metrics.json, each atomically (metrics last: it marks completion)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=HISTORY_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    _atomic_write_text(out_dir / "history.csv", buffer.getvalue())
    _atomic_write_text(out_dir / "metrics.json", json.dumps(_json_safe(metrics), indent=2, sort_keys=False) + "\n")


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for package in ("torch", "timm", "codecarbon", "numpy", "pepr-bench"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


def _fingerprint(cfg: TrainConfig) -> dict[str, Any]:
    """The settings a resume checkpoint must match (not threads/device/out paths)."""
    keys = ("model", "dataset", "init", "fraction", "epochs", "seed", "image_size", "batch_size", "lr")
    return {k: getattr(cfg, k) for k in keys} | {"data_dir": str(cfg.data_dir) if cfg.data_dir else None}


@dataclass
class _RunState:
    """What survives preemption (stored in resume.pt after each epoch)."""

    epochs_done: int = 0
    segments: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    peak: dict[str, float] = field(default_factory=dict)
    process_seconds: float = 0.0


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

    Raises :class:`PeprInputError` (before any training) for bad input. A model that cannot run
    on this input (cannot be built for the size, fails the probe pass, or runs out of GPU memory)
    gives a record with ``status == "failed"`` and the reason. Other errors propagate.
    """
    validate_train_config(cfg)
    import torch

    from pepr import measure, models

    out_dir = cfg.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    threads = cfg.threads or default_threads()
    torch.set_num_threads(threads)
    _seed_everything(cfg.seed)

    cuda = torch.cuda.is_available()
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    device = torch.device(resolve_device(cfg.device, cuda, torch.cuda.device_count() if cuda else 0, mps))
    precision = select_precision(device.type, bool(cuda and device.type == "cuda" and torch.cuda.is_bf16_supported()))
    record = base_record(cfg)

    dataset = data_module.load_dataset(cfg.dataset, cfg.data_dir, allow_download=True)
    height, width = dataset.image_size
    if cfg.image_size is None and height != width:
        raise PeprInputError(f"dataset {cfg.dataset!r} has {height}x{width} images; pass --image-size to train on square images")
    image_size = cfg.image_size or height
    subset = data_module.stratified_subset(dataset.train_y, cfg.fraction, cfg.seed)
    dataset = dataset.with_train_subset(subset)
    record.update(
        image_size=image_size,
        device=str(device),
        threads=threads,
        n_train=int(len(dataset.train_y)),
        n_val=int(len(dataset.val_y)),
        n_test=int(len(dataset.test_y)),
        num_classes=dataset.num_classes,
        channels=dataset.channels,
        precision=precision.autocast_dtype or "float32",
        dataset_description=dataset.description,
    )
    log(
        f"pepr train: {cfg.model} on {dataset.description}, init {cfg.init}, fraction {cfg.fraction} "
        f"({record['n_train']} train images), {image_size}px, {cfg.epochs} epochs, device {device}, {threads} threads"
    )
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        torch.backends.cudnn.benchmark = True  # fixed batch shapes: let cuDNN pick the fastest kernels
        record["device_name"] = torch.cuda.get_device_name(device)

    splits = to_device(dataset, device, image_size)
    try:
        model, init_description = models.create_model(cfg.model, cfg.init, dataset.num_classes, dataset.channels, image_size)
        record["params"] = models.count_trainable_parameters(model)
        model = model.to(device)
        if precision.channels_last:
            model = model.to(memory_format=torch.channels_last)
        _probe(model, splits, precision, cfg.batch_size)
    except PeprInputError:  # the user's input (e.g. weights unavailable offline): exit 2, not a "failed" run
        raise
    except models.ModelInputError as exc:
        return _fail(cfg, record, str(exc), log)
    except (RuntimeError, AssertionError, ValueError, IndexError) as exc:
        # raised by the probe pass: the architecture cannot run on this input/batch
        return _fail(cfg, record, f"{cfg.model} cannot run on {dataset.channels}x{image_size}x{image_size} input at batch {cfg.batch_size}: {models.describe_exception(exc)}", log)
    record["init_description"] = init_description
    # FLOPs in float32 (autocast does not change the count); layout as in training
    sample = normalise(splits.test_x[:1], splits, Precision(None, precision.channels_last))
    record["flops_per_image"] = measure.flops_per_image(model, sample)

    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    generator = torch.Generator().manual_seed(cfg.seed)
    state = _RunState()
    resume_path = out_dir / RESUME_FILE
    if resume_path.exists():
        state = _resume(resume_path, cfg, model, optimizer, generator, log)
    state.segments += 1
    segment = state.segments - 1

    meter = measure.EnergyMeter(cfg.country)
    meter.start()
    eval_batch = max(cfg.batch_size, 256)
    cpu_start, wall_start = time.process_time(), time.perf_counter()
    try:
        while state.epochs_done < cfg.epochs:
            epoch = state.epochs_done + 1
            row = _run_epoch(epoch, segment, model, optimizer, splits, generator, precision, cfg.batch_size, eval_batch, meter, state.history)
            state.history.append(row)
            state.epochs_done = epoch
            state.peak = _merge_peak(state.peak, measure.peak_memory(device))
            state.process_seconds += time.process_time() - cpu_start
            cpu_start = time.process_time()
            log(
                f"epoch {epoch}/{cfg.epochs}: loss {row['train_loss']:.4f}, val acc {row['val_accuracy']:.4f}, "
                f"test acc {row['test_accuracy']:.4f}, {row['epoch_time_s']:.1f} s, "
                f"{row['cumulative_energy_kwh']:.3g} kWh so far"
            )
            if epoch < cfg.epochs:  # the last epoch goes straight to the final record
                _save_resume(resume_path, cfg, model, optimizer, generator, state)
        method = meter.method()
        hardware = meter.details()
    except torch.OutOfMemoryError as exc:
        return _fail(cfg, record, f"out of memory training {cfg.model} at batch {cfg.batch_size}, {image_size}px: {models.describe_exception(exc)}", log)
    finally:
        meter.close()

    # inference time per image: one timed pass over the full test set, after training
    _sync(device)
    started = time.perf_counter()
    predict(model, splits.test_x, splits, precision, eval_batch)
    _sync(device)
    inference_s = time.perf_counter() - started

    last = state.history[-1]
    best = max(state.history, key=lambda row: (row["val_accuracy"], -row["epoch"]))
    wall = sum(row["epoch_time_s"] for row in state.history)
    record.update(
        test_accuracy=last["test_accuracy"],
        test_balanced_accuracy=last["test_balanced_accuracy"],
        test_auc=last["test_auc"],
        test_f1=last["test_f1"],
        val_accuracy=last["val_accuracy"],
        best_val_epoch=best["epoch"],
        best_val_accuracy=best["val_accuracy"],
        best_val_test_accuracy=best["test_accuracy"],
        energy_kwh=sum(row["epoch_energy_kwh"] for row in state.history),
        cpu_energy_kwh=sum(row["_cpu_kwh"] for row in state.history),
        gpu_energy_kwh=sum(row["_gpu_kwh"] for row in state.history),
        ram_energy_kwh=sum(row["_ram_kwh"] for row in state.history),
        co2_kg=sum(row["epoch_co2_kg"] for row in state.history),
        energy_method=method,
        train_time_s=wall,
        train_loop_time_s=sum(row["train_loop_time_s"] for row in state.history),
        eval_time_s=sum(row["eval_time_s"] for row in state.history),
        inference_ms_per_image=1000.0 * inference_s / record["n_test"],
        cpu_share=measure.cpu_share(state.process_seconds, wall, threads) if device.type == "cpu" else None,
        segments=state.segments,
        **state.peak,
        **hardware,
    )
    record["carbon_intensity_g_per_kwh"] = 1000 * record["co2_kg"] / record["energy_kwh"] if record["energy_kwh"] else None
    record["energy_per_epoch"] = [row["epoch_energy_kwh"] for row in state.history]
    record["config"] = cfg.as_dict()
    record["versions"] = _versions()
    if cfg.save_model is not None:
        models.save_model(model, cfg.save_model)
        record["saved_model"] = str(cfg.save_model)
    write_outputs(out_dir, record, state.history)
    resume_path.unlink(missing_ok=True)
    log(
        f"done: test accuracy {record['test_accuracy']:.4f}, balanced {record['test_balanced_accuracy']:.4f}, "
        f"AUC {record['test_auc']:.4f}; {wall:.1f} s, {record['energy_kwh']:.3g} kWh ({method}), "
        f"{record['co2_kg']:.3g} kg CO2, peak memory {record['peak_memory_mb']:.0f} MiB"
    )
    return _json_safe(record)


def _seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _probe(model: "torch.nn.Module", splits: DeviceSplits, precision: Precision, batch_size: int) -> None:
    """One forward/backward at the training batch size and one eval forward, state restored.

    Catches kernel-larger-than-image, fixed-input-size and out-of-memory cases before the run
    starts. BatchNorm statistics touched by the probe are restored so it does not change results.
    """
    import torch
    import torch.nn.functional as F

    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    n = min(batch_size, splits.train_x.shape[0])
    x = normalise(splits.train_x[:n], splits, precision)
    model.train()
    with _autocast(x.device, precision):
        loss = F.cross_entropy(model(x), splits.train_y[:n])
    loss.backward()
    model.zero_grad(set_to_none=True)
    predict(model, splits.test_x[:2], splits, precision, 2)
    with torch.no_grad():
        model.load_state_dict(saved)


def _run_epoch(
    epoch: int,
    segment: int,
    model: "torch.nn.Module",
    optimizer: "torch.optim.Optimizer",
    splits: DeviceSplits,
    generator: "torch.Generator",
    precision: Precision,
    batch_size: int,
    eval_batch: int,
    meter: Any,
    history: list[dict[str, Any]],
) -> dict[str, Any]:
    """Train one epoch, evaluate val/test, measure time and energy; return the history row."""
    device = splits.train_x.device
    name = f"epoch{epoch}"
    meter.begin(name)
    started = time.perf_counter()
    train_loss = train_epoch(model, optimizer, splits, batch_size, generator, precision)
    _sync(device)
    trained = time.perf_counter()
    val = evaluate(model, splits.val_x, splits.val_y, splits, precision, eval_batch)
    test = evaluate(model, splits.test_x, splits.test_y, splits, precision, eval_batch)
    _sync(device)
    finished = time.perf_counter()
    energy = meter.end(name)
    epoch_time = finished - started
    previous_time = history[-1]["cumulative_time_s"] if history else 0.0
    previous_energy = history[-1]["cumulative_energy_kwh"] if history else 0.0
    previous_co2 = history[-1]["cumulative_co2_kg"] if history else 0.0
    return {
        "epoch": epoch,
        "segment": segment,
        "train_loss": train_loss,
        "val_loss": val["loss"],
        "val_accuracy": val["accuracy"],
        "val_balanced_accuracy": val["balanced_accuracy"],
        "val_auc": val["auc"],
        "val_f1": val["f1"],
        "test_accuracy": test["accuracy"],
        "test_balanced_accuracy": test["balanced_accuracy"],
        "test_auc": test["auc"],
        "test_f1": test["f1"],
        "epoch_time_s": epoch_time,
        "train_loop_time_s": trained - started,
        "eval_time_s": finished - trained,
        "cumulative_time_s": previous_time + epoch_time,
        "train_images_per_s": splits.train_x.shape[0] / (trained - started),
        "epoch_energy_kwh": energy.energy_kwh,
        "cumulative_energy_kwh": previous_energy + energy.energy_kwh,
        "epoch_co2_kg": energy.co2_kg,
        "cumulative_co2_kg": previous_co2 + energy.co2_kg,
        # energy parts, summed into metrics.json (not history columns)
        "_cpu_kwh": energy.cpu_energy_kwh,
        "_gpu_kwh": energy.gpu_energy_kwh,
        "_ram_kwh": energy.ram_energy_kwh,
    }


def _merge_peak(old: dict[str, float], new: dict[str, float]) -> dict[str, float]:
    return {k: max(old.get(k, 0.0), new.get(k, 0.0)) for k in set(old) | set(new)}


def _save_resume(path: Path, cfg: TrainConfig, model: Any, optimizer: Any, generator: Any, state: _RunState) -> None:
    """Atomically save everything needed to continue after the finished epochs."""
    import torch

    payload = {
        "fingerprint": _fingerprint(cfg),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "generator": generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "state": dataclasses.asdict(state),
    }
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def _resume(path: Path, cfg: TrainConfig, model: Any, optimizer: Any, generator: Any, log: Callable[[str], None]) -> _RunState:
    """Restore a run from resume.pt; a checkpoint of other settings is discarded (and said so)."""
    import torch

    payload = torch.load(path, map_location="cpu", weights_only=False)
    if payload.get("fingerprint") != _fingerprint(cfg):
        log(f"{path} was saved with other settings ({payload.get('fingerprint')}); starting from epoch 1")
        path.unlink()
        return _RunState()
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    generator.set_state(payload["generator"])
    torch.set_rng_state(payload["torch_rng"])
    if payload.get("cuda_rng") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(payload["cuda_rng"])
    state = _RunState(**payload["state"])
    log(f"resuming from {path}: {state.epochs_done} epoch(s) done in {state.segments} earlier segment(s)")
    return state


def _fail(cfg: TrainConfig, record: dict[str, Any], reason: str, log: Callable[[str], None]) -> dict[str, Any]:
    """Record a run the model could not do (status "failed"), with empty results, and return it."""
    record = {**record, "status": "failed", "reason": reason}
    record.setdefault("params", None)
    for key in RESULT_KEYS:
        record.setdefault(key, None)
    record["config"] = cfg.as_dict()
    record["versions"] = _versions()
    write_outputs(cfg.out_dir, record, [])
    (cfg.out_dir / RESUME_FILE).unlink(missing_ok=True)
    log(f"failed: {reason}")
    return _json_safe(record)
