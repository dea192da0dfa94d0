# Config -> validated grid of cells (pepr.plan.prepare_grid), shared by every stage.
import os
import re
import sys
from pathlib import Path

from pepr.errors import PeprInputError
import pepr.grid as pepr_grid
import pepr.images as pepr_images
import pepr.plan as pepr_plan
import pepr.safeyaml as pepr_safeyaml
from pepr.runs import RUNS_DIR

# `--configfile X` REPLACES config/config.yaml instead of being merged into it (Snakemake's
# default merge would leak demo keys, e.g. an `include:` list, into a test or paper config).
# `--config key=value` overrides still apply on top. Keys not given take the schema defaults.
# The config files are read again by pepr's own loader (pepr.safeyaml) before anything hashes or
# expands them: Snakemake's loader reads `lr: 1e-3` as text, keeps the last of two duplicate keys
# and does not bound YAML aliases (a 400-byte alias bomb hung the validation cache's hash).
# (without --configfile: the Snakefile's `configfile:`, as Snakemake found it)
_PEPR_CONFIG_FILES = list(workflow.config_settings.configfiles) or list(workflow.configfiles)
try:
    _pepr_config = pepr_safeyaml.load_workflow_config(_PEPR_CONFIG_FILES, workflow.config_settings.config)
except PeprInputError as exc:
    print(f"pepr: {exc}", file=sys.stderr)
    raise SystemExit(1)
config.clear()
config.update(_pepr_config)

CONFIG_SOURCE = ", ".join(str(p) for p in workflow.config_settings.configfiles) or "config/config.yaml"

# Inside a job (SLURM re-parses this file on the node, twice) the driver has validated already.
_IN_JOB = workflow.remote_exec or workflow.subprocess_exec

try:
    GRID = pepr_plan.prepare_grid(
        config,
        schema_path=Path(workflow.basedir) / "workflow" / "schemas" / "config.schema.yaml",
        cache_dir=Path(".snakemake") / "pepr",
        validate=not _IN_JOB,
        source=CONFIG_SOURCE,
    )
except PeprInputError as exc:
    # One clear message listing every problem, before anything is scheduled.
    print(f"pepr: {exc}", file=sys.stderr)
    raise SystemExit(1)

# timm/huggingface_hub read their cache location from HF_HOME (torch.hub from TORCH_HOME, for
# the few URL-hosted weights); jobs (also on SLURM) find what fetch_weights put there. With
# `weights_dir` both point into it; without, at the libraries' own default (or the user's
# setting). Either way they are set, so `envvars:` asserts them and Snakemake passes them on to
# every job, also one started on another machine.
_CACHE_HOME = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
if config["weights_dir"]:
    _HF_HOME = os.path.abspath(os.path.join(config["weights_dir"], "huggingface"))
    _TORCH_HOME = os.path.abspath(os.path.join(config["weights_dir"], "torch"))
else:
    _HF_HOME = os.environ.get("HF_HOME") or os.path.join(_CACHE_HOME, "huggingface")
    _TORCH_HOME = os.environ.get("TORCH_HOME") or os.path.join(_CACHE_HOME, "torch")
os.environ["HF_HOME"] = _HF_HOME
os.environ["TORCH_HOME"] = _TORCH_HOME


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


# folder:/csv: datasets: converted-file path -> spec (rule prepare_images, pepr.images).
_IMAGE_CACHES = {item["file"]: spec for spec, item in GRID.datasets.items() if item["kind"] in pepr_images.KINDS}


def image_content_key(wildcards):
    """prepare_images' params.content_key: the file list, sizes and mtimes (no image is read)."""
    return pepr_images.content_key(_IMAGE_CACHES[wildcards.image_cache], config["data_dir"])


def data_inputs(spec):
    """The data file a dataset spec reads, as a job input (none for synthetic data)."""
    path = GRID.data_file(spec)
    return {"data": path} if path is not None else {}


# ----- train.smk's input functions -----


def pretrain_inputs(wildcards):
    job = GRID.pretrain_job(wildcards.source, wildcards.model)
    return data_inputs(job.source)


def cell_of(wildcards):
    return GRID.cell(wildcards.dataset, wildcards.init, wildcards.fraction, wildcards.model, wildcards.seed)


def train_inputs(wildcards):
    cell = cell_of(wildcards)
    inputs = data_inputs(cell.dataset)
    if cell.init == "transfer":
        inputs["pretrain"] = cell.pretrain.metrics  # also passed as --pretrain-metrics
    elif cell.init == "imagenet":
        inputs["weights"] = f"results/weights/{cell.model}.json"
    return inputs
