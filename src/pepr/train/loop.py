"""The device loop of a training: numerics, data on the device, normalisation, batches, epochs.

Everything here works on tensors already on the device (no per-sample Python work); the
throughput benchmark and the cost estimate call these functions directly. torch is imported
inside functions so importing this module stays light.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pepr.datasets import core as data_module
from pepr.train.metrics import classification_metrics, multilabel_metrics

if TYPE_CHECKING:  # pragma: no cover
    import torch


@dataclass(frozen=True)
class Precision:
    """Numerics of the training loop on a device."""

    autocast_dtype: str | None  # "bfloat16" or None (float32)
    channels_last: bool


def select_precision(device_type: str, bf16_supported: bool, requested: str = "bf16") -> Precision:
    """The loop's numerics: float32 unless ``requested == "bf16"`` on a CUDA GPU that supports it.

    fp32 is the paper's protocol and the training default (``--precision``); bf16 autocast is an
    opt-in on CUDA (it needs no loss scaling, unlike fp16). CPU and MPS always train in float32.
    channels_last is a memory layout, not numerics: used on CUDA whatever the precision.
    ``requested`` defaults to "bf16" for the throughput callers (estimate, bench), which ask for
    the fastest numerics the device has.
    """
    if device_type == "cuda":
        use_bf16 = requested == "bf16" and bf16_supported
        return Precision(autocast_dtype="bfloat16" if use_bf16 else None, channels_last=True)
    return Precision(autocast_dtype=None, channels_last=False)


@dataclass
class DeviceSplits:
    """All splits on the device, images (N, C, S, S) in their stored dtype, plus normalisation."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    mean: torch.Tensor  # (1, C, 1, 1), on the [0, 1] scale for uint8 data
    std: torch.Tensor
    scale: float  # 1/255 for uint8 images, 1 for float images
    #: labels are (N, L) float 0/1 rows: BCE-with-logits and multi-label metrics
    multi_label: bool = False


def _resize(images: torch.Tensor, size: int, chunk: int = 1024) -> torch.Tensor:
    import torch
    import torch.nn.functional as F

    out = []
    for start in range(0, images.shape[0], chunk):
        part = images[start : start + chunk].float()
        part = F.interpolate(part, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out.append(part.round().clamp_(0, 255).to(torch.uint8) if images.dtype == torch.uint8 else part)
    return torch.cat(out)


def to_device(data: data_module.ImageData, device: torch.device, image_size: int) -> DeviceSplits:
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
        y = torch.from_numpy(getattr(data, f"{split}_y"))
        multi_label = bool(getattr(data, "multi_label", False))
        tensors[f"{split}_y"] = (y.float() if multi_label else y).to(device)
    scale = 1.0 / 255.0 if tensors["train_x"].dtype == torch.uint8 else 1.0
    mean, std = channel_stats(tensors["train_x"], scale)
    return DeviceSplits(
        mean=mean, std=std, scale=scale, multi_label=bool(getattr(data, "multi_label", False)), **tensors
    )


def loss(logits: torch.Tensor, y: torch.Tensor, multi_label: bool) -> torch.Tensor:
    """The training loss: cross-entropy over classes, or BCE-with-logits over labels (multi-label,
    as MedMNIST trains ChestMNIST)."""
    import torch.nn.functional as F

    if multi_label:
        return F.binary_cross_entropy_with_logits(logits, y)
    return F.cross_entropy(logits, y)


def channel_stats(images: torch.Tensor, scale: float, chunk: int = 2048) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and (unbiased) std of ``images * scale``, each (1, C, 1, 1) float32.

    Summed chunk by chunk in float64: a float copy of a whole train split (10 GB for DermaMNIST
    at 224 px) would set the run's peak memory instead of the model does. MPS has no float64,
    so it sums in float32 there.
    """
    import torch

    wide = torch.float32 if images.device.type == "mps" else torch.float64
    channels = images.shape[1]
    total = torch.zeros(channels, dtype=wide, device=images.device)
    squares = torch.zeros(channels, dtype=wide, device=images.device)
    for start in range(0, images.shape[0], chunk):
        part = images[start : start + chunk].to(wide) * scale
        total += part.sum(dim=(0, 2, 3))
        squares += part.square().sum(dim=(0, 2, 3))
    count = images.numel() // channels
    mean = total / count
    variance = (squares - count * mean.square()) / max(count - 1, 1)
    std = variance.clamp_min(0).sqrt().float().clamp_min(1e-6)
    return mean.float().view(1, -1, 1, 1), std.view(1, -1, 1, 1)


def normalise(x: torch.Tensor, splits: DeviceSplits, precision: Precision) -> torch.Tensor:
    """Scale and normalise a batch on its device (channels_last when the precision says so)."""
    import torch

    x = (x.float() * splits.scale - splits.mean) / splits.std
    if precision.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def autocast(device: torch.device, precision: Precision):
    import contextlib

    import torch

    if precision.autocast_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=getattr(torch, precision.autocast_dtype))


#: Evaluation runs in batches of at least this many images (inference needs no small batches).
MIN_EVAL_BATCH = 256


def eval_batch_size(batch_size: int) -> int:
    """Batch size of the evaluation passes (val, test, inference timing): ``max(batch_size, 256)``."""
    return max(int(batch_size), MIN_EVAL_BATCH)


def train_batch_count(n: int, batch_size: int) -> int:
    """Training steps per epoch over ``n`` samples, as :func:`batch_order` makes them:
    ``ceil(n / batch_size)``, less one when the last batch would hold a single sample (merged
    into the previous one)."""
    batches = -(-int(n) // int(batch_size))
    if batches > 1 and n - (batches - 1) * batch_size == 1:
        batches -= 1
    return batches


def eval_batch_count(n: int, batch_size: int) -> int:
    """Forward passes :func:`predict` makes over ``n`` images: ``ceil(n / batch_size)``."""
    return -(-int(n) // int(batch_size))


def batch_order(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
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
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    splits: DeviceSplits,
    batch_size: int,
    generator: torch.Generator,
    precision: Precision,
) -> float:
    """One pass over the train split (Adam step per batch); returns the mean training loss.

    No per-sample Python work: batches are index-gathered from the tensors on the device and
    the loss is accumulated on the device (one host sync per epoch).
    """
    import torch

    model.train()
    device = splits.train_x.device
    total = torch.zeros((), device=device)
    n = splits.train_x.shape[0]
    for index in batch_order(n, batch_size, generator):
        index = index.to(device, non_blocking=True)
        x = normalise(splits.train_x[index], splits, precision)
        y = splits.train_y[index]
        with autocast(device, precision):
            batch_loss = loss(model(x), y, splits.multi_label)
        optimizer.zero_grad(set_to_none=True)
        batch_loss.backward()
        optimizer.step()
        total += batch_loss.detach().float() * len(index)
    return float(total.item()) / n


def predict(
    model: torch.nn.Module, x: torch.Tensor, splits: DeviceSplits, precision: Precision, batch_size: int
) -> torch.Tensor:
    """Logits (float32, on the device) for every image of ``x``; no dropped last batch."""
    import torch

    model.eval()
    device = x.device
    outputs = []
    with torch.inference_mode(), autocast(device, precision):
        for start in range(0, x.shape[0], batch_size):
            outputs.append(model(normalise(x[start : start + batch_size], splits, precision)).float())
    return torch.cat(outputs)


def evaluate(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    splits: DeviceSplits,
    precision: Precision,
    batch_size: int,
) -> dict[str, float]:
    """Loss and classification metrics of the model on one split (multi-label: sigmoid scores,
    :func:`pepr.train.metrics.multilabel_metrics`)."""
    logits = predict(model, x, splits, precision, batch_size)
    value = float(loss(logits, y, splits.multi_label).item())
    if splits.multi_label:
        return {"loss": value, **multilabel_metrics(y.cpu().numpy(), logits.sigmoid().cpu().numpy())}
    probs = logits.softmax(dim=1).cpu().numpy()
    return {"loss": value, **classification_metrics(y.cpu().numpy(), probs)}


def sync(device: torch.device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
