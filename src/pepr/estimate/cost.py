"""Cost arithmetic and the printed report: jobs x calibrations -> time, energy, CO2, and K.

Pure arithmetic on :class:`~pepr.estimate.jobs.Job` and
:class:`~pepr.estimate.calibrate.Calibration` (pandas only, never torch), so it is testable on
hand-made calibrations.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields

import pandas as pd

from pepr.errors import PeprInputError
from pepr.estimate.calibrate import Calibration
from pepr.estimate.jobs import Job, eval_batches, train_batches

#: Below this CPU share the calibration's machine was busy and the report warns.
BUSY_CPU_SHARE = 0.8

_SECONDS_PER_HOUR = 3600.0
_JOULES_PER_KWH = 3.6e6


@dataclass(frozen=True)
class EstimateAssumptions:
    """Settings of the arithmetic that are not measured, printed with every estimate.

    ``job_overhead_s`` is added once per job (process start, imports, data loading, model
    creation; not in the calibration). ``pue`` multiplies energy (1.0 = the device alone, as
    CodeCarbon reports by default). ``carbon_intensity_g_per_kwh`` sets CO2; ``carbon_source``
    says where it comes from (empty: the ``country``'s average in CodeCarbon's table).
    ``allocation_minutes`` is the target length of one SLURM allocation for the K
    recommendation (:func:`recommend_cells_per_allocation`).
    """

    country: str
    carbon_intensity_g_per_kwh: float
    job_overhead_s: float = 0.0
    pue: float = 1.0
    carbon_source: str = ""
    allocation_minutes: float = 30.0

    def __post_init__(self) -> None:
        if not (self.job_overhead_s >= 0 and math.isfinite(self.job_overhead_s)):
            raise PeprInputError(f"job overhead must be a non-negative number of seconds, got {self.job_overhead_s}")
        if not (self.pue >= 1.0 and math.isfinite(self.pue)):
            raise PeprInputError(f"PUE must be a number >= 1.0, got {self.pue}")
        if not (self.carbon_intensity_g_per_kwh >= 0 and math.isfinite(self.carbon_intensity_g_per_kwh)):
            raise PeprInputError(f"carbon intensity must be >= 0 g/kWh, got {self.carbon_intensity_g_per_kwh}")
        if not (self.allocation_minutes > 0 and math.isfinite(self.allocation_minutes)):
            raise PeprInputError(
                f"cluster.allocation_minutes must be a positive number of minutes, got {self.allocation_minutes}"
            )

    @property
    def carbon_text(self) -> str:
        """Where the carbon intensity comes from, for the report."""
        return self.carbon_source or f"the average grid intensity of {self.country} in CodeCarbon's energy-mix table"


def carbon_intensity_g_per_kwh(country_iso_code: str) -> float:
    """Average grid carbon intensity (g CO2eq per kWh) of a country, from CodeCarbon's table.

    ``country_iso_code`` is a 3-letter ISO code (e.g. ``DNK``), the same value CodeCarbon's
    offline tracker takes. Raises :class:`PeprInputError` for a code CodeCarbon does not know.
    """
    from pepr.results.carbon import country_intensity_g_per_kwh

    return country_intensity_g_per_kwh(str(country_iso_code).strip().upper())


def series_mean_g_per_kwh(times: Sequence[float], values: Sequence[float], step_s: float) -> float:
    """Time-weighted mean of a carbon-intensity series (value ``i`` holds from ``times[i]`` to
    ``times[i + 1]``, the last one for ``step_s``), as :class:`pepr.results.carbon.IntensitySeries`
    defines it. A sweep's start is not known in advance, so its estimate uses the mean."""
    spans = [b - a for a, b in zip(times, times[1:])] + [step_s]
    return sum(v * d for v, d in zip(values, spans)) / sum(spans)


def carbon_intensity_from_series(path: str) -> tuple[float, str]:
    """(g/kWh, description) of the config's ``carbon_intensity`` CSV, read with
    :func:`pepr.results.carbon.read_carbon_intensity` (the same reader and checks training uses)."""
    from pepr.results.carbon import read_carbon_intensity

    series = read_carbon_intensity(path)
    mean = series_mean_g_per_kwh(series.times, series.values, series.step_s)
    return mean, (
        f"the time-weighted mean of the carbon intensity series {path} ({len(series.values)} values; "
        "the training itself charges each epoch the value at its time)"
    )


def estimate_jobs(
    jobs: Sequence[Job], calibrations: Sequence[Calibration], assumptions: EstimateAssumptions
) -> pd.DataFrame:
    """One row per job: the job's columns, its calibration, and the estimated cost.

    Per job and epoch: :func:`train_batches` training steps and :func:`eval_batches` evaluation
    batches (val + test after every epoch, as pepr.train.run does; a partial last batch counts as a
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
        row.update(
            country=assumptions.country,
            carbon_intensity_g_per_kwh=assumptions.carbon_intensity_g_per_kwh,
            job_overhead_s=assumptions.job_overhead_s,
            pue=assumptions.pue,
        )
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


@dataclass(frozen=True)
class AllocationAdvice:
    """Recommended cells per SLURM allocation (K) and the figures it comes from.

    ``mean_cell_s`` / ``max_cell_s``: mean and longest estimated time of one cell (job),
    overhead included, over the jobs that calibrated. ``allocation_s`` = ``K x mean_cell_s``,
    the expected length of one packed allocation.
    """

    k: int
    allocation_minutes: float
    mean_cell_s: float
    max_cell_s: float
    jobs: int

    @property
    def allocation_s(self) -> float:
        """Expected length of one allocation of K cells."""
        return self.k * self.mean_cell_s

    def report_lines(self) -> list[str]:
        """The report's lines: K, the formula with its numbers, and a warning for long cells."""
        target_s = self.allocation_minutes * 60.0
        lines = [
            f"Cells per SLURM allocation: K = {self.k}",
            f"  K = max(1, floor(cluster.allocation_minutes x 60 / mean time per cell)) = max(1, floor({target_s:g} s / "
            f"{self.mean_cell_s:.1f} s)) = {self.k}; one allocation then lasts about {self.allocation_s / 60:.1f} min "
            f"(mean over the {self.jobs} estimated jobs, job overhead included).",
        ]
        if self.max_cell_s > target_s:
            lines.append(
                f"  NOTE: the longest cell alone takes ~{self.max_cell_s / 60:.1f} min, more than "
                f"{self.allocation_minutes:g} min: give allocations a time limit of at least that (or raise "
                "cluster.allocation_minutes); a cell cut off by the limit resumes from its last epoch."
            )
        return lines


def recommend_cells_per_allocation(estimate: pd.DataFrame, allocation_minutes: float) -> AllocationAdvice | None:
    """K, the cells to pack into one SLURM allocation so that it lasts about ``allocation_minutes``.

    ``K = max(1, floor(allocation_minutes x 60 / mean est_time_s))`` over the jobs that
    calibrated: allocations pack cells one after another, and which cells share an allocation
    is not known in advance, so the mean cell time sets K; floor keeps an average allocation
    within the target. None when no job has an estimate.
    """
    if not (allocation_minutes > 0 and math.isfinite(allocation_minutes)):
        raise PeprInputError(
            f"cluster.allocation_minutes must be a positive number of minutes, got {allocation_minutes}"
        )
    if estimate.empty or "est_time_s" not in estimate.columns:
        return None
    times = pd.to_numeric(estimate.loc[estimate["status"] == "ok", "est_time_s"], errors="coerce").dropna()
    times = times[times > 0]
    if times.empty:
        return None
    mean = float(times.mean())
    k = max(1, int(math.floor(allocation_minutes * 60.0 / mean)))
    return AllocationAdvice(
        k=k,
        allocation_minutes=float(allocation_minutes),
        mean_cell_s=mean,
        max_cell_s=float(times.max()),
        jobs=int(len(times)),
    )


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
    header = (
        f"{'model':<34} {'jobs':>5} {'s/train batch':>13} {'power W':>8} {hours_label:>10} {'kWh':>10} {'kg CO2':>9}"
    )
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
    advice = recommend_cells_per_allocation(estimate, assumptions.allocation_minutes)
    if advice is not None:
        lines += ["", *advice.report_lines()]
    methods = sorted({m for m in estimate.get("power_method", pd.Series(dtype=str)).dropna() if m})
    lines += ["", "Assumptions:"]
    lines.append(
        "  time per job = epochs x (ceil(n_train / batch) x s per training step + (ceil(n_val / eval batch) + "
        "ceil(n_test / eval batch)) x s per eval batch) + job overhead, as pepr.train.run runs a job (val and test "
        "evaluated after every epoch, eval batch = max(batch, 256)); steps timed with pepr.train.run's own loops "
        "(same precision and memory layout) after warm-up, on random images at the configured image size and batch size."
    )
    lines.append(
        f"  job overhead: {assumptions.job_overhead_s:g} s per job (process start, imports, data loading; "
        "set with --job-overhead-s)."
    )
    lines.append(f"  power: {'; '.join(methods) if methods else 'n/a'}; PUE {assumptions.pue:g}.")
    lines.append(f"  CO2: {assumptions.carbon_intensity_g_per_kwh:g} g/kWh, {assumptions.carbon_text}.")
    lines.append(f"  device: timings are for {device_label}; another GPU/CPU type needs its own calibration.")
    lines += [f"  {note}" for note in notes]
    return "\n".join(lines)
