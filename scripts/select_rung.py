"""Rule script of select_rung: a group's rung records -> its decision at the rung (who continues)."""

from pepr.results.adaptive import adaptive_settings, write_decision
from pepr.results.outputs import one_line_errors

with one_line_errors("select_rung"):  # bad input or a failed write: one line, exit 2
    rung = int(snakemake.wildcards.rung)
    decision = write_decision(
        list(snakemake.input.records),
        snakemake.output.decision,
        rung=rung,
        epochs=int(snakemake.config["epochs"]),
        settings=adaptive_settings(snakemake.config),
        previous=snakemake.input.get("previous"),
    )
    with open(snakemake.log[0], "w", encoding="utf-8") as log:
        print(
            f"rung {rung}: kept {', '.join(decision['kept']) or 'none'}; stopped {', '.join(decision['stopped']) or 'none'}"
            + (f"; failed {', '.join(decision['failed'])}" if decision["failed"] else ""),
            file=log,
        )
