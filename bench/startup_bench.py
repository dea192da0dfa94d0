"""Start-up benchmark: what one `pepr train` process pays besides training, and a warm allocation.

Side by side in one run (interleaved, medians of ``--repeats``), CPU and wall time of:

* ``import torch``: ``python -c "import torch"``;
* ``bare script``: ``import torch, timm`` + ``timm.create_model(...)`` (the floor of a cell);
* ``pepr train``: one tiny cell (mobilenetv3_small_050, 28 px, 64 images, 1 epoch), cold;
* ``K cold``: K such cells, one process each (``PEPR_WARM=0``), as a packed allocation ran them;
* ``K warm``: the same K cells through one fork server (:mod:`pepr.train.warm`), started for the
  allocation and counted in full (its CPU included).

Targets (issue 27): ``pepr train`` <= 1.1x the bare script; K=8 warm <= 0.4x K=8 cold.

    .venv/bin/python bench/startup_bench.py [--repeats 3] [--k 8]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from benchlib import REPO_ROOT, interleave, machine_line, print_table, run_command

MODEL = "mobilenetv3_small_050"
CELL = [
    "--model",
    MODEL,
    "--dataset",
    "synthetic:size=28,n_train=64,n_val=32,n_test=32",
    "--epochs",
    "1",
    "--threads",
    "1",
]
BARE = f"import torch, timm; timm.create_model('{MODEL}', num_classes=2, in_chans=1)"


def _env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in ("SLURM_JOB_ID", "PEPR_WARM", "PEPR_WARM_KEY")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT / "src"), env.get("PYTHONPATH", "")]))
    return {**env, **extra}


def _cell(out: Path, env: dict[str, str]) -> tuple[float, float]:
    wall, cpu, _ = run_command(
        [sys.executable, "-m", "pepr.cli", "train", *CELL, "--out", str(out), "--retrain"], REPO_ROOT, env
    )
    return wall, cpu


def cold_cells(scratch: Path, k: int) -> tuple[float, float]:
    """K cells, one cold process each."""
    env = _env(PEPR_WARM="0")
    walls, cpus = zip(*(_cell(scratch / f"cold{i}", env) for i in range(k)))
    return sum(walls), sum(cpus)


def warm_cells(scratch: Path, k: int) -> tuple[float, float]:
    """K cells through one fork server: started here (so its CPU time is counted when it exits),
    as the first cell of an allocation would start it."""
    sys.path.insert(0, str(REPO_ROOT / "src"))
    from pepr.train import warm

    runtime = Path(tempfile.mkdtemp(prefix="pw-", dir="/tmp"))
    env = _env(PEPR_WARM_KEY=f"bench-{uuid.uuid4().hex[:8]}", XDG_RUNTIME_DIR=str(runtime))
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        path = warm.socket_path(f"key-{env['PEPR_WARM_KEY']}", warm.server_fingerprint(env))
    finally:
        os.environ.clear()
        os.environ.update(saved)
    before = os.times()
    started = time.perf_counter()
    server = subprocess.Popen(
        [sys.executable, "-m", "pepr.train.warm", str(path), f"key-{env['PEPR_WARM_KEY']}", "1"],
        env=env,
        cwd="/",
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for i in range(k):
            _cell(scratch / f"warm{i}", env)
        wall = time.perf_counter() - started
        server.wait(timeout=120)  # exits after 1 s idle; its CPU joins the children's times
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        shutil.rmtree(runtime, ignore_errors=True)
    after = os.times()
    return wall, (after.children_user - before.children_user) + (after.children_system - before.children_system)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--k", type=int, default=8, help="cells per allocation")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="pepr-startup-"))
    print(machine_line())
    load_before = os.getloadavg()[0]
    try:
        env = _env(PEPR_WARM="0")
        candidates = {
            "import torch": lambda: run_command([sys.executable, "-c", "import torch"], REPO_ROOT, env)[:2],
            "bare script": lambda: run_command([sys.executable, "-c", BARE], REPO_ROOT, env)[:2],
            "pepr train": lambda: _cell(scratch / "one", env),
            f"K={args.k} cold": lambda: cold_cells(scratch, args.k),
            f"K={args.k} warm": lambda: warm_cells(scratch, args.k),
        }
        timings = interleave(candidates, args.repeats)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    cpu = {label: statistics.median(t.cpu_s) for label, t in timings.items()}
    wall = {label: t.median for label, t in timings.items()}
    rows = [(label, f"{wall[label]:.2f}", f"{cpu[label]:.2f}", timings[label].spread) for label in timings]
    print_table(
        f"Start-up, medians of {args.repeats} interleaved repeats",
        rows,
        ("candidate", "wall s", "CPU s", "wall min-max"),
    )
    cold, hot = f"K={args.k} cold", f"K={args.k} warm"
    ratios = [
        (
            "pepr train / bare script",
            f"{cpu['pepr train'] / cpu['bare script']:.2f}",
            f"{wall['pepr train'] / wall['bare script']:.2f}",
            "<= 1.1",
        ),
        (f"K={args.k} warm / cold", f"{cpu[hot] / cpu[cold]:.2f}", f"{wall[hot] / wall[cold]:.2f}", "<= 0.4"),
        (f"per-cell fixed cost, warm (K={args.k})", f"{cpu[hot] / args.k:.2f} s", f"{wall[hot] / args.k:.2f} s", ""),
    ]
    print_table("Ratios", ratios, ("ratio", "CPU", "wall", "target"))
    print(
        f"\nload average at start {load_before:.2f}, at end {os.getloadavg()[0]:.2f} (shared machine: ratios, not absolute times)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
