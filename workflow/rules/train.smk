# Training stage: one train_model job per cell of the grid; one pretrain_source job per model
# with the `transfer` init. Both run `pepr.train.run_training` through scripts/train_model.py.
# Only metrics.json and history.csv are declared: the per-epoch resume checkpoint and the saved
# model (model.pt, for transfer) live beside them, so Snakemake's clean-up of incomplete outputs
# never deletes what a resumed job continues from. params hold training settings only, so
# changing report or scoring settings retrains nothing.


def pretrain_inputs(wildcards):
    job = GRID.pretrain_job(wildcards.source, wildcards.model)
    return data_inputs(job.source)


rule pretrain_source:
    input:
        unpack(pretrain_inputs),
    output:
        metrics="results/pretrain/{source}/{model}/metrics.json",
        history="results/pretrain/{source}/{model}/history.csv",
    params:
        train=lambda wildcards: pepr_grid.train_settings(
            GRID.pretrain_job(wildcards.source, wildcards.model), config
        ),
    threads: rule_threads("pretrain")
    resources:
        **rule_resources("pretrain"),
    log:
        "results/logs/pretrain_source/{source}/{model}.log",
    script:
        "../../scripts/train_model.py"


def cell_of(wildcards):
    return GRID.cell(wildcards.dataset, wildcards.init, wildcards.fraction, wildcards.model, wildcards.seed)


def train_inputs(wildcards):
    cell = cell_of(wildcards)
    inputs = data_inputs(cell.dataset)
    if cell.init == "transfer":
        inputs["pretrain"] = cell.pretrain.metrics
    elif cell.init == "imagenet":
        inputs["weights"] = f"results/weights/{cell.model}.json"
    return inputs


rule train_model:
    input:
        unpack(train_inputs),
    output:
        metrics="results/runs/{dataset}/{init}/{fraction}/{model}/seed{seed}/metrics.json",
        history="results/runs/{dataset}/{init}/{fraction}/{model}/seed{seed}/history.csv",
    wildcard_constraints:
        init="scratch|imagenet|transfer",
        fraction=r"[0-9.e-]+",
        seed=r"\d+",
    params:
        train=lambda wildcards: pepr_grid.train_settings(cell_of(wildcards), config),
    threads: rule_threads("train")
    resources:
        **rule_resources("train"),
    log:
        "results/logs/train_model/{dataset}/{init}/{fraction}/{model}/seed{seed}.log",
    script:
        "../../scripts/train_model.py"
