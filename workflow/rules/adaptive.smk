# Adaptive sweeps (config `adaptive:`, off while `rungs` is empty; pepr.results.adaptive): per group
# (dataset x init x fraction) and rung, every candidate still in contention trains to the rung
# (train_to_rung: `pepr train --stop-after N`, keeping its resume checkpoint), then the checkpoint
# select_rung decides which continue. Snakemake re-plans the jobs after a decision (a
# data-dependent DAG): the next rung's train_to_rung jobs and train_model exist only for the kept
# cells; a stopped cell's train_model records it (`--stopped-at N`: status "stopped", no training).
# The helpers (rung_candidates, rung_inputs, adaptive_params, ...) are in common.smk.
# select_rung is light (a few JSON files): local, never a cluster job.


localrules:
    select_rung,


rule train_to_rung:
    input:
        unpack(rung_inputs),
    output:
        rung="results/runs/{dataset}/{init}/{fraction}/{model}/seed{seed}/rung{rung}.json",
    wildcard_constraints:
        init="scratch|imagenet|transfer",
        fraction=r"[0-9.e-]+",
        seed=r"\d+",
        rung=r"\d+",
    params:
        train=lambda wildcards: train_params(
            cell_of(wildcards), f"{cell_of(wildcards).directory}/rung{wildcards.rung}.json"
        ),
        retrain=lambda wildcards: retrain_flag("train_to_rung", cell_of(wildcards).metrics),
    threads: rule_threads("train")
    resources:
        **rule_resources("train"),
    log:
        "results/logs/train_to_rung/{dataset}/{init}/{fraction}/{model}/seed{seed}/rung{rung}.log",
    conda:
        "../../envs/pepr.yaml"
    shell:
        RUNG_COMMAND


checkpoint select_rung:
    input:
        unpack(rung_candidates),
    output:
        decision="results/adaptive/{dataset}/{init}/{fraction}/rung{rung}.json",
    wildcard_constraints:
        init="scratch|imagenet|transfer",
        fraction=r"[0-9.e-]+",
        rung=r"\d+",
    params:
        policy=lambda wildcards: adaptive_params(),
    threads: rule_threads("default")
    resources:
        **rule_resources("default"),
    log:
        "results/logs/select_rung/{dataset}/{init}/{fraction}/rung{rung}.log",
    conda:
        "../../envs/pepr.yaml"
    script:
        "../../scripts/select_rung.py"
