# Aggregation stage: every run's metrics.json -> results/runs.csv -> results/pepr.csv.
# Local rules: they are light (seconds for 24,000 runs) and need no cluster slot.


localrules:
    aggregate_runs,
    score_runs,


rule aggregate_runs:
    # Input functions, not lists: a job re-parses this file (on SLURM, in every allocation), and
    # Snakemake turns a list into file objects right away, a function only when the rule is
    # planned; so a training job never pays for the 25,000 paths of a large grid.
    input:
        runs=lambda wildcards: GRID.metrics_files,
        pretrain=lambda wildcards: GRID.pretrain_metrics_files,
        carbon=lambda wildcards: [config["carbon_intensity"]] if config["carbon_intensity"] else [],
    output:
        report("results/runs.csv", category="Tables", labels={"table": "runs.csv (one row per run)"}),
    params:
        runs_root=lambda wildcards: RUNS_DIR,  # the run contract's (pepr.results.runs), not a prefix of the output
        # the set of runs (no `input` rerun trigger in the profiles): a cell removed from the
        # config rebuilds runs.csv
        runs=lambda wildcards: GRID_RUNS_DIGEST,
        # CO2 is derived here from each run's measured energy (pepr.results.aggregate.CarbonSettings):
        # changing these re-aggregates and re-scores, and retrains nothing
        country=config["country"],
        carbon_intensity=config["carbon_intensity"],
    threads: rule_threads("default")
    resources:
        **rule_resources("default"),
    log:
        "results/logs/aggregate_runs.log",
    conda:
        "../../envs/pepr.yaml"
    script:
        "../../scripts/aggregate_runs.py"


rule score_runs:
    input:
        "results/runs.csv",
    output:
        report("results/pepr.csv", category="Tables", labels={"table": "pepr.csv (runs + PePR scores)"}),
    params:
        performance=config["pepr"]["performance"],
    threads: rule_threads("default")
    resources:
        **rule_resources("default"),
    log:
        "results/logs/score_runs.log",
    conda:
        "../../envs/pepr.yaml"
    script:
        "../../scripts/score_runs.py"
