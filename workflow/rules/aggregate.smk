# Aggregation stage: every run's metrics.json -> results/runs.csv -> results/pepr.csv.
# Local rules: they are light (seconds for 24,000 runs) and need no cluster slot.


localrules:
    aggregate_runs,
    score_runs,


rule aggregate_runs:
    input:
        runs=GRID.metrics_files,
        pretrain=GRID.pretrain_metrics_files,
    output:
        report("results/runs.csv", category="Tables", labels={"table": "runs.csv (one row per run)"}),
    params:
        runs_root="results/runs",
    threads: rule_threads("default")
    resources:
        **rule_resources("default"),
    log:
        "results/logs/aggregate_runs.log",
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
    script:
        "../../scripts/score_runs.py"
