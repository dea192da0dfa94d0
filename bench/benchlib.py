"""Shared helpers for the benchmarks in ``bench/``: side-by-side timing and result printing, and
the set-up several of them build (Snakemake commands on pepr's workflow, the workflow of an
earlier git revision, scaled configs, stand-in data files).

The machine these run on is shared and noisy, so every benchmark measures its candidates
interleaved in one run (A, B, A, B, ...) and reports the median of each plus their ratio;
absolute times are printed for context only. Each script is run directly
(``python bench/NAME.py``); this module sits beside them on ``sys.path``.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

#: Repository root (bench/ lives directly under it).
REPO_ROOT = Path(__file__).resolve().parents[1]


def venv_bin(name: str) -> str:
    """Path of an executable installed beside the running Python (the project's venv)."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


#: Snakemake's options for a dry run that prints only the jobs per rule, on one core.
DRY_RUN = ("-n", "--quiet", "rules", "-c1")


def workflow_command(
    config: Path,
    workdir: Path,
    *options: str,
    snakefile: Path = REPO_ROOT / "Snakefile",
    launcher: Sequence[str] | None = None,
) -> list[str]:
    """Snakemake running the workflow ``snakefile`` (pepr's) on ``config`` in ``workdir``, then ``options``.

    ``launcher`` starts Snakemake (default: the venv's ``snakemake``; e.g. ``python -m cProfile
    -o FILE -m snakemake`` to profile it).
    """
    launch = list(launcher) if launcher is not None else [venv_bin("snakemake")]
    return [*launch, "-s", str(snakefile), "-d", str(workdir), "--configfile", str(config), *options]


@dataclass
class Timing:
    """Wall times (seconds) of repeated runs of one candidate, plus its CPU share."""

    label: str
    wall_s: list[float] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        """Median wall time in seconds."""
        return statistics.median(self.wall_s)

    @property
    def spread(self) -> str:
        """min-max of the wall times, for the printed table."""
        return f"{min(self.wall_s):.2f}-{max(self.wall_s):.2f}"


def run_command(cmd: Sequence[str], cwd: Path, env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """Run ``cmd`` to completion; return (wall seconds, child CPU seconds, combined output).

    Raises RuntimeError with the command's output when it fails, so a broken benchmark never
    reports a time for a command that did not do its work.
    """
    before = os.times()
    start = time.perf_counter()
    proc = subprocess.run(list(cmd), cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wall = time.perf_counter() - start
    after = os.times()
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    if proc.returncode != 0:
        raise RuntimeError(
            f"command failed with exit code {proc.returncode}: {' '.join(cmd)} (in {cwd})\n{proc.stdout[-4000:]}"
        )
    return wall, cpu, proc.stdout


def interleave(candidates: dict[str, Callable[[], float | tuple[float, float]]], repeats: int) -> dict[str, Timing]:
    """Call each candidate ``repeats`` times, alternating between them (A B A B ...).

    A candidate returns its wall time, or (wall, cpu) seconds. Interleaving spreads the
    machine's background load evenly over the candidates, which makes their ratio trustworthy
    even when the absolute times are not.
    """
    timings = {label: Timing(label) for label in candidates}
    for _ in range(repeats):
        for label, call in candidates.items():
            result = call()
            wall, cpu = result if isinstance(result, tuple) else (result, float("nan"))
            timings[label].wall_s.append(wall)
            timings[label].cpu_s.append(cpu)
    return timings


def cpu_share(timing: Timing) -> float:
    """CPU seconds per wall second of a single-threaded candidate (~1.0 on a quiet machine)."""
    pairs = [(w, c) for w, c in zip(timing.wall_s, timing.cpu_s) if c == c and w > 0]
    if not pairs:
        return float("nan")
    return sum(c for _, c in pairs) / sum(w for w, _ in pairs)


def print_table(title: str, rows: list[tuple[str, ...]], header: tuple[str, ...]) -> None:
    """Print a Markdown table (pasted as is into BENCHMARKS.md)."""
    print(f"\n### {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


def machine_line() -> str:
    """One line describing the machine: cores, load average, Python."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return (
        f"machine: {os.cpu_count()} cores, load average {load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f}, "
        f"Python {sys.version.split()[0]}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )


def work_dir(name: str, stamp: str, base: Path | None = None) -> tuple[Path, bool]:
    """A reusable scratch folder for one benchmark's generated inputs; returns (path, ready).

    Deleting tens of thousands of small files is very slow on some disks (2+ minutes for 24,000
    run folders on the reference VM, whose ext4 is mounted with ``discard``), so generated inputs
    are kept between runs under ``base`` (default: ``$TMPDIR/pepr-bench``) and reused while
    ``stamp`` (a description of what was generated) is unchanged. ``ready`` is False when the
    caller must (re)generate the contents; the folder is then empty.
    """
    import shutil
    import tempfile

    root = (base or Path(tempfile.gettempdir()) / "pepr-bench") / name
    stamp_file = root / ".stamp"
    if stamp_file.is_file() and stamp_file.read_text() == stamp:
        return root, True
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    return root, False


def mark_ready(root: Path, stamp: str) -> None:
    """Record that ``root`` holds complete generated inputs for ``stamp`` (see :func:`work_dir`)."""
    (root / ".stamp").write_text(stamp)


def scaled_config(paper_config: Path, fractions: list[float], seeds: list[int], out: Path) -> Path:
    """The paper config with other fractions and seeds, every cell crossed (no include/exclude):
    a bigger grid of the same models."""
    import yaml

    config = yaml.safe_load(paper_config.read_text())
    config["fractions"] = fractions
    config["seeds"] = seeds
    config.pop("include", None)
    config.pop("exclude", None)
    out.write_text(yaml.safe_dump(config, sort_keys=False))
    return out


def write_stand_in_npz(workdir: Path, config: Path) -> None:
    """A tiny MedMNIST-layout file for every ``npz:`` dataset of ``config`` (relative paths are
    read from the working directory); planning only reads its header."""
    import numpy as np
    import yaml

    specs = yaml.safe_load(config.read_text()).get("datasets", [])
    for spec in specs:
        if not str(spec).startswith("npz:"):
            continue
        path = workdir / spec[len("npz:") :]
        path.parent.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        arrays = {}
        for split, count in (("train", 40), ("val", 20), ("test", 20)):
            arrays[f"{split}_images"] = rng.integers(0, 256, (count, 64, 64), dtype=np.uint8)
            arrays[f"{split}_labels"] = (np.arange(count) % 2).reshape(count, 1).astype(np.uint8)
        np.savez(path, **arrays)


def workflow_at(revision: str, out: Path) -> Path:
    """The workflow (Snakefile, workflow/, scripts/) of git ``revision`` in ``out``, with the
    current config/ and profiles/ (the package is this checkout's). Returns its Snakefile."""
    import shutil

    out.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "archive", revision, "Snakefile", "workflow", "scripts"],
        cwd=REPO_ROOT,
        capture_output=True,
        check=False,
    )
    if archive.returncode != 0:
        raise SystemExit(f"--before {revision}: git archive failed: {archive.stderr.decode().strip()}")
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive.stdout, check=True)
    for name in ("profiles", "config"):
        shutil.copytree(REPO_ROOT / name, out / name)
    return out / "Snakefile"
