# Cost stage (not part of the default target): what the sweep will cost, and how that compared.
#
#   snakemake --cores 2 estimate_cost       # results/estimate.csv (+ _by_model.csv, .txt)
#   snakemake --cores 2 compare_estimate    # after the sweep: results/estimate_vs_measured.csv + figure
#
# estimate_cost calibrates every model of the grid on the machine it runs on, so it is NOT a
# local rule: with the SLURM profile it gets the training jobs' resources (a GPU node), and its
# figures are for that kind of device. For a subset of models or other options use the CLI
# (`pepr estimate --configfile ... --models ...`), which writes the same table.


rule estimate_cost:
    output:
        jobs="results/estimate.csv",
        by_model="results/estimate_by_model.csv",
        report="results/estimate.txt",
    params:
        schema=str(PEPR_WORKFLOW.basedir / "workflow" / "schemas" / "config.schema.yaml"),
        source=CONFIG_SOURCE,
    threads: rule_threads("train")
    resources:
        **rule_resources("train"),
    log:
        "results/logs/estimate_cost.log",
    conda:
        "../../envs/pepr.yaml"
    script:
        "../../scripts/estimate_cost.py"


localrules:
    compare_estimate,


rule compare_estimate:
    input:
        estimate="results/estimate.csv",
        runs="results/runs.csv",
    output:
        table=report(
            "results/estimate_vs_measured.csv",
            category="Cost estimate",
            labels={"table": "estimate vs measured, per model"},
        ),
        figure=report(
            "results/figures/estimate_vs_measured.png",
            category="Cost estimate",
            labels={"figure": "estimated vs measured training time, per model"},
        ),
    log:
        "results/logs/compare_estimate.log",
    conda:
        "../../envs/pepr.yaml"
    script:
        "../../scripts/compare_estimate.py"
