"""Independent archives (`previous/<time>/` copies with SHA256SUMS) vs the hard links they
replace, on the paper grid's results: extra disk, time to publish every cell, and the planning
scan that finds lost or edited results (pepr.plan.rules.outputs_to_repair).

Lays out, in a temporary folder, N finished run folders (default 1,040: the paper grid's
training cells) with realistic metrics.json / history.csv (bench/synthetic_runs.py, 10 epochs as
config/paper.yaml), twice:

* ``links``: the earlier layout, archive written, then hard links into the run folder;
* ``copies``: :func:`pepr.results.runs.publish_finished` (copies, reflinks where the file
  system has them, and SHA256SUMS in the archive).

Then, interleaved: publishing every cell (fresh trees each repeat), and the planning scan over
the finished folders. Prints medians, ratios, and the disk each tree takes (allocated blocks of
distinct inodes, so hard links count once).

    .venv/bin/python bench/archive_bench.py [--cells 1040] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from benchlib import interleave, machine_line, print_table  # noqa: E402
from synthetic_runs import synthetic_metrics  # noqa: E402

from pepr.plan.rules import outputs_to_repair  # noqa: E402
from pepr.results import runs  # noqa: E402


def payloads(cells: int) -> list[tuple[dict, list[dict]]]:
    rng = random.Random(0)
    found = []
    for index in range(cells):
        metrics = synthetic_metrics("pneumoniamnist", "scratch", 1.0, f"model{index:04d}", 0, index, rng)
        history = [
            {
                "epoch": epoch + 1,
                "train_loss": 1.0 / (epoch + 1),
                "val_accuracy": metrics.get("val_accuracy", 0.0),
                "epoch_time_s": metrics.get("train_time_s", 0.0) / 10,
                "energy_kwh": metrics.get("energy_kwh", 0.0) / 10,
            }
            for epoch in range(10)
        ]
        found.append((metrics, history))
    return found


def publish_links(out_dir: Path, metrics: dict, history: list[dict]) -> None:
    """The earlier layout: the archive, then hard links of its files into the run folder."""
    archive = runs.archive_result(out_dir, metrics, history)
    (archive / runs.SUMS_FILE).unlink()  # the earlier archives had none
    for name in (runs.HISTORY_FILE, runs.METRICS_FILE):
        os.link(archive / name, out_dir / name)


def build(root: Path, data: list, how: str) -> tuple[float, float]:
    if root.exists():
        shutil.rmtree(root)
    cpu0, start = time.process_time(), time.perf_counter()
    for index, (metrics, history) in enumerate(data):
        out = root / f"cell{index:05d}"
        if how == "links":
            publish_links(out, metrics, history)
        else:
            runs.publish_finished(out, metrics, history)
    return time.perf_counter() - start, time.process_time() - cpu0


def disk_bytes(root: Path) -> int:
    seen, total = set(), 0
    for folder, _dirs, files in os.walk(root):
        for name in files:
            info = os.stat(os.path.join(folder, name), follow_symlinks=False)
            if (info.st_dev, info.st_ino) not in seen:
                seen.add((info.st_dev, info.st_ino))
                total += info.st_blocks * 512
    return total


def scan(root: Path) -> tuple[float, float]:
    folders = [str(p) for p in sorted(root.iterdir())]
    cpu0, start = time.process_time(), time.perf_counter()
    found = outputs_to_repair(folders)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
    assert not found, found
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=1040)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(machine_line())
    data = payloads(args.cells)
    with tempfile.TemporaryDirectory(prefix="pepr-archive-bench-") as tmp:
        base = Path(tmp)
        timings = interleave(
            {
                "publish, hard links (before)": lambda: build(base / "links", data, "links"),
                "publish, copies + SHA256SUMS (now)": lambda: build(base / "copies", data, "copies"),
            },
            args.repeats,
        )
        scans = interleave(
            {"scan, hard links": lambda: scan(base / "links"), "scan, copies": lambda: scan(base / "copies")},
            args.repeats,
        )
        sizes = {how: disk_bytes(base / how) for how in ("links", "copies")}
        result_bytes = sum(
            os.path.getsize(base / "copies" / f"cell{i:05d}" / name)
            for i in range(args.cells)
            for name in (runs.METRICS_FILE, runs.HISTORY_FILE)
        )
    rows = []
    first = None
    for label, timing in {**timings, **scans}.items():
        wall, cpu = statistics.median(timing.wall_s), statistics.median(timing.cpu_s)
        if label.startswith("publish") and first is None:
            first = wall
        base_wall = first if label.startswith("publish") else statistics.median(next(iter(scans.values())).wall_s)
        rows.append((label, f"{wall:.3f}", f"{cpu:.3f}", f"{wall / base_wall:.2f}x", f"{1000 * wall / args.cells:.2f}"))
    print_table(
        f"{args.cells} finished cells, median of {args.repeats}",
        rows,
        ("candidate", "wall s", "CPU s", "vs first", "ms per cell"),
    )
    print(
        f"\ndisk: hard links {sizes['links'] / 2**20:.2f} MiB, copies {sizes['copies'] / 2**20:.2f} MiB "
        f"(+{(sizes['copies'] - sizes['links']) / 2**20:.2f} MiB, {sizes['copies'] / sizes['links']:.2f}x); "
        f"result files themselves {result_bytes / 2**20:.2f} MiB (apparent size)"
    )


if __name__ == "__main__":
    main()
