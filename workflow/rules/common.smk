# Config -> validated grid of cells (pepr.grid), shared by every stage.
import os
import sys
from pathlib import Path

from pepr.errors import PeprInputError
import pepr.grid as pepr_grid
import pepr.safeyaml as pepr_safeyaml

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
    GRID = pepr_grid.prepare_grid(
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

if config["weights_dir"]:
    # timm/huggingface_hub read their cache location from HF_HOME (torch.hub from TORCH_HOME, for
    # the few URL-hosted weights); jobs (also on SLURM, which exports the driver's environment)
    # find what fetch_weights put there.
    os.environ["HF_HOME"] = os.path.abspath(os.path.join(config["weights_dir"], "huggingface"))
    os.environ["TORCH_HOME"] = os.path.abspath(os.path.join(config["weights_dir"], "torch"))


def rule_resources(kind):
    """Snakemake resources of a rule kind (train, pretrain, default) from config["resources"]."""
    spec = config["resources"][kind]
    return {"mem_mb": spec["mem_mb"], "runtime": spec["runtime"], "gpu": spec["gpu"]}


def rule_threads(kind):
    return config["resources"][kind]["cpus"]
