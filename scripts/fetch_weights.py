"""Rule script of fetch_weights (local rule): put a model's ImageNet weights into the local cache.

Builds the model once with pepr.train.models.create_model(init="imagenet"), the call training jobs make,
so timm downloads the weights into the Hugging Face cache (HF_HOME, set from config weights_dir).
Training jobs then run with HF_HUB_OFFLINE=1. Offline, create_model raises PeprInputError saying
how to fill the cache. The marker JSON records what was fetched.
"""

import json
import os

from pepr.train.models import create_model

# 224 px: the size every architecture (fixed-size ones included) accepts; the weights are the same.
_, description = create_model(snakemake.wildcards.model, "imagenet", num_classes=2, in_chans=1, image_size=224)
with open(snakemake.output[0], "w", encoding="utf-8") as marker:
    json.dump(
        {"model": snakemake.wildcards.model, "init": description, "hf_home": os.environ.get("HF_HOME", "(default)")},
        marker,
    )
