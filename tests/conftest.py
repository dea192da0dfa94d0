"""Session set-up shared by every test module.

Outside the SLURM tier (tests/test_workflow_slurm.py), the SLURM commands on PATH are replaced by
stand-ins that fail at once, as on a machine without a reachable SLURM controller. Why: every
Snakemake process imports snakemake-executor-plugin-slurm, which runs ``scontrol show config`` at
import time; where the SLURM client is installed but no controller answers (a developer's box,
or this suite after the SLURM tier stopped its single-node cluster), that call waits ~9-10 s for
each of the suite's ~100 Snakemake processes. A machine without SLURM answers at once, and the
local tiers test exactly that machine. The stand-ins also make sure a local test can never
submit to a real cluster. The SLURM tier puts the real commands back (fixture ``real_slurm_commands``).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

#: The SLURM client commands Snakemake's plugin or pepr may call.
SLURM_COMMANDS = ("scontrol", "sacct", "squeue", "sinfo", "sbatch", "srun", "scancel")
#: Environment variable naming the stand-ins' folder (for :func:`real_slurm_commands`).
STUBS_VARIABLE = "PEPR_TEST_SLURM_STUBS"


def _write_stubs(folder: Path) -> None:
    for name in SLURM_COMMANDS:
        path = folder / name
        path.write_text(f'#!/bin/sh\necho "{name}: no SLURM controller outside the SLURM test tier" >&2\nexit 1\n')
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


@pytest.fixture(scope="session", autouse=True)
def no_slurm_controller(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Put fail-at-once SLURM stand-ins first on PATH for the whole session (see the module
    docstring); subprocesses inherit it."""
    folder = tmp_path_factory.mktemp("slurm-stand-ins")
    _write_stubs(folder)
    saved = {key: os.environ.get(key) for key in ("PATH", STUBS_VARIABLE)}
    os.environ["PATH"] = os.pathsep.join([str(folder), os.environ.get("PATH", "")])
    os.environ[STUBS_VARIABLE] = str(folder)
    try:
        yield folder
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def real_slurm_commands() -> Iterator[None]:
    """The real SLURM commands on PATH (the stand-ins removed) for a module of the SLURM tier,
    the stand-ins back afterwards."""
    stubs = os.environ.get(STUBS_VARIABLE)
    saved = os.environ.get("PATH", "")
    if stubs:
        os.environ["PATH"] = os.pathsep.join(p for p in saved.split(os.pathsep) if p != stubs)
    try:
        yield
    finally:
        os.environ["PATH"] = saved
