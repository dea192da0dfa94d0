"""Rule script of train_model and pretrain_source: train one cell with pepr.train.

snakemake.params.train holds the TrainConfig fields (pepr.grid.train_settings); the run folder is
the folder of the declared metrics.json. Progress and any error go to the rule's log file.
Snakemake clears a job's log before re-running it, so after a resume the log holds the latest
segment; metrics.json counts the segments and sums their time and energy.
"""

import contextlib
import os
import traceback
from pathlib import Path

from pepr.grid import train_job

# Weights were prefetched by the local rule fetch_weights: never reach for the network here.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

with open(snakemake.log[0], "a", encoding="utf-8") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
    try:
        train_job(
            snakemake.params.train,
            out_dir=Path(snakemake.output.metrics).parent,
            threads=snakemake.threads,
            pretrain_metrics=snakemake.input.get("pretrain"),
        )
    except BaseException:
        traceback.print_exc()  # into the rule log too, not only the driver's / SLURM's output
        raise
