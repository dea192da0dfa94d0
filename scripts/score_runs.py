"""Rule script of score_runs: results/runs.csv -> results/pepr.csv (PePR within each cell)."""

from pepr.results.aggregate import score_to_csv
from pepr.results.outputs import one_line_errors

with one_line_errors("score_runs"):  # bad input or a failed write: one line, exit 2
    scored = score_to_csv(snakemake.input[0], snakemake.output[0], performance=snakemake.params.performance)
    with open(snakemake.log[0], "w", encoding="utf-8") as log:
        print(
            f"scored {int((scored['status'] == 'ok').sum())} successful of {len(scored)} runs "
            f"by {snakemake.params.performance} -> {snakemake.output[0]}",
            file=log,
        )
