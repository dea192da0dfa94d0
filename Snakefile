# pepr: train a grid of timm models, measure their cost, rank them by PePR.
#
#   snakemake --cores 2                                  # the offline demo (config/config.yaml)
#   snakemake --cores 2 --configfile config/paper.yaml   # another config REPLACES the demo one
#   snakemake --cores 2 --rerun-incomplete               # resume (after `--unlock` if killed -9)
#
# Stages live in workflow/rules/: common (config -> validated grid), data (dataset and weight
# prefetch, local rules), train (pretrain_source, train_model), adaptive (train_to_rung,
# checkpoint select_rung: adaptive sweeps), aggregate (runs.csv, pepr.csv),
# report (figures, tables, summary).

from snakemake.utils import min_version

# The oldest Snakemake pepr's adapter (pepr.plan.workflow) is tested with; pyproject bounds the newest.
min_version("8.20")


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/adaptive.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/estimate.smk"


rule all:
    default_target: True
    input:
        "results/pepr.csv",
        REPORT_TARGETS,
