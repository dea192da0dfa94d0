# Training stage: one train_model job per cell of the grid; one pretrain_source job per model
# with the `transfer` init. Both are `shell:` rules running `pepr train` with the job's validated
# settings (a shell: job is the cheapest for Snakemake to plan and to start; `script:` re-reads
# and checks the script for every job). Only metrics.json and history.csv are declared: the
# per-epoch resume checkpoint and the saved model (model.pt, for transfer) live beside them, so
# Snakemake's clean-up of incomplete outputs never deletes what a resumed job continues from.
#
# params hold training settings only (pepr.plan.grid.train_settings), so changing report or scoring
# settings retrains nothing; they are the very values sweeps finished with the earlier script:
# rules recorded (a rerun trigger), and `{params.train}` is their `pepr train` flags
# (pepr.plan.grid.TrainSettings). Progress and any error of `pepr train` go to the rule's log.
# The input functions (pretrain_inputs, cell_of, train_inputs) are in common.smk.
import shlex
import sys

# The interpreter running Snakemake has pepr installed (also on a SLURM node, where Snakemake
# re-runs itself with the same interpreter); `pepr` on PATH might be another installation.
PEPR_TRAIN = f"{shlex.quote(sys.executable)} -m pepr.cli train"

# Weights were prefetched by the local rule fetch_weights: jobs never reach for the network
# (unless the user set HF_HUB_OFFLINE). Appending keeps a resumed job's earlier segments.
# `{params.train}` also holds --out (the output folder) and, for transfer, --pretrain-metrics;
# few fields keep Snakemake's formatting of the command (for every job, at planning) cheap.
_PEPR_TRAIN_LITERAL = PEPR_TRAIN.replace("{", "{{").replace("}", "}}")  # a brace in a path is no field
# A failed cell also prints one line, `pepr: <run folder> failed: <reason>`, on the stream
# Snakemake shows (fd 3 = the job's stderr before the log redirection; PEPR_NOTIFY_FD), so a
# failure is seen the moment it happens, not only in the log or at the end in summary.md.
TRAIN_COMMAND = f"PEPR_NOTIFY_FD=3 HF_HUB_OFFLINE=${{{{HF_HUB_OFFLINE:-1}}}} {_PEPR_TRAIN_LITERAL} {{params.train}}{{params.retrain}} --threads {{threads}} 3>&2 >> {{log:q}} 2>&1"
# Adaptive sweeps (adaptive.smk): a cell stopped at a rung is recorded, not trained
# ({params.adaptive}: --stopped-at N); a rung job trains to its rung and keeps the checkpoint.
CELL_COMMAND = TRAIN_COMMAND.replace("{params.retrain}", "{params.retrain}{params.adaptive}")
RUNG_COMMAND = TRAIN_COMMAND.replace("{params.retrain}", "{params.retrain} --stop-after {wildcards.rung}")


rule pretrain_source:
    input:
        unpack(pretrain_inputs),
    output:
        metrics="results/pretrain/{source}/{model}/metrics.json",
        history="results/pretrain/{source}/{model}/history.csv",
    params:
        train=lambda wildcards: train_params(
            GRID.pretrain_job(wildcards.source, wildcards.model),
            f"results/pretrain/{wildcards.source}/{wildcards.model}/metrics.json",
        ),
        retrain=lambda wildcards, output: retrain_flag("pretrain_source", output),
    threads: rule_threads("pretrain")
    resources:
        **rule_resources("pretrain"),
    log:
        "results/logs/pretrain_source/{source}/{model}.log",
    conda:
        "../../envs/pepr.yaml"
    shell:
        TRAIN_COMMAND


rule train_model:
    input:
        unpack(train_inputs),
        unpack(adaptive_train_inputs),
    output:
        metrics="results/runs/{dataset}/{init}/{fraction}/{model}/seed{seed}/metrics.json",
        history="results/runs/{dataset}/{init}/{fraction}/{model}/seed{seed}/history.csv",
    wildcard_constraints:
        init="scratch|imagenet|transfer",
        fraction=r"[0-9.e-]+",
        seed=r"\d+",
    params:
        train=lambda wildcards: train_params(cell_of(wildcards), cell_of(wildcards).metrics),
        retrain=lambda wildcards, output: retrain_flag(
            "train_model", output, cell_of(wildcards).pretrain.metrics if wildcards.init == "transfer" else None
        ),
        adaptive=adaptive_flag,
    threads: rule_threads("train")
    resources:
        **rule_resources("train"),
    log:
        "results/logs/train_model/{dataset}/{init}/{fraction}/{model}/seed{seed}.log",
    conda:
        "../../envs/pepr.yaml"
    shell:
        CELL_COMMAND
