# Prefetch stage: everything a training job needs from the network is fetched here, by LOCAL
# rules that run on the machine driving the sweep (cluster compute nodes often have no
# internet). Offline, these rules fail with a message naming what to put where. Their helper
# functions (_alternatives, _MEDMNIST_FILES, _IMAGE_CACHES, data_inputs) are in common.smk.
localrules:
    download_data,
    fetch_weights,


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
    conda:
        "../../envs/pepr.yaml"
    script:
        "../../scripts/download_data.py"


# The user's own images (folder:/csv: specs) are converted once into DATA_DIR/images/<name>-<hash
# of the spec's settings>.npz (deterministic, so the train rules name it as their input while
# planning); params.content_key (file list, sizes, mtimes: a listing, no image read) reruns the
# conversion when an image changes. Helpers (_IMAGE_CACHES, image_content_key) in common.smk.
rule prepare_images:
    output:
        "{image_cache}",
    wildcard_constraints:
        image_cache=_alternatives(_IMAGE_CACHES),
    params:
        spec=lambda wildcards: _IMAGE_CACHES[wildcards.image_cache],
        data_dir=config["data_dir"],
        content_key=image_content_key,
    threads: rule_threads("train")
    resources:
        **rule_resources("train"),
    log:
        "results/logs/prepare_images/{image_cache}.log",
    conda:
        "../../envs/pepr.yaml"
    script:
        "../../scripts/prepare_images.py"


rule fetch_weights:
    output:
        "results/weights/{model}.json",
    wildcard_constraints:
        model=_alternatives(GRID.imagenet_models),
    log:
        "results/logs/fetch_weights/{model}.log",
    conda:
        "../../envs/pepr.yaml"
    script:
        "../../scripts/fetch_weights.py"
