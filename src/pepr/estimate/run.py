"""The whole estimate, as the CLI and the workflow rule run it: config -> jobs -> calibrations -> report."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pepr.errors import PeprInputError
from pepr.estimate.calibrate import (
    Calibration,
    CalibrationSpec,
    build_training_model,
    calibrate_models,
    calibration_specs,
    device_label,
)
from pepr.estimate.cost import (
    AllocationAdvice,
    EstimateAssumptions,
    carbon_intensity_from_series,
    carbon_intensity_g_per_kwh,
    estimate_jobs,
    format_report,
    recommend_cells_per_allocation,
    summarise_by_model,
)
from pepr.estimate.jobs import jobs_from_config


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
    #: (short name, (TRAIN, VAL, TEST[, SIZE[, CHANNELS]])) for datasets whose file is not there yet
    dataset_sizes: tuple[tuple[str, tuple[int, ...]], ...] = ()

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
            from pepr.train.devices import parse_device

            parse_device(self.device)


@dataclass
class EstimateResult:
    """Per-job table, per-model summary and the printed report of one estimate; ``allocation``
    is the recommended K (cells per SLURM allocation), None when no model calibrated."""

    table: pd.DataFrame
    by_model: pd.DataFrame
    report: str
    calibrations: list[Calibration]
    allocation: AllocationAdvice | None = None


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
        config,
        schema_path,
        source=source,
        models=settings.models,
        max_models=settings.max_models,
        cache_dir=cache_dir,
        dataset_sizes=dict(settings.dataset_sizes),
    )
    config = grid_jobs.config
    country = (settings.country or config["country"]).strip().upper()
    series_path = config.get("carbon_intensity")
    if series_path and not settings.country:
        # The sweep charges CO2 by the config's series (pepr train --carbon-intensity): so does its estimate.
        intensity, carbon_source = carbon_intensity_from_series(str(series_path))
    else:
        intensity, carbon_source = carbon_intensity_g_per_kwh(country), ""
    assumptions = EstimateAssumptions(
        country=country,
        carbon_intensity_g_per_kwh=intensity,
        carbon_source=carbon_source,
        job_overhead_s=settings.job_overhead_s,
        pue=settings.pue,
        allocation_minutes=float((config.get("cluster") or {}).get("allocation_minutes", 30)),
    )
    import torch

    from pepr.train.devices import resolve_device

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
        specs,
        device,
        build_model or build_training_model,
        batches=settings.batches,
        warmup=settings.warmup,
        min_seconds=settings.min_seconds,
        lr=float(config["lr"]),
        power_w=settings.power_w,
        country=country,
        progress=progress,
        precision=str(config.get("precision", "fp32")),
    )
    table = estimate_jobs(grid_jobs.jobs, calibrations, assumptions)
    notes = list(grid_jobs.notes)
    if threads is not None:
        job_threads = int(config["resources"]["train"]["cpus"])
        if threads == job_threads:
            notes.append(
                f"CPU calibration used {threads} torch thread(s), as each training job does (resources.train.cpus)."
            )
        else:
            notes.append(
                f"CPU calibration used {threads} torch thread(s) (--threads), but the training jobs are configured "
                f"with {job_threads} (resources.train.cpus): their times will differ."
            )
    subset = len({job.model for job in grid_jobs.jobs}) < len(grid_jobs.grid_models)
    report = format_report(
        table,
        assumptions,
        device_label=device_label(device, threads),
        grid_models=len(grid_jobs.grid_models) if subset else None,
        grid_jobs=grid_jobs.grid_jobs if subset else None,
        notes=notes,
    )
    from pepr.results.adaptive import adaptive_settings, estimate_lines

    adaptive = adaptive_settings(config)
    if adaptive is not None:  # an adaptive sweep: its expected cost next to the full grid's
        report = report + "\n\n" + "\n".join(estimate_lines(table, adaptive.policy))
    return EstimateResult(
        table=table,
        by_model=summarise_by_model(table),
        report=report,
        calibrations=calibrations,
        allocation=recommend_cells_per_allocation(table, assumptions.allocation_minutes),
    )
