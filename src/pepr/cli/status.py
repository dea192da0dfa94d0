"""``pepr status``: how far a sweep is, what it has cost so far, and when it will be done."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "show a sweep's progress: every job finished / failed / running / pending, cost so far, ETA"

DESCRIPTION = """\
Show where a sweep stands, read-only and in seconds (no torch, no timm, no data files read):

  * every job of the config's grid (training cells and the transfer init's pretraining runs):
    finished, failed (with the reason: the model could not run, or the job crashed: the last
    line of its log), running, or pending (interrupted jobs continue from their checkpoint);
  * the energy (kWh), CO2 (kg) and device-hours spent so far, against the estimate in
    results/estimate.csv when there is one (`pepr estimate ... -o results/estimate.csv` or
    `snakemake estimate_cost`);
  * an ETA: the estimate's time of each job left x (measured / estimated time of the finished
    jobs), or, without an estimate, the mean training time of the finished jobs x the jobs
    left; divided by the jobs in parallel (--parallel, default the jobs running now).

It reads each job's metrics.json, Snakemake's markers in .snakemake/ (incomplete/ and locks/),
the run folders' training locks, and, for jobs Snakemake submitted to SLURM, one `squeue` call
(5 s timeout). Run it in the folder you run Snakemake in, with the same --configfile.
Finished jobs' figures are cached in .snakemake/pepr/status-cache.json, so a second call on a
large sweep only stats each job.

examples:
  pepr status
  pepr status --configfile config/paper.yaml --parallel 40
  pepr status --configfile .test/config.yaml -o status.csv
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare ``pepr status``'s arguments."""
    parser.add_argument(
        "--configfile",
        metavar="FILE",
        action="append",
        default=None,
        help="the sweep's workflow config, as given to snakemake (default: config/config.yaml); "
        "repeat to merge several",
    )
    parser.add_argument(
        "--results", metavar="DIR", default="results", help="the results folder of the sweep (default: results)"
    )
    parser.add_argument(
        "--snakemake-dir",
        metavar="DIR",
        default=".snakemake",
        help="Snakemake's state folder of the sweep (default: .snakemake)",
    )
    parser.add_argument(
        "--estimate",
        metavar="CSV",
        default=None,
        help="per-job estimate table to compare with (default: RESULTS/estimate.csv when present)",
    )
    parser.add_argument(
        "--parallel",
        metavar="N",
        type=int,
        default=None,
        help="jobs that run at once, for the ETA (default: the jobs running now, at least 1)",
    )
    parser.add_argument("--no-squeue", action="store_true", help="do not ask SLURM's squeue about submitted jobs")
    parser.add_argument(
        "--max-listed", metavar="N", type=int, default=20, help="failed and running jobs listed by name (default: 20)"
    )
    parser.add_argument(
        "-o", "--output", metavar="CSV", default=None, help="also write one row per job to this CSV file"
    )
    parser.add_argument(
        "--schema", metavar="PATH", default=None, help="the workflow's config schema (default: the checkout's)"
    )


def sweep_jobs(config: dict, schema: Path) -> list[tuple[str, str, str, str]]:
    """(kind, key below the results folder, model, metrics.json as the workflow names it) per job.

    The grid is expanded as the workflow expands it (defaults from the schema, then
    :func:`pepr.plan.grid.build_grid`), without validating anything: no timm catalogue, no data file
    read, and none of planning's checks (status only reads what the sweep left behind).
    """
    from pepr.plan.config import apply_defaults, load_schema
    from pepr.plan.grid import build_grid, dataset_info
    from pepr.results.runs import METRICS_FILE

    apply_defaults(config, load_schema(schema))
    specs = list(config["datasets"])
    if "transfer" in config["inits"]:
        specs.append(config["transfer"]["source"])
    grid = build_grid(config, datasets=dataset_info(dict.fromkeys(specs), config["data_dir"]))
    jobs = []
    for job in grid.pretrain_jobs:
        jobs.append(("pretrain", job.directory.split("/", 1)[1], job.model, job.metrics))
    for cell in grid.cells:
        directory = cell.directory  # computed once: 25,000 cells
        jobs.append(("cell", directory.split("/", 1)[1], cell.model, f"{directory}/{METRICS_FILE}"))
    return jobs


def run(args: argparse.Namespace) -> int:
    """Print the sweep's status (and write the per-job table); PeprInputError on bad input."""
    from pepr.cli.estimate import default_schema
    from pepr.errors import PeprInputError
    from pepr.plan.config import load_config
    from pepr.results.status import collect_status, format_status, write_status_table

    if args.parallel is not None and args.parallel < 1:
        raise PeprInputError(f"--parallel must be at least 1, got {args.parallel}")
    if args.output is not None:
        from pepr.results.tableio import check_writable

        check_writable(args.output, "--output")
    configfiles = args.configfile or ["config/config.yaml"]
    results = Path(args.results)
    if not results.is_dir():
        raise PeprInputError(
            f"results folder '{results}' does not exist: nothing has run yet here (run pepr status in the "
            "folder you run snakemake in, or give --results DIR)"
        )
    schema = Path(args.schema) if args.schema else default_schema()
    config = load_config(configfiles)
    jobs = sweep_jobs(config, schema)
    estimate = Path(args.estimate) if args.estimate else results / "estimate.csv"
    if args.estimate and not estimate.is_file():
        raise PeprInputError(f"--estimate '{estimate}' does not exist")
    smk = Path(args.snakemake_dir)
    status = collect_status(
        jobs,
        results_dir=results,
        snakemake_dir=smk,
        estimate_csv=estimate if estimate.is_file() else None,
        parallel=args.parallel or 1,
        use_squeue=not args.no_squeue,
        cache_file=smk / "pepr" / "status-cache.json" if smk.is_dir() else None,
    )
    print(format_status(status, max_listed=args.max_listed), flush=True)
    if args.output is not None:
        write_status_table(status, args.output)
    return 0
