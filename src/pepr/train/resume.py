"""Resume state of a training run (``out_dir/resume.pt``), saved after every finished epoch.

The file is read with ``torch.load(weights_only=True)``: it holds only tensors and plain Python
values (the settings fingerprint as JSON text, RNG states as ByteTensors), so a resume.pt planted
by anyone who can write the run folder cannot run code as the sweep's owner. A file that cannot
be read (truncated by a kill mid-write on a file system without atomic rename, a foreign or
malicious pickle, a structure of an older pepr) is renamed aside as ``resume.pt.corrupt-<UTC
time>`` with one log line, and the run restarts from epoch 1: nothing is lost that could be used.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: File name of the resume state in a run folder (pepr.results.runs.RESUME_FILE).
RESUME_NAME = "resume.pt"

#: Settings a resume checkpoint of an earlier pepr matched (still accepted, see :func:`load_resume`).
FINGERPRINT_KEYS: tuple[str, ...] = (
    "model",
    "dataset",
    "init",
    "fraction",
    "epochs",
    "seed",
    "image_size",
    "batch_size",
    "lr",
    "precision",
)


@dataclass
class RunState:
    """What survives preemption: finished epochs, their history rows and the measured peaks."""

    epochs_done: int = 0
    segments: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    peak: dict[str, float] = field(default_factory=dict)
    process_seconds: float = 0.0


def fingerprint(settings: Mapping[str, Any]) -> str:
    """The settings a checkpoint belongs to, as canonical JSON text (a plain type for weights_only).

    With ``settings["identity"]`` (what ``pepr train`` passes: :func:`pepr.train.run.training_identity`,
    every setting that changes what is trained or how it is measured: model, dataset name and
    content, init and checkpoint content, fraction, epochs, seed, image size, batch size, lr,
    precision, device), that identity. Country and carbon-intensity series are not part of it:
    a run's CO2 is derived from its measured energy per epoch at the end, for all epochs with
    the same intensity (so a resumed segment never mixes two).
    """
    if settings.get("identity") is not None:
        return json.dumps(settings["identity"], sort_keys=True, default=str)
    return legacy_fingerprint(settings)


def legacy_fingerprint(settings: Mapping[str, Any]) -> str:
    """The fingerprint resume files of pepr before the identity were saved with."""
    values = {key: settings.get(key) for key in FINGERPRINT_KEYS}
    data_dir = settings.get("data_dir")
    values["data_dir"] = str(data_dir) if data_dir else None
    return json.dumps(values, sort_keys=True, default=str)


def save_resume(
    path: Path, settings: Mapping[str, Any], model: Any, optimizer: Any, generator: Any, state: RunState
) -> None:
    """Atomically save everything needed to continue after the finished epochs."""
    import torch

    payload = {
        "fingerprint": fingerprint(settings),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "generator": generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "state": dataclasses.asdict(state),
    }
    from pepr.results.runs import write_new_then_replace

    def write(handle: Any) -> None:
        torch.save(payload, handle)
        handle.flush()
        os.fsync(handle.fileno())

    # A new, unpredictably named sibling (O_EXCL|O_NOFOLLOW: never through a link), removed on
    # every way out, then renamed: a full disk leaves no partial file that keeps it full, and the
    # last finished epoch's resume.pt is replaced only by a whole one.
    try:
        write_new_then_replace(path, write)
    except RuntimeError as exc:  # torch's stream writer reports a failed write as RuntimeError
        if "write" in str(exc).lower():
            raise OSError(
                errno.ENOSPC if _full(path) else errno.EIO,
                f"saving the resume state failed ({' '.join(str(exc).split())[:200]})",
                str(path),
            ) from None
        raise


#: Temp files of :func:`save_resume` start with this (a dot: hidden from ``ls``).
TEMP_PREFIX = "."


def remove_stale_temp_files(out_dir: Path, log: Callable[[str], None]) -> None:
    """Delete temp files of earlier :func:`save_resume` calls killed mid-write (``kill -9``, a
    node failure): under the run-folder lock no other process can be writing them."""
    # both temp-name patterns: ".resume.pt.tmp<pid>-<hex>" (here) and ".resume.pt.<pid>.<uuid>.tmp"
    # (pepr.results.runs' atomic writes)
    patterns = (f"{TEMP_PREFIX}{RESUME_NAME}.tmp*", f"{TEMP_PREFIX}{RESUME_NAME}.*.tmp")
    stale_files = {path for pattern in patterns for path in Path(out_dir).glob(pattern)}
    for stale in sorted(stale_files):
        try:
            size = stale.stat().st_size
            stale.unlink()
        except OSError:
            continue
        log(f"removed {stale.name} ({size} bytes), a resume save interrupted earlier")


def _full(path: Path) -> bool:
    import shutil

    try:
        return shutil.disk_usage(path.parent).free < 2**20
    except OSError:
        return False


class _Unusable(Exception):
    """The resume file cannot be used; the message says why (one line)."""


def _read_payload(path: Path) -> dict[str, Any]:
    import torch

    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, not a torch file, or a pickle with code in it
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise _Unusable(f"unreadable ({type(exc).__name__}: {first_line[:200]})") from None
    if not isinstance(payload, dict):
        raise _Unusable(f"not a pepr resume file (holds a {type(payload).__name__})")
    missing = [
        key for key in ("fingerprint", "model", "optimizer", "generator", "torch_rng", "state") if key not in payload
    ]
    if missing:
        raise _Unusable(f"not a pepr resume file (missing {', '.join(missing)})")
    return payload


def _check_model_state(model: Any, saved: Any) -> None:
    """Keys and shapes must match before anything is loaded, so a failure leaves the model untouched."""
    target = model.state_dict()
    if not isinstance(saved, Mapping) or set(saved) != set(target):
        raise _Unusable("its model weights do not match this model")
    for key, tensor in target.items():
        if getattr(saved[key], "shape", None) != tensor.shape:
            raise _Unusable(
                f"its weight {key} has shape {tuple(getattr(saved[key], 'shape', ()))}, the model {tuple(tensor.shape)}"
            )


def load_resume(
    path: Path, settings: Mapping[str, Any], model: Any, optimizer: Any, generator: Any, log: Callable[[str], None]
) -> RunState:
    """Restore model, optimizer, RNGs and run state from ``path``, or start afresh.

    A checkpoint of other settings is deleted (it belongs to a run that no longer exists); an
    unusable file is renamed aside (kept for inspection) with one log line. Either way the run
    restarts from epoch 1 with a fresh :class:`RunState`.
    """
    import torch

    try:
        payload = _read_payload(path)
        # an earlier pepr's checkpoint of the same settings continues too (no lost epochs on upgrade)
        if payload["fingerprint"] not in (fingerprint(settings), legacy_fingerprint(settings)):
            log(f"{path} was saved with other settings ({payload['fingerprint']}); starting from epoch 1")
            path.unlink()
            return RunState()
        _check_model_state(model, payload["model"])
        state = RunState(**payload["state"])
        generator.set_state(payload["generator"])  # a local generator: reseeded on a restart anyway
        optimizer.load_state_dict(payload["optimizer"])  # checks the groups before changing anything
        model.load_state_dict(payload["model"])
        torch.set_rng_state(payload["torch_rng"])
        if payload.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(payload["cuda_rng"])
    except (_Unusable, TypeError, ValueError, KeyError, RuntimeError) as exc:
        aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
        os.replace(path, aside)
        generator.manual_seed(int(settings["seed"]))  # as a fresh run, whatever was restored
        log(f"{path} cannot be used ({exc}); moved to {aside.name}, starting from epoch 1")
        return RunState()
    log(f"resuming from {path}: {state.epochs_done} epoch(s) done in {state.segments} earlier segment(s)")
    return state
