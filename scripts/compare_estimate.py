"""Rule script of compare_estimate: results/estimate.csv + results/runs.csv -> per-model comparison + figure."""

from pepr.estimate import compare_files

table = compare_files(snakemake.input.estimate, snakemake.input.runs, snakemake.output.table, snakemake.output.figure)
with open(snakemake.log[0], "w", encoding="utf-8") as log:
    print(table.to_string(index=False), file=log)
