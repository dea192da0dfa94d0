"""Rule script of gather_histories: every run's history.csv -> results/histories.csv (one table)."""

from pepr.report.build import write_histories
from pepr.results.aggregate import CarbonSettings
from pepr.results.outputs import one_line_errors

with one_line_errors("gather_histories"):  # bad input or a failed write: one line, exit 2
    table = write_histories(
        list(snakemake.input.histories),
        snakemake.params.runs_root,
        snakemake.output.histories,
        # per-epoch CO2 = measured energy x intensity, as aggregate_runs derives each run's co2_kg
        carbon=CarbonSettings(snakemake.params.country, snakemake.params.carbon_intensity),
    )
    with open(snakemake.log[0], "w", encoding="utf-8") as log:
        print(f"gathered {len(table)} epoch rows from {len(snakemake.input.histories)} history files", file=log)
