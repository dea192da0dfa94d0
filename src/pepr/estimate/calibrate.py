"""Calibration: a few timed training steps and evaluation batches per model on this device.

Each model runs pepr.train.run's own loops (:mod:`pepr.train.loop`) with the sweep's precision on random
images, after warm-up; the device's power over the timed batches is measured with CodeCarbon's
offline tracker (:class:`pepr.train.measure.EnergyMeter`) or given. A model that cannot run is a
``failed`` :class:`Calibration` with the reason, never dropped. torch is imported inside the
functions that need it.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, fields

from pepr.errors import PeprInputError
from pepr.estimate.jobs import Job

_JOULES_PER_KWH = 3.6e6


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
    images. Both are measured with pepr.train.run's own loops (same precision and memory layout). ``power_w``: mean power of the
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


def calibration_specs(jobs: Iterable[Job]) -> list[CalibrationSpec]:
    """The distinct calibrations a list of jobs needs, in first-seen order (one per cost key,
    with the largest number of classes among its jobs)."""
    classes: dict[tuple, int] = {}
    for job in jobs:
        classes[job.cost_key] = max(classes.get(job.cost_key, 0), job.num_classes)
    return [CalibrationSpec(*key, num_classes=n) for key, n in classes.items()]


def _describe_failure(exc: BaseException, spec: CalibrationSpec, stage: str) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if len(text) > 300:
        text = text[:297] + "..."
    if "out of memory" in text.lower():
        return f"out of memory while {stage} at {spec.image_size} px, batch {spec.batch_size}: {text}"
    return f"cannot run while {stage} at {spec.image_size} px, batch {spec.batch_size}: {type(exc).__name__}: {text}"


def _random_splits(spec: CalibrationSpec, device, n_train: int, n_eval: int):
    """pepr.train.loop.DeviceSplits of random uint8 images (content does not change the cost)."""
    import torch

    from pepr.train.loop import DeviceSplits

    generator = torch.Generator().manual_seed(0)

    def images(n: int):
        return torch.randint(
            0, 256, (n, spec.in_chans, spec.image_size, spec.image_size), generator=generator, dtype=torch.uint8
        ).to(device)

    def labels(n: int):
        return torch.randint(0, spec.num_classes, (n,), generator=generator).to(device)

    eval_x = images(n_eval)
    return DeviceSplits(
        train_x=images(n_train),
        train_y=labels(n_train),
        val_x=eval_x,
        val_y=labels(n_eval),
        test_x=eval_x,
        test_y=labels(n_eval),
        mean=torch.full((1, spec.in_chans, 1, 1), 0.5, device=device),
        std=torch.full((1, spec.in_chans, 1, 1), 0.25, device=device),
        scale=1.0 / 255.0,
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
    precision: str = "fp32",
) -> Calibration:
    """Calibrate one spec on ``device_name`` (``cpu``, ``cuda``, ``cuda:1``).

    Runs pepr.train.run's own loops (:func:`pepr.train.loop.train_epoch`, :func:`pepr.train.loop.predict`) with
    its precision policy (:func:`pepr.train.loop.select_precision` of ``precision``, the sweep's
    ``fp32`` or ``bf16``; channels_last on CUDA) on random images: ``warmup``
    untimed training steps and one untimed evaluation batch, then ``batches`` timed training steps
    (repeated until ``min_seconds`` have passed) and ``max(1, batches // 2)`` timed evaluation
    batches of ``spec.eval_batch_size``. ``build_model(spec)`` returns the torch module as
    training builds it (random weights: initialisation does not change the cost). ``power``
    (optional) is a factory ``power(task_name)`` of a context manager that has ``power_w`` and
    ``method`` after exit; it spans the timed batches only. Any exception while building or
    running the model gives a ``failed`` calibration with the reason (the others go on).
    """
    import torch

    from pepr.train import loop

    if batches < 1 or warmup < 0 or min_seconds < 0:
        raise PeprInputError(
            f"calibration needs batches >= 1, warmup >= 0, min_seconds >= 0 (got {batches}, {warmup}, {min_seconds})"
        )
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
        numerics = loop.select_precision(device.type, bool(cuda and torch.cuda.is_bf16_supported()), precision)
        model = model.to(device)
        if numerics.channels_last:
            model = model.to(memory_format=torch.channels_last)
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        n_eval_batches = max(1, batches // 2)
        stage = "creating the calibration batches"
        splits = _random_splits(spec, device, batches * spec.batch_size, n_eval_batches * spec.eval_batch_size)
        warm = loop.DeviceSplits(
            **{
                **vars(splits),
                "train_x": splits.train_x[: max(warmup, 1) * spec.batch_size],
                "train_y": splits.train_y[: max(warmup, 1) * spec.batch_size],
            }
        )
        generator = torch.Generator().manual_seed(0)
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        stage = "warming up (training step)"
        if warmup:
            loop.train_epoch(model, optimizer, warm, spec.batch_size, generator, numerics)
        stage = "warming up (evaluation)"
        loop.predict(model, splits.val_x[: spec.eval_batch_size], splits, numerics, spec.eval_batch_size)
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
                loop.train_epoch(model, optimizer, splits, spec.batch_size, generator, numerics)
                _synchronize(device)
                steps += batches
            train_s = (time.perf_counter() - loop_start) / steps
            stage = "timing evaluation"
            eval_start = time.perf_counter()
            loop.predict(model, splits.val_x, splits, numerics, spec.eval_batch_size)
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
    """Mean power over each model's timed batches, from pepr.train.measure's CodeCarbon meter.

    One :class:`pepr.train.measure.EnergyMeter` (CodeCarbon's offline tracker, as training uses) is
    shared by all calibrations, one span per model.
    """

    def __init__(self, country: str) -> None:
        from pepr.train.measure import EnergyMeter

        self.meter = EnergyMeter(country)
        self.meter.start()
        self.method = f"measured by CodeCarbon during calibration ({self.meter.method()})"

    def __call__(self, task_name: str) -> _PowerSpan:
        return _PowerSpan(self, task_name)

    def stop(self) -> None:
        self.meter.close()


class _PowerSpan:
    """Context measuring the mean power over one span of the shared meter."""

    def __init__(self, owner: _MeasuredPower, name: str) -> None:
        self.owner, self.name = owner, f"calibrate:{name}"
        self.power_w, self.method = math.nan, owner.method

    def __enter__(self) -> _PowerSpan:
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
    precision: str = "fp32",
) -> list[Calibration]:
    """Calibrate every spec on one device; return one :class:`Calibration` per spec, in order.

    Power: ``power_w`` given -> that figure for every model (method "given"); otherwise one
    CodeCarbon offline tracker measures each model's timed batches (method says whether
    CodeCarbon measured it, e.g. NVML/RAPL, or modelled it, e.g. cpu_load x TDP). ``precision``
    is the sweep's training numerics (``fp32`` or ``bf16``, the config's ``precision``).
    """
    power_source: _MeasuredPower | None = None
    if power_w is None:
        power_source = _MeasuredPower(country)
    results: list[Calibration] = []
    try:
        for index, spec in enumerate(specs, 1):
            result = calibrate_one(
                spec,
                device_name,
                build_model,
                batches=batches,
                warmup=warmup,
                min_seconds=min_seconds,
                lr=lr,
                power=power_source,
                precision=precision,
            )
            if power_w is not None and result.ok:
                result = _replace(result, power_w=float(power_w), power_method=f"given: {power_w:g} W (--power-w)")
            results.append(result)
            if progress is not None:
                what = (
                    f"{result.train_s_per_batch * 1000:.1f} ms/train batch, {result.eval_s_per_batch * 1000:.1f} ms/eval batch, "
                    f"{result.power_w:.0f} W"
                    + (f", CPU share {result.cpu_share:.0%}" if result.cpu_share == result.cpu_share else "")
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


def build_training_model(spec: CalibrationSpec):
    """Build a model exactly as pepr.train.run does (:func:`pepr.train.models.create_model`), randomly initialised."""
    from pepr.train.models import create_model

    model, _ = create_model(spec.model, "scratch", spec.num_classes, spec.in_chans, spec.image_size)
    return model
