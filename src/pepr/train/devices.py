"""Device strings: the one parser (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``) and the choice
of a torch device from what is available. Standard library only; the workflow schema's
``device`` pattern accepts the same strings (tests/test_settings.py holds them equal)."""

from __future__ import annotations

from typing import Any

from pepr.errors import PeprInputError

#: Device names without an index.
DEVICE_NAMES = ("auto", "cpu", "cuda", "mps")
_USAGE = "use auto, cpu, cuda, cuda:N or mps"


def device_problems(device: Any) -> list[str]:
    """Problems with a device string ([] when it is one of the accepted forms)."""
    text = device.strip() if isinstance(device, str) else ""
    if text in DEVICE_NAMES or (text.startswith("cuda:") and text[5:].isdigit()):
        return []
    return [f"unknown device {device!r}; {_USAGE}"]


def parse_device(requested: str) -> str:
    """The device string, stripped; PeprInputError when it is not an accepted form."""
    problems = device_problems(requested)
    if problems:
        raise PeprInputError(problems[0])
    return requested.strip()


def cuda_index(device: str) -> int | None:
    """N of ``cuda:N`` (0 for ``cuda``); None for a device that is not CUDA."""
    text = parse_device(device)
    if not text.startswith("cuda"):
        return None
    return int(text[5:]) if ":" in text else 0


def resolve_device(requested: str, cuda_available: bool, cuda_count: int = 1, mps_available: bool = False) -> str:
    """Pick the torch device: ``auto`` -> ``cuda`` when available, else ``cpu``.

    Pure function (availability passed in) so the choice is unit-tested without a GPU.
    An explicit GPU device that is not there is a :class:`PeprInputError`, never a silent CPU run.
    """
    text = parse_device(requested)
    if text == "auto":
        return "cuda" if cuda_available else "cpu"
    if text.startswith("cuda"):
        if not cuda_available:
            raise PeprInputError(f"device {text!r} requested but CUDA is not available here; use --device cpu or auto")
        index = cuda_index(text)
        if index >= cuda_count:
            raise PeprInputError(f"device {text!r} requested but only {cuda_count} CUDA device(s) are visible")
    if text == "mps" and not mps_available:
        raise PeprInputError("device 'mps' requested but Apple MPS is not available; use --device cpu or auto")
    return text
