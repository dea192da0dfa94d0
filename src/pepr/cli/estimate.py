"""``pepr estimate``: device-hours, kWh and kg CO2 of a sweep, calibrated on this device."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from pepr.cli.args import non_negative_float, non_negative_int, positive_float, positive_int

HELP = "estimate a sweep's device-hours, energy and CO2 before launching it"

DESCRIPTION = """\
Estimate what a sweep (a workflow config) will cost before it is launched: device-hours
(GPU-hours on a GPU), kWh and kg CO2, per model and in total.

Each model of the grid is calibrated on this device: a few timed training steps (forward,
backward, Adam step) and evaluation batches at the configured image size and batch size, after
warm-up, on random images. Every job then costs

    epochs x (train steps x s per training step
              + (ceil(n_val / eval batch) + ceil(n_test / eval batch)) x s per eval batch)
    + job overhead

with train steps = ceil(n_train / batch) (a last batch of one image merged into the previous),
n_train the training images after the job's data fraction, and eval batch = max(batch, 256),
exactly as `pepr train` runs a job (val and test evaluated after every epoch). The steps are
timed with pepr train's own loops at the config's precision (fp32 or bf16; channels_last on CUDA),
as in training.
The job overhead (process start, imports, data loading) is 0 unless --job-overhead-s is given.

Energy = time x power, the power being measured with CodeCarbon's offline tracker during the
calibration (or given with --power-w); CO2 = energy x carbon intensity: the time-weighted mean
of the config's carbon_intensity series when it has one (training charges each epoch the value
at its time), else the country's average from CodeCarbon's table (--country overrides both).

The report recommends K, the cells to pack into one SLURM allocation:

    K = max(1, floor(cluster.allocation_minutes x 60 / mean estimated time per cell))

so that one allocation of K cells lasts about cluster.allocation_minutes (default 30); it
warns when a single cell takes longer than that.
Models that cannot run at this size are listed as FAILED, not dropped. The assumptions are
printed with the estimate, and a WARNING when the CPU was busy during calibration.

Output: the report on stdout; -o writes one row per job (the cell columns dataset, init,
fraction, model, seed as in results/runs.csv, the calibration and est_time_s,
est_device_hours, est_energy_kwh, est_co2_kg); --by-model the per-model summary. After the
sweep, `snakemake compare_estimate` compares results/estimate.csv with results/runs.csv.

The output paths are checked before calibrating (a folder, a path below a file or a read-only
folder exits 2 at once). When writing fails after calibrating (e.g. the disk filled up), the
tables are saved to the temporary folder instead and the message says where: the calibration is
not lost.

On a slow device, calibrate a subset (--models or --max-models): the total then covers only
those models, and a clearly labelled rough extrapolation to the whole grid is printed.

examples:
  pepr estimate --configfile config/config.yaml
  pepr estimate --configfile config/paper.yaml --max-models 10 -o results/estimate.csv
  pepr estimate --configfile config/paper.yaml --models resnet18 efficientnet_b0 \\
      --dataset-size lidc=6000,2000,2000,128 --device cuda

No data file is needed: MedMNIST datasets use MedMNIST's published split sizes until their file
is there, an npz file's sizes are read from the file, and one that does not exist yet (e.g. your
own data/lidc.npz) takes --dataset-size. Relative paths of the config are read from the working
directory, as the workflow reads them.
"""

SCHEMA_IN_REPO = "workflow/schemas/config.schema.yaml"


def default_schema() -> Path:
    """The workflow's config schema, found from any working directory.

    The checkout pepr runs from (an editable install or ``PYTHONPATH=src``: ``src/pepr/cli`` lies
    three levels below the repository root) first, then the working directory (a project folder
    used with a non-editable install).
    """
    beside_package = Path(__file__).resolve().parents[3] / SCHEMA_IN_REPO
    if beside_package.is_file():
        return beside_package
    return Path(SCHEMA_IN_REPO)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare ``pepr estimate``'s arguments."""
    parser.add_argument(
        "--configfile",
        metavar="FILE",
        action="append",
        required=True,
        help="workflow config (YAML); repeat to merge several, later ones overriding earlier ones",
    )
    parser.add_argument(
        "--schema",
        metavar="PATH",
        default=None,
        help=f"the workflow's config schema (default: {SCHEMA_IN_REPO} of the pepr checkout, else of the working directory)",
    )
    parser.add_argument(
        "--models",
        metavar="MODEL",
        nargs="+",
        default=None,
        help="calibrate and estimate only these models; a timm model that is not in the config "
        "is priced on the config's grid (its datasets, inits, fractions, seeds)",
    )
    parser.add_argument(
        "--dataset-size",
        metavar="NAME=TRAIN,VAL,TEST[,SIZE[,CHANNELS]]",
        action="append",
        default=[],
        help="split sizes (and image side, channels) of a dataset whose file is not there yet, e.g. "
        "lidc=6000,2000,2000,128 for npz:data/lidc.npz; MedMNIST datasets need none (their published sizes "
        "are used) and present files are read; repeat for several",
    )
    parser.add_argument(
        "--max-models",
        metavar="N",
        type=positive_int,
        default=None,
        help="calibrate and estimate only the grid's first N models (config order)",
    )
    parser.add_argument(
        "--device",
        default=None,
        help="device to calibrate on: auto (cuda when available, else cpu), cpu, cuda, cuda:N "
        "(default: the config's device)",
    )
    parser.add_argument(
        "--batches",
        metavar="N",
        type=positive_int,
        default=5,
        help="timed training steps and eval batches per model, after warm-up (default: 5)",
    )
    parser.add_argument(
        "--warmup",
        metavar="N",
        type=non_negative_int,
        default=2,
        help="untimed warm-up training steps per model (default: 2)",
    )
    parser.add_argument(
        "--min-seconds",
        metavar="S",
        type=non_negative_float,
        default=1.0,
        help="time training steps for at least S seconds (more than --batches if needed) so that the "
        "power reading covers a few samples (default: 1.0)",
    )
    parser.add_argument(
        "--threads",
        metavar="N",
        type=positive_int,
        default=None,
        help="CPU threads for calibration on cpu (default: the config's resources.train.cpus, as the jobs use)",
    )
    parser.add_argument(
        "--power-w",
        metavar="W",
        type=positive_float,
        default=None,
        help="use this power draw (watts, whole device: e.g. the GPU's TDP) instead of measuring it with CodeCarbon",
    )
    parser.add_argument(
        "--country",
        metavar="ISO3",
        default=None,
        help="country whose grid carbon intensity sets CO2 (default: the config's country)",
    )
    parser.add_argument(
        "--job-overhead-s",
        metavar="S",
        type=non_negative_float,
        default=0.0,
        help="seconds added per job for process start, imports, data loading and model creation (default: 0)",
    )
    parser.add_argument(
        "--pue",
        metavar="X",
        type=float,
        default=1.0,
        help="data-centre power usage effectiveness multiplying energy (default: 1.0 = device only)",
    )
    parser.add_argument(
        "-o",
        "--output",
        metavar="OUT",
        default=None,
        help="write one row per job here (.csv or .parquet), e.g. results/estimate.csv",
    )
    parser.add_argument(
        "--by-model", metavar="OUT", default=None, help="also write the per-model summary here (.csv or .parquet)"
    )


def run(args: argparse.Namespace) -> int:
    """Calibrate, estimate, print the report and write the tables; PeprInputError on bad input."""
    from pepr.errors import PeprInputError
    from pepr.results.tableio import check_writable

    # Cheap checks first: nothing is loaded or calibrated when a flag is wrong, and an output
    # that cannot be written is reported now, not after minutes of calibration.
    outputs = [(flag, path) for flag, path in (("--output", args.output), ("--by-model", args.by_model)) if path]
    for flag, path in outputs:
        check_writable(path, flag)
    if len(outputs) == 2 and Path(args.output).resolve() == Path(args.by_model).resolve():
        raise PeprInputError(f"--output and --by-model name the same file '{args.output}'; give two different files")
    if not (math.isfinite(args.pue) and args.pue >= 1.0):
        raise PeprInputError(f"--pue must be a number >= 1.0, got {args.pue}")

    from pepr import estimate as est
    from pepr.estimate.jobs import parse_dataset_size
    from pepr.plan.config import load_config

    dataset_sizes = dict(parse_dataset_size(text) for text in args.dataset_size)

    settings = est.EstimateSettings(
        models=tuple(args.models) if args.models else None,
        max_models=args.max_models,
        device=args.device,
        batches=args.batches,
        warmup=args.warmup,
        min_seconds=args.min_seconds,
        threads=args.threads,
        power_w=args.power_w,
        country=args.country,
        job_overhead_s=args.job_overhead_s,
        pue=args.pue,
        dataset_sizes=tuple(dataset_sizes.items()),
    )
    config = load_config(args.configfile)
    # The workflow's own cache of timm's model list (common.smk), when run in a workflow folder
    # (one with a Snakefile or a .snakemake/): elsewhere nothing is written into the folder.
    in_workflow = Path("Snakefile").is_file() or Path(".snakemake").is_dir()
    result = est.run_estimate(
        config,
        args.schema or default_schema(),
        settings,
        source=", ".join(args.configfile),
        cache_dir=Path(".snakemake") / "pepr" if in_workflow else None,
        progress=lambda line: print(f"pepr estimate: {line}", file=sys.stderr, flush=True),
    )
    print(result.report, flush=True)
    failures = []
    for table, path, what in (
        (result.table, args.output, f"{len(result.table)} job rows"),
        (result.by_model, args.by_model, "the per-model summary"),
    ):
        if path is not None:
            failure = _write_keeping_calibration(table, path)
            if failure:
                failures.append(failure)
            else:
                print(f"pepr estimate: wrote {what} to {path}", file=sys.stderr)
    if failures:
        raise PeprInputError("; ".join(failures))
    return 0


def _write_keeping_calibration(table, path: str) -> str:
    """Write ``table`` to ``path``; on failure (e.g. the disk filled up during calibration)
    save it to the temporary folder instead, so minutes of calibration are not lost, and
    return the one-line message saying so (empty on success)."""
    import os
    import tempfile

    from pepr.errors import PeprInputError
    from pepr.results.tableio import write_table

    try:
        write_table(table, path)
        return ""
    except PeprInputError as exc:
        rescue = Path(tempfile.gettempdir()) / f"pepr-estimate-{os.getpid()}-{Path(path).name}"
        try:
            write_table(table, rescue)
        except PeprInputError as again:
            return f"{exc}; saving it to {rescue} failed too ({again}); the report above has the per-model figures"
        return f"{exc}; the estimate is not lost: it was saved to {rescue}, copy it from there"
