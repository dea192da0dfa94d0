# Prefetch stage: everything a training job needs from the network is fetched here, by LOCAL
# rules that run on the machine driving the sweep (cluster compute nodes often have no
# internet). Offline, these rules fail with a message naming what to put where.
import os
import re


localrules:
    download_data,
    fetch_weights,

import pepr.images as pepr_images


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


# The user's own images (folder:/csv: specs) are converted once into DATA_DIR/images/<name>-<hash
# of the spec's settings>.npz (pepr.images.cache_path: a deterministic path, so the train rules
# name it as their input while planning). params.content_key (the file list, sizes and mtimes;
# a listing, no image is read) reruns the conversion when an image changes; pepr.images.prepare
# rebuilds only when that key differs from the one recorded beside the cache.
_IMAGE_CACHES = {
    item["file"]: spec for spec, item in GRID.datasets.items() if item["kind"] in pepr_images.KINDS
}


rule prepare_images:
    output:
        "{image_cache}",
    wildcard_constraints:
        image_cache=_alternatives(_IMAGE_CACHES),
    params:
        spec=lambda wildcards: _IMAGE_CACHES[wildcards.image_cache],
        data_dir=config["data_dir"],
        content_key=lambda wildcards: pepr_images.content_key(_IMAGE_CACHES[wildcards.image_cache], config["data_dir"]),
    threads: rule_threads("train")
    resources:
        **rule_resources("train"),
    log:
        "results/logs/prepare_images/{image_cache}.log",
    script:
        "../../scripts/prepare_images.py"


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
    """The data file a dataset spec reads, as a job input (none for synthetic data)."""
    path = GRID.data_file(spec)
    return {"data": path} if path is not None else {}
