"""Limits on what an image .npz may declare, checked from its .npy headers before anything is read.

An npz is a zip of .npy files whose headers state shape and dtype; numpy allocates whatever they
state. A 1 KB file claiming 40000x40000 images, 10^11 rows or a label of 10^12 (then
``set(range(label))``) exhausted memory in validation or the job. :func:`header_limit_problems`
checks the headers against the limits below (documented in config/README.md), and
:func:`memory_problem` checks the decoded size against the memory this machine has available
(in ``pepr train``, just before the arrays are read). Stdlib + numpy dtypes only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

#: Smallest and largest image side (pixels) pepr reads or converts to, for every dataset kind:
#: under 8 px the models' strided stems leave nothing; MedMNIST+ goes to 224, CT/X-ray crops
#: rarely beyond 1024, and 4096 bounds what one image may allocate.
MIN_IMAGE_SIDE = 8
MAX_IMAGE_SIDE = 4096
#: Most rows (images) of one split: MedMNIST's largest split has 165,466.
MAX_ROWS = 10_000_000
#: Largest class index + 1 (ImageNet has 1,000 classes; MedMNIST at most 11).
MAX_CLASSES = 10_000
#: Largest decoded size of all arrays of one file (bytes); the machine's memory is checked too.
MAX_TOTAL_BYTES = 2**40


def header_limit_problems(where: str, headers: Mapping[str, tuple[tuple[int, ...], Any]]) -> list[str]:
    """Problems of array headers (``name -> (shape, dtype)``) against the limits of this module."""
    problems: list[str] = []
    total = 0
    for name, (shape, dtype) in sorted(headers.items()):
        if shape and shape[0] > MAX_ROWS:
            problems.append(f"{where}: {name} declares {shape[0]:,} rows; pepr reads at most {MAX_ROWS:,} per split")
        if name.endswith("_images") and len(shape) >= 3 and max(shape[1:3]) > MAX_IMAGE_SIDE:
            problems.append(
                f"{where}: {name} declares {shape[1]}x{shape[2]} images; pepr reads images of at most "
                f"{MAX_IMAGE_SIDE} px a side (resize them, e.g. to 224)"
            )
        total += math.prod(shape) * getattr(dtype, "itemsize", 1)
    if not problems and total > MAX_TOTAL_BYTES:
        problems.append(
            f"{where}: its arrays declare {_gib(total)} once read; pepr reads at most {_gib(MAX_TOTAL_BYTES)}"
        )
    return problems


def label_limit_problem(where: str, largest_label: int) -> str | None:
    """One line when a class index is beyond :data:`MAX_CLASSES` (checked before any per-class work)."""
    if largest_label >= MAX_CLASSES:
        return (
            f"{where}: a label is {largest_label:,}; labels are class indices 0..K-1 with K at most "
            f"{MAX_CLASSES:,} (renumber the classes)"
        )
    return None


def decoded_bytes(headers: Mapping[str, tuple[tuple[int, ...], Any]]) -> int:
    """Bytes all arrays take once read (what ``np.load`` allocates)."""
    return sum(math.prod(shape) * getattr(dtype, "itemsize", 1) for shape, dtype in headers.values())


def available_memory_bytes() -> int | None:
    """MemAvailable of this machine (Linux), bounded by a cgroup v2 memory limit when one is set."""
    available = None
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError):
        return None
    try:
        with open("/sys/fs/cgroup/memory.max", encoding="ascii") as handle:
            text = handle.read().strip()
        if text.isdigit():
            with open("/sys/fs/cgroup/memory.current", encoding="ascii") as handle:
                used = int(handle.read().strip())
            available = min(available, int(text) - used) if available is not None else int(text) - used
    except (OSError, ValueError):
        pass
    return available


def memory_problem(where: str, headers: Mapping[str, tuple[tuple[int, ...], Any]]) -> str | None:
    """One line when reading the arrays would not fit the memory available now; None when it
    fits or cannot be known."""
    needed = decoded_bytes(headers)
    available = available_memory_bytes()
    if available is None or needed <= available:
        return None
    return (
        f"{where}: reading it needs {_gib(needed)} of memory, this machine has {_gib(available)} available; "
        "use a machine (or SLURM job, resources.train.mem_mb) with more memory, or smaller images"
    )


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"
