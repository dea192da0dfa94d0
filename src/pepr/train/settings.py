"""The settings of one training run, each defined once: :class:`TrainConfig`'s fields.

A field's default, its ``pepr train`` flag and help text, how the flag's text is parsed and how
the workflow sets it all live in the field (its ``metadata``); everything else derives from it:

* ``pepr train``'s flags (:func:`pepr.cli.train.add_arguments` walks :func:`train_fields`);
* the train rules' ``params`` and their ``--flag value`` text (:func:`pepr.plan.grid.train_settings`,
  :class:`pepr.plan.grid.TrainSettings`, in the order of the fields below: that order is the text
  finished sweeps recorded, so it must not change);
* the workflow config's keys of the same name (the schema's ``default``, bounds and choices are
  held equal to the field's by tests/test_settings.py).

A number's limits (``minimum``, ``maximum``, ``exclusive_minimum``, as JSON Schema names them)
and a text's ``choices`` live in the field too: ``pepr train``'s flag parser
(:func:`pepr.cli.args.setting_parser`) and the checks on a run's settings
(:func:`pepr.train.checks.training_problems`, run by ``pepr train`` and by planning on every
job) both read them through :func:`limit_problem`. Standard library only: the Snakefile imports it.

``workflow`` metadata says where a workflow job's value comes from:

* ``"sweep"``: the config key of the same name, always written into the params;
* ``"optional"``: the config key of the same name, written only when it differs from the default
  (added after sweeps had finished: their recorded params must stay the same);
* ``"job"``: set per cell or pretraining job by :func:`pepr.plan.grid.train_settings`;
* absent: not a training setting of the workflow (the output folder, threads, ...).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pepr.columns import MAX_SEED

#: Training precisions ``pepr train --precision`` accepts.
PRECISIONS = ("fp32", "bf16")


def _setting(default: Any = dataclasses.MISSING, *, help: str, workflow: str | None = None, **cli: Any) -> Any:
    """A TrainConfig field: its default plus the metadata its flag, params and checks derive from.

    ``cli`` holds the details beyond the help text: ``parse`` (``int``, ``float`` or ``path``:
    how the flag's text is read), the limits of a number (``minimum``, ``maximum``,
    ``exclusive_minimum``, ``why``: the reason a limit has, said with it; ``label``: the
    setting's name in messages), ``choices``, ``metavar``, ``flag`` (when not
    ``--name-with-dashes``), ``action``.
    """
    metadata = {"help": help, "workflow": workflow, **cli}
    if default is dataclasses.MISSING:
        return field(metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(kw_only=True)
class TrainConfig:
    """Everything one training run needs (the ``pepr train`` flags); keyword arguments only.

    The order of the fields with a ``workflow`` role is the order of the train rules' params.
    """

    model: str = _setting(help="timm model name, e.g. resnet18", workflow="job")
    epochs: int = _setting(10, help="training epochs", workflow="sweep", parse="int", minimum=1)
    batch_size: int = _setting(
        32,
        help="batch size",
        workflow="sweep",
        parse="int",
        minimum=2,
        why="BatchNorm needs 2 samples",
        label="batch size",
    )
    lr: float = _setting(
        5e-4, help="Adam learning rate", workflow="sweep", parse="float", exclusive_minimum=0, label="learning rate"
    )
    image_size: int | None = _setting(
        None,
        help="train at this size (resized on the device; default: the stored size)",
        workflow="sweep",
        parse="int",
        minimum=8,
        maximum=1024,
        why="pixels",
        label="image size",
        metavar="PX",
    )
    device: str = _setting("auto", help="auto | cpu | cuda | cuda:N | mps (auto = cuda if available)", workflow="sweep")
    country: str = _setting(
        "DNK", help="country for the CO2 intensity, ISO 3166-1 alpha-3", workflow="sweep", metavar="ISO3"
    )
    data_dir: Path | None = _setting(
        None,
        help="folder with MedMNIST .npz files; folder:/csv: datasets are converted into D/images/ (default: ~/.medmnist)",
        workflow="sweep",
        parse="path",
        metavar="D",
    )
    dataset: str = _setting(help="dataset spec (see above)", workflow="job", metavar="SPEC")
    init: str = _setting("scratch", help="scratch | imagenet | checkpoint:PATH", workflow="job", metavar="STRATEGY")
    fraction: float = _setting(
        1.0,
        help="stratified fraction of the train split, in (0, 1]",
        workflow="job",
        parse="float",
        exclusive_minimum=0,
        maximum=1,
    )
    seed: int = _setting(
        0,
        help="seed for the subset, init and batch order",
        workflow="job",
        parse="int",
        minimum=0,
        maximum=MAX_SEED,
        why="numpy's seed range",
    )
    save_model: Path | None = _setting(
        None,
        help="save the final weights (.pt/.pth/.safetensors), e.g. for --init checkpoint:PATH",
        workflow="job",
        parse="path",
        metavar="PATH",
    )
    precision: str = _setting(
        "fp32",
        help="training numerics: fp32 (the paper's protocol) or bf16 autocast (CUDA only; CPU always trains in fp32)",
        workflow="optional",
        choices=PRECISIONS,
    )
    carbon_intensity: Path | None = _setting(
        None,
        help="time-varying grid intensity, columns timestamp (ISO 8601),gco2_per_kwh: each epoch's CO2 uses "
        "the value at its midpoint (default: CodeCarbon's country average)",
        workflow="optional",
        parse="path",
        metavar="CSV",
    )
    out_dir: Path = _setting(
        help="output folder for metrics.json and history.csv", parse="path", metavar="DIR", flag="--out"
    )
    threads: int | None = _setting(
        None, help="torch CPU threads (default: all cores this process may use)", parse="int", minimum=1, metavar="N"
    )
    pretrain_metrics: Path | None = _setting(
        None,
        help="metrics.json of the transfer source's pretraining: when its status is not ok, record this cell "
        "as failed (exit 0) without training",
        parse="path",
        metavar="PATH",
    )
    # Not a setting of what is trained (no `workflow` role): the workflow passes it as
    # {params.retrain}, which Snakemake leaves out of the params record.
    retrain: bool = _setting(
        False,
        help="train even when OUT/previous/ keeps a finished result of identical settings and data (default: "
        "that result is restored, so a killed, requeued or forced rerun never trains a finished cell twice)",
        action="store_true",
    )
    # Adaptive sweeps (pepr.results.adaptive): how far this job trains, not what is trained, so
    # no `workflow` role; the workflow passes them outside the recorded params.
    stop_after: int | None = _setting(
        None,
        help="adaptive sweeps: stop after epoch N (below --epochs) keeping the resume checkpoint and write "
        "OUT/rungN.json (the metrics at epoch N, the resources spent so far) instead of metrics.json; a later "
        "run continues from the checkpoint, training no epoch twice",
        parse="int",
        minimum=1,
        metavar="N",
    )
    stopped_at: int | None = _setting(
        None,
        help="adaptive sweeps: record this cell as stopped at rung N (status 'stopped', from OUT/rungN.json) "
        "without training, keeping its resume checkpoint; a finished result of this training is kept instead",
        parse="int",
        minimum=1,
        metavar="N",
    )

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        for item in train_fields():
            if item.metadata.get("parse") == "path" and getattr(self, item.name) is not None:
                setattr(self, item.name, Path(getattr(self, item.name)))

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly copy (paths as strings)."""
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(self).items()}


def train_fields() -> tuple[dataclasses.Field, ...]:
    """TrainConfig's fields, in order (each one setting with its metadata)."""
    return dataclasses.fields(TrainConfig)


def workflow_fields() -> tuple[dataclasses.Field, ...]:
    """The fields a workflow job sets (its params), in params order."""
    return tuple(item for item in train_fields() if item.metadata.get("workflow"))


def flag_of(item: dataclasses.Field) -> str:
    """The ``pepr train`` flag of a setting (``--batch-size`` for ``batch_size``)."""
    return item.metadata.get("flag") or "--" + item.name.replace("_", "-")


def has_default(item: dataclasses.Field) -> bool:
    """Whether a setting has a default (without one its flag is required)."""
    return item.default is not dataclasses.MISSING


def setting(name: str) -> dataclasses.Field:
    """The TrainConfig field of the setting ``name``."""
    for item in train_fields():
        if item.name == name:
            return item
    raise KeyError(name)


def limits_text(item: dataclasses.Field) -> str | None:
    """A number setting's limits in words (``>= 2``, ``> 0``, ``in 8..1024``, ``in (0, 1]``); None without."""
    meta = item.metadata
    low, high, above = meta.get("minimum"), meta.get("maximum"), meta.get("exclusive_minimum")
    if low is not None and high is not None:
        return f"in {low}..{high}"
    if above is not None and high is not None:
        return f"in ({above}, {high}]"
    if low is not None:
        return f">= {low}"
    if above is not None:
        return f"> {above}"
    return None


def within_limits(item: dataclasses.Field, value: int | float) -> bool:
    """Whether a number is within the setting's limits (a float must also be finite)."""
    import math

    meta = item.metadata
    if isinstance(value, float) and not math.isfinite(value):
        return False
    return (
        (meta.get("minimum") is None or value >= meta["minimum"])
        and (meta.get("maximum") is None or value <= meta["maximum"])
        and (meta.get("exclusive_minimum") is None or value > meta["exclusive_minimum"])
    )


def limit_problem(item: dataclasses.Field, value: Any) -> str | None:
    """One line when ``value`` is not a valid value of the setting (its kind, limits, choices);
    None when it is, or when it is the setting's default (an unset optional setting is None)."""
    import numbers

    meta = item.metadata
    if has_default(item) and value is None and item.default is None:
        return None
    label = meta.get("label") or item.name
    why = f" ({meta['why']})" if meta.get("why") else ""
    if meta.get("choices") is not None:
        if value in meta["choices"]:
            return None
        return f"{label} must be one of {', '.join(meta['choices'])}, got {value!r}"
    kind = meta.get("parse")
    if kind not in ("int", "float"):
        return None
    # numbers.Integral also admits numpy integers (a TrainConfig built from arrays)
    is_int = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    ok_kind = is_int if kind == "int" else isinstance(value, numbers.Real) and not isinstance(value, bool)
    if ok_kind and within_limits(item, value):
        return None
    words = "an integer" if kind == "int" else "a finite number"
    limits = limits_text(item)
    return f"{label} must be {words}{' ' + limits if limits else ''}{why}, got {value!r}"
