"""Rule script of prepare_images: convert a folder:/csv: dataset into its cached npz.

pepr.datasets.images.prepare checks every file (all problems listed at once, exit 2) and writes
DATA_DIR/images/<name>-<hash>.npz plus its JSON record, or does nothing when the cache is
current (same file list, sizes, mtimes and spec settings). The user's images are only read.
The record says the workflow made it: a training job of the sweep then refuses to convert
another version of the images (one sweep, one version of the data).
"""

import sys
from pathlib import Path

from pepr.datasets.images import prepare
from pepr.errors import PeprInputError

with open(snakemake.log[0], "w", encoding="utf-8") as log:
    try:
        path = prepare(
            snakemake.params.spec,
            Path(snakemake.params.data_dir),
            workers=snakemake.threads,
            log=lambda message: print(message, file=log, flush=True),
            by_workflow=True,
        )
    except PeprInputError as exc:
        print(f"pepr: {exc}", file=log)
        print(f"pepr: {exc}", file=sys.stderr)
        sys.exit(2)
    if path.resolve() != Path(snakemake.output[0]).resolve():  # the planning and the package must agree
        sys.exit(f"pepr: prepare_images wrote {path}, but the rule expected {snakemake.output[0]}")
    print(f"{snakemake.output[0]}: ready", file=log)
