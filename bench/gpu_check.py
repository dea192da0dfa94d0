"""GPU check of pepr's training path: the parts the CPU test suite cannot exercise for real.

On one CUDA GPU, side by side in one run, it prints:

1. throughput of pepr's loop (:func:`pepr.train.loop.train_epoch`: uint8 on the device, normalised per
   batch, channels_last, optional bf16 autocast) vs a bare PyTorch loop on pre-normalised float
   tensors, as a ratio per precision (target >= 0.97);
2. energy of one epoch from CodeCarbon, which must include a positive NVML GPU reading;
3. the training's working-set memory (``peak_memory_mb``) at fraction 1.0 vs 0.1 (should agree
   within 10%: the data are not part of it) and the paper's ``memory_reserved_epoch2_mb``;
4. a real-data training (default 10 epochs of resnet18 on PneumoniaMNIST) in fp32 and bf16.

Every training in 3-4 is a separate ``pepr train`` process, as the workflow runs them.
Without CUDA it stops with a message, unless ``--allow-cpu`` (tiny sizes, to smoke the script)::

    .venv/bin/python bench/gpu_check.py --npz ../shared/data/medmnist/pneumoniamnist.npz
    .venv/bin/python bench/gpu_check.py --allow-cpu
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_NPZ = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "medmnist" / "pneumoniamnist.npz"


def _train(out: Path, model: str, dataset: str, *flags: str) -> dict:
    """One ``pepr train`` process; its metrics.json."""
    argv = [sys.executable, "-m", "pepr.cli", "train", "--model", model, "--dataset", dataset, "--out", str(out), *flags]
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"pepr train failed ({' '.join(argv)}):\n{result.stderr[-2000:]}")
    return json.loads((out / "metrics.json").read_text())


def throughput(model_name: str, dataset: str, image_size: int, batch_size: int, device, precision_name: str, repeats: int) -> float:
    """Median over interleaved repeats of (pepr images/s) / (bare images/s)."""
    import timm
    import torch
    import torch.nn.functional as F

    from pepr.datasets.core import load_dataset
    from pepr.train.loop import select_precision, sync, to_device, train_epoch

    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    precision = select_precision(device.type, bf16, precision_name)
    data = load_dataset(dataset)
    splits = to_device(data, device, image_size)
    n = splits.train_x.shape[0]
    torch.manual_seed(0)
    model = timm.create_model(model_name, num_classes=data.num_classes, in_chans=data.channels).to(device)
    if precision.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-4)
    generator = torch.Generator().manual_seed(0)
    bare_x = (splits.train_x.float() * splits.scale - splits.mean) / splits.std
    if precision.channels_last:
        bare_x = bare_x.contiguous(memory_format=torch.channels_last)
    dtype = torch.bfloat16 if precision.autocast_dtype else None

    def bare() -> None:
        model.train()
        for index in torch.randperm(n, generator=generator).split(batch_size):
            index = index.to(device)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                loss = F.cross_entropy(model(bare_x[index]), splits.train_y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    def pepr() -> None:
        train_epoch(model, optimizer, splits, batch_size, generator, precision)

    def timed(fn) -> float:
        sync(device)
        started = time.perf_counter()
        fn()
        sync(device)
        return n / (time.perf_counter() - started)

    bare(), pepr()  # warm-up (cuDNN autotuning, allocator)
    ratios = []
    for _ in range(repeats):
        order = [("bare", bare), ("pepr", pepr)]
        random.shuffle(order)
        speed = {name: timed(fn) for name, fn in order}
        ratios.append(speed["pepr"] / speed["bare"])
    return statistics.median(ratios)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--npz", type=Path, default=DEFAULT_NPZ, help="MedMNIST-layout npz for the real-data run (default: PneumoniaMNIST in ../shared)")
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--epochs", type=int, default=None, help="real-data epochs (default: 10 on GPU, 1 with --allow-cpu)")
    parser.add_argument("--allow-cpu", action="store_true", help="run on CPU at tiny sizes (a smoke test of this script, no GPU figures)")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()

    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not args.allow_cpu:
        print("gpu_check: no CUDA device is visible here; run it on a GPU node, or pass --allow-cpu for a tiny CPU smoke run", file=sys.stderr)
        return 2
    if not args.npz.is_file():
        print(f"gpu_check: --npz {args.npz} not found; pass a MedMNIST-layout .npz file", file=sys.stderr)
        return 2
    device = torch.device("cuda" if cuda else "cpu")
    small = not cuda
    epochs = args.epochs or (1 if small else 10)
    repeats = args.repeats or (2 if small else 5)
    size = 28 if small else 64
    synthetic = f"synthetic:size={size},n_train={256 if small else 4096},n_val=32,n_test=32"
    threads = ["--threads", "2"] if small else []
    rows: list[tuple[str, str]] = [("device", torch.cuda.get_device_name(0) if cuda else "CPU (smoke run, --allow-cpu)")]

    precisions = ["fp32", "bf16"] if cuda else ["fp32"]
    for name in precisions:
        ratio = throughput(args.model, synthetic, size, 32, device, name, repeats)
        rows.append((f"throughput pepr/bare, {name}", f"{ratio:.3f}  (target >= 0.97)"))

    from pepr.train.measure import EnergyMeter

    meter = EnergyMeter("DNK")
    meter.start()
    meter.begin("epoch")
    throughput(args.model, synthetic, size, 32, device, "fp32", 1)
    sample = meter.end("epoch")
    method = meter.method()
    meter.close()
    nvml = "GPU NVML" in method and sample.gpu_energy_kwh > 0
    rows.append(("energy of a timed span", f"{sample.energy_kwh:.3g} kWh (GPU {sample.gpu_energy_kwh:.3g} kWh): {method}"))
    rows.append(("NVML GPU energy > 0", "yes" if nvml else ("n/a on CPU" if not cuda else "NO - check NVML/CodeCarbon")))

    with tempfile.TemporaryDirectory(prefix="pepr-gpu-check-") as tmp:
        memory = {}
        for fraction in (1.0, 0.1):
            memory[fraction] = _train(Path(tmp) / f"mem-{fraction}", args.model, synthetic, "--fraction", str(fraction), "--epochs", "2", *threads)
        full, tenth = memory[1.0]["peak_memory_mb"], memory[0.1]["peak_memory_mb"]
        rows.append(("working set MiB, fraction 1.0 / 0.1", f"{full:.0f} / {tenth:.0f} (ratio {tenth / full:.3f}, target 0.9..1.1)"))
        rows.append(("memory_reserved_epoch2_mb (paper)", str(memory[1.0].get("memory_reserved_epoch2_mb"))))
        rows.append(("process peak RSS MiB, fraction 1.0", f"{memory[1.0]['process_peak_rss_mb']:.0f}"))
        real_flags = ["--epochs", str(epochs), *threads] + (["--fraction", "0.05"] if small else [])
        for name in precisions:
            metrics = _train(Path(tmp) / f"real-{name}", args.model, f"npz:{args.npz}", "--precision", name, *real_flags)
            rows.append(
                (
                    f"{args.model} {epochs} ep on {args.npz.name}, {name}",
                    f"test acc {metrics['test_accuracy']:.3f}, {metrics['train_time_s']:.1f} s, {metrics['energy_kwh']:.3g} kWh, "
                    f"working set {metrics['peak_memory_mb']:.0f} MiB, recorded precision {metrics['precision']}",
                )
            )
    width = max(len(key) for key, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
