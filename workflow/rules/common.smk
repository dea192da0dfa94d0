# Config -> validated grid of cells (pepr.plan.prepare.prepare_grid), shared by every stage.
# Snakemake's objects are reached only through pepr.plan.workflow (PEPR_WORKFLOW); what the rules
# decide is in pepr.plan.rules.
import os
import re
import sys
from pathlib import Path

from pepr.errors import PeprInputError
import pepr.plan.grid as pepr_grid
import pepr.datasets.images as pepr_images
import pepr.plan.prepare as pepr_plan
import pepr.plan.rerun as pepr_rerun
import pepr.plan.rules as pepr_rules
import pepr.plan.safeyaml as pepr_safeyaml
from pepr.plan.workflow import SnakemakeWorkflow
from pepr.results.runs import RUNS_DIR

PEPR_WORKFLOW = SnakemakeWorkflow(workflow)

# `--configfile X` REPLACES config/config.yaml instead of being merged into it (Snakemake's
# default merge would leak demo keys, e.g. an `include:` list, into a test or paper config).
# `--config key=value` overrides still apply on top. Keys not given take the schema defaults.
# The config files are read again by pepr's own loader (pepr.plan.safeyaml) before anything hashes or
# expands them: Snakemake's loader reads `lr: 1e-3` as text, keeps the last of two duplicate keys
# and does not bound YAML aliases (a 400-byte alias bomb hung the validation cache's hash).
try:
    _pepr_config = pepr_safeyaml.load_workflow_config(PEPR_WORKFLOW.config_files(), PEPR_WORKFLOW.config_overrides())
except PeprInputError as exc:
    print(f"pepr: {exc}", file=sys.stderr)
    raise SystemExit(1)
config.clear()
config.update(_pepr_config)
config["retrain"] = pepr_rules.retrain_choice(config.get("retrain"))

CONFIG_SOURCE = PEPR_WORKFLOW.config_source()

# Inside a job (SLURM re-parses this file on the node, twice) the driver has validated already.
_IN_JOB = PEPR_WORKFLOW.in_job

try:
    GRID = pepr_plan.prepare_grid(
        config,
        schema_path=PEPR_WORKFLOW.basedir / "workflow" / "schemas" / "config.schema.yaml",
        cache_dir=Path(".snakemake") / "pepr",
        validate=not _IN_JOB,
        source=CONFIG_SOURCE,
    )
except PeprInputError as exc:
    # One clear message listing every problem, before anything is scheduled.
    print(f"pepr: {exc}", file=sys.stderr)
    raise SystemExit(1)

# Training jobs given no GPU by a scheduler run on this machine: check a cuda device against its
# GPUs now (cheap, no torch), not in every job (SLURM jobs' GPUs are checked by pepr.plan.config).
if not _IN_JOB and pepr_rules.train_gpus_given(PEPR_WORKFLOW.resource_override("gpu"), config["resources"]) == 0:
    from pepr.plan.config import local_device_problems

    _device_problems = local_device_problems(config["device"])
    if _device_problems:
        print(f"pepr: {CONFIG_SOURCE}: " + "; ".join(_device_problems) + "; nothing was run", file=sys.stderr)
        raise SystemExit(1)

# HF_HOME/TORCH_HOME are always set, so `envvars:` asserts them and Snakemake passes them on to
# every job, also one started on another machine (pepr.plan.rules.cache_homes).
os.environ.update(pepr_rules.cache_homes(config["weights_dir"], os.environ))


envvars:
    "HF_HOME",
    "TORCH_HOME",


def rule_resources(kind):
    """Snakemake resources of a rule kind (train, pretrain, default) from config["resources"]."""
    spec = config["resources"][kind]
    return {"mem_mb": spec["mem_mb"], "runtime": spec["runtime"], "gpu": spec["gpu"]}


def rule_threads(kind):
    return config["resources"][kind]["cpus"]


# ----- data.smk's helpers: prefetch targets and a job's data input -----


def _alternatives(values):
    """A wildcard constraint matching exactly these values (nothing when there are none)."""
    return "|".join(re.escape(v) for v in values) or "(?!)"


# Only MISSING files get a producing rule: a file the user placed (or one downloaded earlier) is
# a plain input, so no timestamp, code or metadata change can make Snakemake delete and re-fetch
# it (offline that would lose the data). Paths are relative to the working directory, as here.
_MEDMNIST_FILES = {path: spec for path, spec in GRID.medmnist_files.items() if not os.path.exists(path)}


# folder:/csv: datasets: converted-file path -> spec (rule prepare_images, pepr.datasets.images).
_IMAGE_CACHES = GRID.converted_files


def image_content_key(wildcards):
    """prepare_images' params.content_key: the file list, sizes and mtimes (no image is read)."""
    return pepr_images.content_key(_IMAGE_CACHES[wildcards.image_cache], config["data_dir"])


def data_inputs(spec):
    """The data file a dataset spec reads, as a job input (none for synthetic data).

    ancient(): its timestamp never re-plans a finished cell (`touch`, `cp`, `rsync`); its
    content does, through the train rules' params record (pepr.plan.rerun: a SHA-256 of the file)."""
    path = GRID.data_file(spec)
    if path is None:
        return {}
    # Images edited since their conversion: not ancient, so the cells wait for prepare_images and
    # retrain in this same run (Snakemake never compares the params of a job downstream of one
    # that reruns, and an ancient input never makes it rerun).
    return {"data": path if GRID.source_changed(spec) else ancient(path)}


# ----- train.smk's input functions -----


def planning_hooks():
    """Run while Snakemake builds the DAG (from the train rules' input functions): refuse a
    second driver (--nolock beside a running sweep) in one line; apply the repairs."""
    collision = PEPR_WORKFLOW.second_driver()
    if collision:
        print(collision, file=sys.stderr)
        raise SystemExit(1)
    PEPR_WORKFLOW.apply_repairs()


def pretrain_inputs(wildcards):
    planning_hooks()
    job = GRID.pretrain_job(wildcards.source, wildcards.model)
    return data_inputs(job.source)


def cell_of(wildcards):
    return GRID.cell(wildcards.dataset, wildcards.init, wildcards.fraction, wildcards.model, wildcards.seed)


def train_inputs(wildcards):
    planning_hooks()
    cell = cell_of(wildcards)
    inputs = data_inputs(cell.dataset)
    if cell.init == "transfer":
        inputs["pretrain"] = cell.pretrain.metrics  # also passed as --pretrain-metrics
        pepr_rules.check_checkpoint(cell)
    elif cell.init == "imagenet":
        inputs["weights"] = f"results/weights/{cell.model}.json"
    return inputs


# ----- what retrains a finished cell (pepr.plan.rerun), retraining on purpose -----

# The set of runs and pretraining runs, as a param of the rules reading them all (the profiles
# have no `input` rerun trigger; this keeps "a cell left the config" a reason to re-aggregate).
GRID_RUNS_DIGEST = pepr_rerun.paths_digest(GRID.metrics_files + GRID.pretrain_metrics_files)

# A finished result that was lost (`rm metrics.json`) or edited in place (`: > metrics.json`) runs
# its job again, as --forcerun would but without --retrain: `pepr train` puts back the copy kept in
# the run folder's previous/ (verified by its hash), or trains when none of this training is kept.
if not _IN_JOB:
    _repair = pepr_rules.outputs_to_repair([c.directory for c in GRID.cells] + [j.directory for j in GRID.pretrain_jobs])
    for _output, _why in _repair.items():
        print(f"pepr: {_output}: finished result {_why}; its job runs again to restore it", file=sys.stderr)
    PEPR_WORKFLOW.force_repair(_repair)

# Content fingerprints of the data files (pepr.plan.rerun), computed once per file and remembered.
DATA_DIGESTS = pepr_rerun.DataDigests(Path(".snakemake") / "pepr", planned=GRID.planned_digests(config["data_dir"]))


def retrain_flag(rule_name, output, pretrain=None):
    """`{params.retrain}` (pepr.plan.workflow.RetrainFlag): `--config retrain=true|false`, else
    whether Snakemake forces this job on the user's --forcerun/-R/--forceall."""
    return PEPR_WORKFLOW.retrain_flag(rule_name, output, config.get("retrain"), pretrain)


def train_params(job, output):
    """params.train: the job's settings (pepr.plan.grid.TrainSettings), whose recorded text pepr
    compares by content (pepr.plan.rerun: training settings and data content, not country/data_dir)."""
    settings = pepr_grid.train_settings(job, config)
    return pepr_rerun.attach_record(
        settings, lambda: PEPR_WORKFLOW.recorded_params(output), output, GRID.data_file(settings["dataset"]), DATA_DIGESTS
    )


# ----- adaptive sweeps (pepr.results.adaptive): adaptive.smk's and train_model's helpers -----

import functools

import pepr.results.adaptive as pepr_adaptive
import pepr.results.runs as pepr_runs

# None for a full grid (adaptive.rungs empty, the default): nothing below changes its jobs.
ADAPTIVE = pepr_adaptive.adaptive_settings(config)
ADAPTIVE_RUNGS = [r for r in ADAPTIVE.policy.rungs] if ADAPTIVE else []
_GROUP_CELLS = {}
for _cell in GRID.cells:
    _GROUP_CELLS.setdefault((_cell.dataset_name, _cell.init, pepr_runs.format_fraction(_cell.fraction)), []).append(_cell)


def group_cells(wildcards):
    return _GROUP_CELLS[(wildcards.dataset, wildcards.init, wildcards.fraction)]


def rung_record_file(cell, rung):
    """A cell's rung record (pepr train --stop-after), beside its metrics.json."""
    return f"{cell.directory}/{pepr_adaptive.rung_file(rung)}"


def kept_models(dataset, init, fraction, rung):
    """The models kept at a rung, read from the checkpoint select_rung (Snakemake re-plans the
    jobs depending on it once it has run: the data-dependent part of the DAG)."""
    found = checkpoints.select_rung.get(dataset=dataset, init=init, fraction=fraction, rung=rung)
    path = found.output[0]
    return _kept_in(path, os.stat(path).st_mtime_ns)


@functools.lru_cache(maxsize=4096)
def _kept_in(path, mtime_ns):
    """A decision file's kept models, read once per version of the file (every cell of a group asks)."""
    return frozenset(pepr_adaptive.read_decision(path)["kept"])


def rung_candidates(wildcards):
    """select_rung's input: the rung records of the group's candidates still in contention and,
    after the first rung, the group's previous decision (its stopped candidates widen the range
    the projected resource is normalised over)."""
    rung = int(wildcards.rung)
    cells = group_cells(wildcards)
    earlier = [r for r in ADAPTIVE_RUNGS if r < rung]
    if not earlier:
        return {"records": [rung_record_file(cell, rung) for cell in cells]}
    kept = kept_models(wildcards.dataset, wildcards.init, wildcards.fraction, earlier[-1])
    previous = checkpoints.select_rung.get(dataset=wildcards.dataset, init=wildcards.init,
                                           fraction=wildcards.fraction, rung=earlier[-1]).output[0]
    return {"records": [rung_record_file(cell, rung) for cell in cells if cell.model in kept], "previous": previous}


def stopped_at(cell):
    """The rung an adaptive sweep stopped the cell at (None: it trains to the end); walks the
    group's decisions, raising Snakemake's incomplete-checkpoint signal while one is to come."""
    group = (cell.dataset_name, cell.init, pepr_runs.format_fraction(cell.fraction))
    for rung in ADAPTIVE_RUNGS:
        if cell.model not in kept_models(*group, rung):
            return rung
    return None


def rung_inputs(wildcards):
    """train_to_rung's input: the data (as train_model's) and, after the first rung, the cell's
    previous rung record (its checkpoint is that segment's)."""
    cell = cell_of(wildcards)
    inputs = train_inputs(wildcards)
    earlier = [r for r in ADAPTIVE_RUNGS if r < int(wildcards.rung)]
    if earlier:
        inputs["previous_rung"] = rung_record_file(cell, earlier[-1])
    return inputs


def adaptive_train_inputs(wildcards):
    """train_model's extra input in an adaptive sweep: the rung record the cell continues from
    (kept to the end) or is recorded from (stopped); nothing for a full grid. The decisions are
    read (checkpoints), not inputs: a re-decision (a raised keep) rewrites them, and an input
    "updated by another job" would re-run every cell of the group instead of the newly kept."""
    if not ADAPTIVE:
        return {}
    cell = cell_of(wildcards)
    stopped = stopped_at(cell)
    last = stopped if stopped is not None else ADAPTIVE_RUNGS[-1]
    return {"rung": rung_record_file(cell, last)}


class _NotRecorded:
    """An empty params text Snakemake leaves out of its record (no builtin type)."""

    def __str__(self):
        return ""

    def __format__(self, spec):
        return format("", spec)


def adaptive_flag(wildcards):
    """train_model's params.adaptive: " --stopped-at N" for a cell the adaptive sweep stopped
    (recorded: a later decision that keeps it re-plans the cell, which continues from its
    checkpoint); nothing recorded otherwise, so full grids and kept cells keep their records."""
    if not ADAPTIVE:
        return _NotRecorded()
    stopped = stopped_at(cell_of(wildcards))
    return f" --stopped-at {stopped}" if stopped is not None else _NotRecorded()


def adaptive_params():
    """select_rung's params: the settings a decision depends on (recorded: changing keep re-decides)."""
    return {"keep": ADAPTIVE.policy.keep, "min_keep": ADAPTIVE.policy.min_keep, "resource": ADAPTIVE.resource,
            "select_by": ADAPTIVE.select_by, "epochs": config["epochs"]}
