"""Config loading, schema defaults and this machine's GPUs, for planning.

* :func:`load_config`, :func:`load_schema`, :func:`apply_defaults`, :func:`schema_problems`: read
  a YAML config, give every schema key its default, list its schema violations;
* :func:`local_gpu_count` / :func:`local_device_problems`: a local sweep's ``cuda`` device
  against this machine's GPUs.

The checks on one training run's settings (:func:`pepr.train.checks.training_problems`, the
model-name check, timm's catalogue) are the engine's, which planning runs on every job; the
checks of a whole workflow config are :mod:`pepr.plan.prepare`'s (it imports this module, never
the reverse). Nothing here imports torch or timm.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pepr.errors import PeprInputError

# --------------------------------------------------------------------------------------------
# Loading and defaults
# --------------------------------------------------------------------------------------------


def load_schema(path: str | os.PathLike) -> dict[str, Any]:
    """Read the workflow's JSON schema (YAML file)."""
    import yaml

    with open(path, encoding="utf-8") as handle:
        return yaml.load(handle, Loader=_yaml_loader())


def load_config(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> dict[str, Any]:
    """Read one or more YAML config files; later files override earlier ones key by key.

    Nested mappings are merged, everything else (lists included) replaced, as Snakemake does.
    Raises PeprInputError when a file is missing or not a YAML mapping.
    """
    # the workflow's own reader (pepr.plan.safeyaml): limits on size, depth and alias expansion,
    # duplicate keys refused, 1e-3 a number; only the missing-file message is said here
    from pepr.plan.safeyaml import load_workflow_config

    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    for path in paths:
        if not os.path.lexists(path):
            raise PeprInputError(f"config file '{path}' does not exist")
    return load_workflow_config(list(paths), None)


def _yaml_loader() -> type:
    """PyYAML's safe loader, the C one when available (10x faster; parsed at every workflow start)."""
    import yaml

    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _resolve_ref(schema: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    """Follow a local ``$ref`` (``#/$defs/name``), keeping sibling keys (e.g. a default)."""
    ref = schema.get("$ref")
    if not isinstance(ref, str) or not ref.startswith("#/"):
        return schema
    target: Any = root
    for part in ref[2:].split("/"):
        target = target[part]
    merged = dict(_resolve_ref(target, root))
    merged.update({k: v for k, v in schema.items() if k != "$ref"})
    return merged


def apply_defaults(config: dict[str, Any], schema: Mapping[str, Any]) -> dict[str, Any]:
    """Fill every missing key that has a schema default, recursively, in place; return config.

    Only mappings are descended into (list items have no defaults). Values of the wrong type are
    left alone: :func:`schema_problems` reports them.
    """

    def fill(node: dict[str, Any], node_schema: Mapping[str, Any]) -> None:
        node_schema = _resolve_ref(node_schema, schema)
        for key, sub_schema in node_schema.get("properties", {}).items():
            sub_schema = _resolve_ref(sub_schema, schema)
            if key not in node and "default" in sub_schema:
                node[key] = copy.deepcopy(sub_schema["default"])
            if isinstance(node.get(key), dict) and sub_schema.get("type") == "object":
                fill(node[key], sub_schema)

    fill(config, schema)
    return config


def schema_problems(config: Mapping[str, Any], schema: Mapping[str, Any]) -> list[str]:
    """Every JSON-schema violation of ``config``, one readable line each (empty: valid)."""
    import jsonschema

    validator_class = jsonschema.validators.validator_for(schema)
    validator = validator_class(schema)
    problems = []
    for error in sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path))):
        where = ".".join(str(part) for part in error.absolute_path) or "(top level)"
        message = error.message
        if error.validator == "additionalProperties":
            allowed = ", ".join(sorted(error.schema.get("properties", {})))
            message += f"; known keys here: {allowed}"
        elif error.validator == "oneOf" and error.absolute_path and error.absolute_path[0] in ("include", "exclude"):
            message = f"{error.instance!r} must be a value (text or number) or a non-empty list of values"
        problems.append(f"config key '{where}': {message}")
    return problems


# --------------------------------------------------------------------------------------------
# This machine's GPUs (a local sweep's cuda device is checked against them at planning)
# --------------------------------------------------------------------------------------------


def local_gpu_count(environ: Mapping[str, str] | None = None) -> tuple[int, str]:
    """NVIDIA GPUs this machine shows a process (and how that was found), without importing
    torch: ``/proc/driver/nvidia/gpus/`` (one folder per GPU), else ``nvidia-smi -L``; then
    limited by CUDA_VISIBLE_DEVICES when set. (0, reason) when there is no NVIDIA driver."""
    import shutil
    import subprocess

    environ = os.environ if environ is None else environ
    count, how = 0, "no NVIDIA driver (/proc/driver/nvidia/gpus absent, no nvidia-smi)"
    proc = Path("/proc/driver/nvidia/gpus")
    if proc.is_dir():
        count, how = len(list(proc.iterdir())), f"{len(list(proc.iterdir()))} in /proc/driver/nvidia/gpus"
    elif shutil.which("nvidia-smi"):
        try:
            listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
            count = sum(1 for line in listed.splitlines() if line.startswith("GPU "))
            how = f"{count} listed by nvidia-smi -L"
        except (OSError, subprocess.SubprocessError):
            pass
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and count:
        shown = [d for d in visible.split(",") if d.strip() and not d.strip().startswith("-")]
        count, how = min(count, len(shown)), f"{how}, CUDA_VISIBLE_DEVICES={visible!r}"
    return count, how


def local_device_problems(device: Any, environ: Mapping[str, str] | None = None) -> list[str]:
    """``device: cuda``/``cuda:N`` of a sweep whose training jobs run on this machine (given no
    GPU by a scheduler) against this machine's GPUs: a job would fail at start otherwise."""
    text = device.strip() if isinstance(device, str) else ""
    if not (text == "cuda" or (text.startswith("cuda:") and text[5:].isdigit())):
        return []
    index = int(text[5:]) if ":" in text else 0
    count, how = local_gpu_count(environ)
    if index < count:
        return []
    if count == 0:
        return [
            f"device: {text!r} but this machine has no CUDA GPU ({how}); the training jobs run here "
            "(no GPU requested from a scheduler): use device: cpu or auto"
        ]
    return [
        f"device: {text!r} but this machine has {count} CUDA GPU(s) ({how}), cuda:0..cuda:{count - 1}; "
        "use one of those, or device: cuda (or auto)"
    ]
