"""Rule script of estimate_cost: calibrate the sweep's models here, estimate every job (pepr.estimate)."""

from pepr.estimate import EstimateSettings, run_estimate
from pepr.results.runs import atomic_write_text
from pepr.results.tableio import write_table

with open(snakemake.log[0], "w", encoding="utf-8") as log:
    result = run_estimate(
        dict(snakemake.config),
        snakemake.params.schema,
        EstimateSettings(threads=snakemake.threads),
        source=snakemake.params.source,
        progress=lambda line: print(line, file=log, flush=True),
    )
    print(result.report, file=log)
write_table(result.table, snakemake.output.jobs)
write_table(result.by_model, snakemake.output.by_model)
atomic_write_text(snakemake.output.report, result.report + "\n")
