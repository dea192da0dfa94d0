# Prefetch stage: everything a training job needs from the network is fetched here, by LOCAL
# rules that run on the machine driving the sweep (cluster compute nodes often have no
# internet). Offline, these rules fail with a message naming what to put where.
import os
import re


localrules:
    download_data,
    fetch_weights,


def _alternatives(values):
    """A wildcard constraint matching exactly these values (nothing when there are none)."""
    return "|".join(re.escape(v) for v in values) or "(?!)"


# Only MISSING files get a producing rule: a file the user placed (or one downloaded earlier) is
# a plain input, so no timestamp, code or metadata change can make Snakemake delete and re-fetch
# it (offline that would lose the data). Paths are relative to the working directory, as here.
_MEDMNIST_FILES = {path: spec for path, spec in GRID.medmnist_files.items() if not os.path.exists(path)}


rule download_data:
    output:
        "{medmnist_file}",
    wildcard_constraints:
        medmnist_file=_alternatives(_MEDMNIST_FILES),
    params:
        spec=lambda wildcards: _MEDMNIST_FILES[wildcards.medmnist_file],
        data_dir=config["data_dir"],
    log:
        "results/logs/download_data/{medmnist_file}.log",
    script:
        "../../scripts/download_data.py"


rule fetch_weights:
    output:
        "results/weights/{model}.json",
    wildcard_constraints:
        model=_alternatives(GRID.imagenet_models),
    log:
        "results/logs/fetch_weights/{model}.log",
    script:
        "../../scripts/fetch_weights.py"


def data_inputs(spec):
    """The data file a dataset spec reads, as a job input (none for synthetic data).

    ancient(): its timestamp never re-plans a finished cell (`touch`, `cp`, `rsync`); its
    content does, through the train rules' params record (pepr.rerun: a SHA-256 of the file)."""
    path = GRID.data_file(spec)
    return {"data": ancient(path)} if path is not None else {}
