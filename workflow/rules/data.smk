# Prefetch stage: everything a training job needs from the network is fetched here, by LOCAL
# rules that run on the machine driving the sweep (cluster compute nodes often have no
# internet). Offline, these rules fail with a message naming what to put where. Their helper
# functions (_alternatives, _MEDMNIST_FILES, data_inputs) are in common.smk.
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
