"""What the workflow's rules decide, as plain functions (the .smk files only call these).

Nothing here touches Snakemake: the values Snakemake holds (``--config`` words, ``--set-resources``
overrides, the environment) are passed in by :mod:`pepr.plan.workflow`, the one adapter to
Snakemake's objects, or by common.smk.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

from pepr.errors import PeprInputError
from pepr.results import runs

__all__ = [
    "RETRAIN_WORDS",
    "retrain_choice",
    "train_gpus_given",
    "cache_homes",
    "check_checkpoint",
    "outputs_to_repair",
]

#: `--config retrain=true` arrives as the text "true" (Snakemake parses --config values as text
#: unless they are numbers): the usual spellings of the boolean the schema wants.
RETRAIN_WORDS: dict[str, bool | None] = {
    "true": True,
    "yes": True,
    "1": True,
    "false": False,
    "no": False,
    "0": False,
    "null": None,
    "none": None,
}


def retrain_choice(value: Any) -> Any:
    """``config["retrain"]`` as the schema wants it: a known word read as its boolean (or None),
    anything else unchanged (so the schema names a wrong value)."""
    if isinstance(value, str) and value.strip().lower() in RETRAIN_WORDS:
        return RETRAIN_WORDS[value.strip().lower()]
    return value


#: The training rules and the ``config["resources"]`` kind each one reads.
TRAIN_RULES: dict[str, str] = {"train_model": "train", "pretrain_source": "pretrain"}


def train_gpus_given(overrides: Mapping[str, Any], resources: Mapping[str, Mapping[str, Any]]) -> int:
    """GPUs a training job asks for: a ``--set-resources RULE:gpu=N`` override (``overrides``:
    rule name -> its plain gpu value, e.g. profiles/slurm's 1) over ``config["resources"]``.
    A value that is no number (a function, a text) counts as 1: a scheduler gives the GPUs."""
    counts = []
    for rule, kind in TRAIN_RULES.items():
        given = overrides.get(rule)
        try:
            counts.append(int(given) if given is not None else int(resources[kind]["gpu"]))
        except (TypeError, ValueError):
            counts.append(1)
    return max(counts)


def cache_homes(weights_dir: str | None, environ: Mapping[str, str]) -> dict[str, str]:
    """``HF_HOME`` and ``TORCH_HOME`` for every job: inside ``weights_dir`` when set, else the
    user's setting or the libraries' own default (under ``XDG_CACHE_HOME`` or ``~/.cache``).

    timm/huggingface_hub read their cache from HF_HOME, torch.hub from TORCH_HOME; jobs (also on
    SLURM) find what fetch_weights put there because both are always set and passed on."""
    if weights_dir:
        return {
            "HF_HOME": os.path.abspath(os.path.join(weights_dir, "huggingface")),
            "TORCH_HOME": os.path.abspath(os.path.join(weights_dir, "torch")),
        }
    cache = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return {
        "HF_HOME": environ.get("HF_HOME") or os.path.join(cache, "huggingface"),
        "TORCH_HOME": environ.get("TORCH_HOME") or os.path.join(cache, "torch"),
    }


def check_checkpoint(cell: Any) -> None:
    """A transfer cell still to train needs its pretraining's weights: a finished pretraining
    whose model.pt is gone stops planning with the fix (finished fine-tune cells keep theirs)."""
    job = cell.pretrain
    if os.path.exists(cell.metrics) or not os.path.exists(job.metrics) or os.path.exists(job.checkpoint):
        return
    if not runs.finished_ok(job.metrics):
        return  # a failed pretraining saves no weights: its transfer cells record that failure
    raise PeprInputError(
        f"{job.checkpoint} is missing: the weights {cell.key} and the other transfer cells of "
        f"{job.model} start from. Recreate them (pepr restores them from {job.directory}/previous/ "
        f"when kept there, else retrains only this pretraining): snakemake --forcerun {job.metrics} "
        "--allowed-rules pretrain_source --config retrain=false; then run the sweep as before"
    )


def outputs_to_repair(folders: Iterable[str]) -> dict[str, str]:
    """metrics.json path -> why, for each run folder whose finished result was lost or edited
    (:func:`pepr.results.runs.result_damage`): the workflow runs those jobs again, and
    ``pepr train`` restores the kept copy (or trains when none of this training is kept)."""
    found = {}
    for folder in folders:
        why = runs.result_damage(folder)
        if why is not None:
            found[os.path.join(folder, runs.METRICS_FILE)] = why
    return found
