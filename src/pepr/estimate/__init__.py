"""``pepr estimate``: what a sweep will cost (device-hours, kWh, kg CO2) before it is launched.

Four parts, each usable on its own:

1. **Jobs** (:mod:`pepr.estimate.jobs`): a validated workflow config -> one :class:`Job` per
   training job (dataset x init x fraction x model x seed, plus the transfer strategy's
   pretraining), with the batch counts pepr.train.loop and pepr.datasets.core's rules give.
2. **Calibration** (:mod:`pepr.estimate.calibrate`): on the current device, each model runs a
   few timed training steps and evaluation batches with pepr.train.run's own loops at the sweep's
   image size, batch size and precision, after warm-up, on random tensors; power is measured with
   CodeCarbon's offline tracker or given (``power_w``). A model that cannot run is recorded as
   failed with the reason; it is never dropped.
3. **Arithmetic and report** (:mod:`pepr.estimate.cost`): every job costs ``epochs x (train
   batches x train s/batch + eval batches x eval s/batch) + job overhead`` seconds; energy =
   time x power x PUE; CO2 = energy x carbon intensity (the config's series, else the country's
   average in CodeCarbon's table); K, the cells per SLURM allocation, so that an allocation lasts
   about ``cluster.allocation_minutes``.
4. **Comparison** (:mod:`pepr.estimate.compare`): after the sweep, estimate vs measurement per
   model, from ``results/estimate.csv`` and ``results/runs.csv``.

:func:`run_estimate` (:mod:`pepr.estimate.run`) chains 1-3 for the CLI and the workflow rule.
torch, timm and codecarbon are imported inside the functions that need them, so importing this
package, the arithmetic and the comparison stay light.
"""

from __future__ import annotations

from pepr.estimate.calibrate import (
    Calibration,
    CalibrationSpec,
    build_training_model,
    calibrate_models,
    calibrate_one,
    calibration_specs,
    device_label,
)
from pepr.estimate.compare import COMPARED, compare_estimate, compare_files, plot_comparison
from pepr.estimate.cost import (
    BUSY_CPU_SHARE,
    EstimateAssumptions,
    carbon_intensity_g_per_kwh,
    estimate_jobs,
    format_report,
    summarise_by_model,
    totals,
)
from pepr.estimate.jobs import (
    JOB_KEYS,
    DatasetFacts,
    GridJobs,
    Job,
    dataset_facts,
    eval_batch_size,
    eval_batches,
    jobs_from_config,
    train_batches,
)
from pepr.estimate.run import EstimateResult, EstimateSettings, run_estimate

__all__ = [
    "Job",
    "CalibrationSpec",
    "Calibration",
    "EstimateAssumptions",
    "carbon_intensity_g_per_kwh",
    "calibration_specs",
    "calibrate_one",
    "calibrate_models",
    "estimate_jobs",
    "summarise_by_model",
    "totals",
    "format_report",
    "compare_estimate",
    "plot_comparison",
    "compare_files",
    "COMPARED",
    "JOB_KEYS",
    "BUSY_CPU_SHARE",
    "DatasetFacts",
    "dataset_facts",
    "GridJobs",
    "jobs_from_config",
    "EstimateSettings",
    "EstimateResult",
    "run_estimate",
    "build_training_model",
    "device_label",
    "train_batches",
    "eval_batches",
    "eval_batch_size",
]
