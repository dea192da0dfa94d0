"""Rule script of aggregate_runs: every run's metrics.json -> results/runs.csv (pepr.results.aggregate)."""

from pepr.results.aggregate import CarbonSettings, aggregate_to_csv
from pepr.results.outputs import one_line_errors

with one_line_errors("aggregate_runs"):  # bad input or a failed write: one line, exit 2
    frame = aggregate_to_csv(
        snakemake.input.runs,
        snakemake.output[0],
        pretrain_files=snakemake.input.pretrain,
        runs_root=snakemake.params.runs_root,
        # CO2 = measured energy x intensity, derived here: a country correction re-aggregates only
        carbon=CarbonSettings(snakemake.params.country, snakemake.params.carbon_intensity),
    )
    with open(snakemake.log[0], "w", encoding="utf-8") as log:
        counts = frame["status"].value_counts().to_dict()
        print(f"{len(frame)} runs -> {snakemake.output[0]}; status counts: {counts}", file=log)
