"""Image conversion benchmark (issue 16): a ``folder:`` dataset of N PNG files of 224 px converted
into its cached npz by :func:`pepr.datasets.images.prepare`, against decoding the same files with Pillow
alone.

Side by side in one run, interleaved (A B A B ...):

* ``pillow``: ``Image.open(path).load()`` for every file, one process: the floor any conversion
  pays;
* ``convert-1``: ``pepr.datasets.images.prepare`` with one worker (listing, header pass, decode, sha1 of
  every file for the identical-files check, the npz and its JSON written), the cache deleted
  before each repeat so it really converts;
* ``convert-N``: the same with the job's cores (``--workers``, default all this process may use).

Prints the medians and the ratios convert/pillow. Target: convert <= ~2x pillow.

``--rss``: peak memory instead. Each candidate converts (one worker, a fresh process, cache
deleted) a ``csv:`` manifest of the first N/4 and of all N files, and prints its peak RSS beside
the size of the dataset's pixels: the conversion streams chunks into the npz, so its peak must
not grow with N (target: 100,000 images at 224 px within 2 GB). ``--baseline-src PATH`` adds
another checkout's ``src`` (e.g. an older pepr) as a side-by-side candidate.
The PNGs are real PneumoniaMNIST X-rays upscaled to 224 px when ../shared has them, smooth
noise otherwise (the line says which); they are kept between runs in $TMPDIR/pepr-bench.

    .venv/bin/python bench/image_convert_bench.py [--files 10000] [--size 224] [--repeats 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time
from pathlib import Path

import numpy as np
from benchlib import interleave, machine_line, mark_ready, print_table, work_dir

REPO = Path(__file__).resolve().parents[1]


def source_images(count: int, size: int) -> tuple[np.ndarray, np.ndarray, str]:
    from PIL import Image

    for candidate in (REPO.parent / "shared", REPO.parent.parent / "shared"):
        path = candidate / "data" / "medmnist" / "pneumoniamnist.npz"
        if path.is_file():
            with np.load(path) as archive:
                x, y = archive["train_images"], archive["train_labels"].reshape(-1)
            by_class = [np.flatnonzero(y == c) for c in (0, 1)]
            picked = np.array([by_class[i % 2][(i // 2) % len(by_class[i % 2])] for i in range(count)])
            big = np.stack(
                [np.asarray(Image.fromarray(x[i]).resize((size, size), Image.Resampling.BICUBIC)) for i in picked]
            )
            return big, y[picked], f"real PneumoniaMNIST X-rays upscaled to {size} px ({path})"
    rng = np.random.default_rng(0)
    low = rng.integers(0, 256, (count, 14, 14)).astype(np.uint8)
    big = np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.Resampling.BICUBIC)) for im in low])
    return big, rng.integers(0, 2, count), "smooth noise (no ../shared data here)"


def main() -> None:
    from PIL import Image

    from pepr.datasets import images

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=images.default_workers())
    parser.add_argument("--rss", action="store_true", help="measure peak RSS of one-worker conversions instead of time")
    parser.add_argument("--baseline-src", type=Path, help="with --rss: another checkout's src/ to compare against")
    args = parser.parse_args()

    stamp = f"png v3 {args.files} {args.size}"
    root, ready = work_dir("image-convert", stamp)
    folder = root / "xrays"
    if not ready:
        pixels, labels, what = source_images(args.files, args.size)
        for i, (image, label) in enumerate(zip(pixels, labels)):
            # the real set has fewer images than files wanted: a corner pixel makes every file
            # unique (pepr rejects identical files in two splits)
            image = image.copy()
            image[0, 0], image[0, 1] = i % 256, i // 256
            target = folder / ("normal", "pneumonia")[int(label)]
            target.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(target / f"{i:05d}.png")
        (root / "what.txt").write_text(what)
        mark_ready(root, stamp)
    files = sorted(folder.rglob("*.png"))
    data_dir = root / "data"
    spec = f"folder:{folder}"
    if args.rss:
        peak_rss(root, files, args)
        return

    def pillow() -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        for path in files:
            with Image.open(path) as image:
                image.load()
        return time.perf_counter() - wall, time.process_time() - cpu

    def convert(workers: int):
        def run() -> tuple[float, float]:
            shutil.rmtree(data_dir, ignore_errors=True)
            wall, cpu = time.perf_counter(), time.process_time()
            images.prepare(spec, data_dir, workers=workers)
            return time.perf_counter() - wall, time.process_time() - cpu

        return run

    pillow()  # warm the page cache: every candidate reads the files from memory
    candidates = {"pillow": pillow, "convert-1": convert(1)}
    if args.workers > 1:
        candidates[f"convert-{args.workers}"] = convert(args.workers)
    timings = interleave(candidates, args.repeats)
    print(machine_line())
    print(
        f"{len(files)} PNG files of {args.size} px: {(root / 'what.txt').read_text()}; "
        f"{sum(p.stat().st_size for p in files) / 2**20:.0f} MiB on disk"
    )
    floor = statistics.median(timings["pillow"].wall_s)
    rows = []
    for label, timing in timings.items():
        median = statistics.median(timing.wall_s)
        rows.append((label, f"{median:.2f}", f"{median / floor:.2f}x", ", ".join(f"{w:.2f}" for w in timing.wall_s)))
    print_table(
        "conversion vs Pillow decode alone (wall s, median of repeats)",
        rows,
        ("candidate", "median s", "vs pillow", "each"),
    )
    assert images.is_current(spec, data_dir)


_CHILD = """
import sys
from pathlib import Path
from pepr.datasets import images
images.prepare(sys.argv[1], Path(sys.argv[2]), workers=1)
# VmHWM: this process's own peak (ru_maxrss would keep the forking parent's across exec)
status = Path("/proc/self/status").read_text().splitlines()
print(int(next(line for line in status if line.startswith("VmHWM:")).split()[1]) * 1024)
"""


def peak_rss(root: Path, files: list[Path], args) -> None:
    """Peak RSS of one-worker conversions of N/4 and N files, per candidate source tree."""
    import csv
    import os
    import subprocess
    import sys

    sources = {"this checkout": REPO / "src"}
    if args.baseline_src:
        sources["baseline"] = args.baseline_src.resolve()
    rows = []
    for count in sorted({max(8, len(files) // 4), len(files)}):
        manifest = root / f"manifest-{count}.csv"
        with open(manifest, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "label"])
            by_number = sorted(files, key=lambda path: path.name)  # both classes in every prefix
            writer.writerows([str(path.relative_to(root)), path.parent.name] for path in by_number[:count])
        pixels = count * args.size * args.size
        for label, src in sources.items():
            data_dir = root / "data-rss"
            shutil.rmtree(data_dir, ignore_errors=True)
            wall = time.perf_counter()
            result = subprocess.run(
                [sys.executable, "-c", _CHILD, f"csv:{manifest}", str(data_dir)],
                capture_output=True,
                text=True,
                env={**os.environ, "PYTHONPATH": str(src)},
                check=True,
            )
            peak = int(result.stdout.split()[-1])
            rows.append(
                (label, str(count), f"{pixels / 2**20:.0f}", f"{peak / 2**20:.0f}", f"{time.perf_counter() - wall:.1f}")
            )
    print(machine_line())
    print(f"{len(files)} PNG files of {args.size} px: {(root / 'what.txt').read_text()}")
    print_table(
        "peak RSS of a one-worker conversion (fresh process)",
        rows,
        ("source", "images", "pixels MiB", "peak RSS MiB", "wall s"),
    )


if __name__ == "__main__":
    main()
