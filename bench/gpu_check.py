"""GPU check of pepr's training path: the parts the CPU test suite cannot exercise for real.

On one CUDA GPU, side by side in one run, it prints:

1. throughput of pepr's loop (:func:`pepr.train.loop.train_epoch`: uint8 on the device, normalised per
   batch, channels_last, optional bf16 autocast) vs a bare PyTorch loop on pre-normalised float
   tensors, as a ratio per precision (target >= 0.97);
2. energy of one timed span from CodeCarbon, which must include a positive NVML GPU reading, next
   to NVML's own energy counter over the same span (``nvmlDeviceGetTotalEnergyConsumption``);
3. the training's working-set memory (``peak_memory_mb``) at fraction 1.0 vs 0.1 (should agree
   within 10%: the data are not part of it) and the paper's ``memory_reserved_epoch2_mb``;
4. per-cell start-up: wall time of one `pepr train` process minus its training time, cold;
5. a packed allocation of K real-data cells (default 8; seeds 0..K-1, 1 epoch each) run cold (one
   process each, ``PEPR_WARM=0``) and warm (one fork server, :mod:`pepr.train.warm`): per-cell
   fixed cost and GPU utilisation over the whole packed run (NVML, sampled every 0.1 s);
6. a real-data training (default 10 epochs of resnet18 on PneumoniaMNIST) in fp32 and bf16, with
   its GPU utilisation.

Every training in 3-6 is a separate ``pepr train`` process, as the workflow runs them. With the
install step it runs within 8 minutes on one H100 (``--quick``: 3 minutes: 2 repeats, K=4, 2 epochs)::

    make install && .venv/bin/python bench/gpu_check.py --npz ../shared/data/medmnist/pneumoniamnist.npz
    .venv/bin/python bench/gpu_check.py --quick
    .venv/bin/python bench/gpu_check.py --allow-cpu     # tiny CPU smoke run of this script (tests run it)

Without CUDA it stops with a message, unless ``--allow-cpu``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_NPZ = (
    Path(os.environ.get("PEPR_SHARED_DIR") or REPO_ROOT / ".." / "shared") / "data" / "medmnist" / "pneumoniamnist.npz"
)


def _env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in ("PEPR_WARM", "PEPR_WARM_KEY")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT / "src"), env.get("PYTHONPATH", "")]))
    return {**env, **extra}


def _train(out: Path, model: str, dataset: str, *flags: str, env: dict[str, str] | None = None) -> dict:
    """One ``pepr train`` process (cold unless ``env`` names a warm allocation); its metrics.json
    plus ``_wall_s``, the process's wall time."""
    argv = [
        sys.executable,
        "-m",
        "pepr.cli",
        "train",
        "--model",
        model,
        "--dataset",
        dataset,
        "--out",
        str(out),
        *flags,
    ]
    started = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True, env=env or _env(PEPR_WARM="0"), check=False)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"pepr train failed ({' '.join(argv)}):\n{result.stderr[-2000:]}")
    return {**json.loads((out / "metrics.json").read_text()), "_wall_s": wall}


class Nvml:
    """GPU 0 through NVML (pynvml, installed with CodeCarbon): energy counter and utilisation
    sampled by a background thread. Every method returns None where NVML is not available."""

    def __init__(self) -> None:
        self.handle = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self.nvml = pynvml
            self.handle = pynvml.nvmlDeviceGetHandleByIndex(0)  # the one GPU of the check machine
        except Exception:  # noqa: BLE001 - no NVIDIA driver here: the CPU smoke run
            self.handle = None
        self._samples: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def energy_j(self) -> float | None:
        if self.handle is None:
            return None
        try:
            return self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle) / 1000.0
        except Exception:  # noqa: BLE001 - pre-Volta GPUs have no energy counter
            return None

    def start_sampling(self) -> None:
        if self.handle is None:
            return
        self._samples, self._stop = [], threading.Event()

        def sample() -> None:
            while not self._stop.wait(0.1):
                self._samples.append(float(self.nvml.nvmlDeviceGetUtilizationRates(self.handle).gpu))

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()

    def stop_sampling(self) -> str:
        """Mean GPU utilisation (%) since :meth:`start_sampling`, as text."""
        if self._thread is None:
            return "n/a (no NVML)"
        self._stop.set()
        self._thread.join()
        self._thread = None
        if not self._samples:
            return "n/a (no samples)"
        busy = sum(1 for value in self._samples if value > 0) / len(self._samples)
        return f"mean {statistics.mean(self._samples):.0f}%, busy {100 * busy:.0f}% of {len(self._samples)} samples"


def packed(
    tmp: Path, label: str, k: int, model: str, dataset: str, flags: list[str], env: dict[str, str], nvml: Nvml
) -> tuple[float, float, str]:
    """K cells one after another (seeds 0..K-1) as a packed allocation runs them: total wall
    time, fixed cost per cell (wall minus training time) and GPU utilisation over the run."""
    nvml.start_sampling()
    started = time.perf_counter()
    trained = 0.0
    for seed in range(k):
        metrics = _train(tmp / f"{label}-{seed}", model, dataset, "--seed", str(seed), *flags, env=env)
        trained += metrics["train_time_s"]
    wall = time.perf_counter() - started
    return wall, (wall - trained) / k, nvml.stop_sampling()


def throughput(
    model_name: str, dataset: str, image_size: int, batch_size: int, device, precision_name: str, repeats: int
) -> float:
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
    parser.add_argument(
        "--npz",
        type=Path,
        default=DEFAULT_NPZ,
        help="MedMNIST-layout npz for the real-data runs (default: PneumoniaMNIST in ../shared; synthetic data with --allow-cpu when absent)",
    )
    parser.add_argument("--model", default="resnet18")
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="real-data epochs (default: 10 on GPU, 2 with --quick, 1 with --allow-cpu)",
    )
    parser.add_argument(
        "--k",
        type=int,
        default=None,
        help="cells of the packed allocation (default: 8, 4 with --quick, 2 with --allow-cpu)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="the 3-minute version: fewer repeats, K=4, 2 epochs, fp32 real-data run only",
    )
    parser.add_argument(
        "--allow-cpu",
        action="store_true",
        help="run on CPU at tiny sizes (a smoke test of this script, no GPU figures)",
    )
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()

    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not args.allow_cpu:
        print(
            "gpu_check: no CUDA device is visible here; run it on a GPU node, or pass --allow-cpu for a tiny CPU smoke run",
            file=sys.stderr,
        )
        return 2
    small = not cuda
    if not args.npz.is_file() and not small:
        print(f"gpu_check: --npz {args.npz} not found; pass a MedMNIST-layout .npz file", file=sys.stderr)
        return 2
    device = torch.device("cuda" if cuda else "cpu")
    epochs = args.epochs or (1 if small else 2 if args.quick else 10)
    repeats = args.repeats or (1 if small else 2 if args.quick else 5)
    k = args.k or (2 if small else 4 if args.quick else 8)
    size = 28 if small else 64
    synthetic = f"synthetic:size={size},n_train={128 if small else 4096},n_val=32,n_test=32"
    real = f"npz:{args.npz}" if args.npz.is_file() else "synthetic:size=28,n_train=256,n_val=64,n_test=64"
    threads = ["--threads", "2"] if small else []
    nvml = Nvml()
    rows: list[tuple[str, str]] = [
        ("device", torch.cuda.get_device_name(0) if cuda else "CPU (smoke run, --allow-cpu)")
    ]

    precisions = ["fp32", "bf16"] if cuda else ["fp32"]
    for name in precisions:
        ratio = throughput(args.model, synthetic, size, 32, device, name, repeats)
        rows.append((f"throughput pepr/bare, {name}", f"{ratio:.3f}  (target >= 0.97)"))

    from pepr.train.measure import EnergyMeter

    meter = EnergyMeter("DNK")
    meter.start()
    nvml_before = nvml.energy_j()
    meter.begin("epoch")
    throughput(args.model, synthetic, size, 32, device, "fp32", 1)
    sample = meter.end("epoch")
    nvml_after = nvml.energy_j()
    method = meter.method()
    meter.close()
    nvml_ok = "GPU NVML" in method and sample.gpu_energy_kwh > 0
    rows.append(
        ("energy of a timed span", f"{sample.energy_kwh:.3g} kWh (GPU {sample.gpu_energy_kwh:.3g} kWh): {method}")
    )
    rows.append(
        ("NVML GPU energy > 0", "yes" if nvml_ok else ("n/a on CPU" if not cuda else "NO - check NVML/CodeCarbon"))
    )
    if nvml_before is not None and nvml_after is not None:
        counter_kwh = (nvml_after - nvml_before) / 3.6e6
        ratio = sample.gpu_energy_kwh / counter_kwh if counter_kwh else float("nan")
        rows.append(
            (
                "GPU energy: CodeCarbon / NVML counter",
                f"{sample.gpu_energy_kwh:.3g} / {counter_kwh:.3g} kWh = {ratio:.3f} (target 0.9..1.1)",
            )
        )

    tmp = Path(tempfile.mkdtemp(prefix="pepr-gpu-check-"))
    runtime = Path(tempfile.mkdtemp(prefix="pw-", dir="/tmp"))
    try:
        memory = {}
        for fraction in (1.0, 0.1):
            memory[fraction] = _train(
                tmp / f"mem-{fraction}", args.model, synthetic, "--fraction", str(fraction), "--epochs", "2", *threads
            )
        full, tenth = memory[1.0]["peak_memory_mb"], memory[0.1]["peak_memory_mb"]
        rows.append(
            (
                "working set MiB, fraction 1.0 / 0.1",
                f"{full:.0f} / {tenth:.0f} (ratio {tenth / full:.3f}, target 0.9..1.1)",
            )
        )
        rows.append(("memory_reserved_epoch2_mb (paper)", str(memory[1.0].get("memory_reserved_epoch2_mb"))))
        rows.append(("process peak RSS MiB, fraction 1.0", f"{memory[1.0]['process_peak_rss_mb']:.0f}"))

        one = _train(
            tmp / "start-up",
            "mobilenetv3_small_050",
            "synthetic:size=28,n_train=64,n_val=32,n_test=32",
            "--epochs",
            "1",
            *threads,
        )
        rows.append(
            (
                "per-cell start-up, one cold process",
                f"{one['_wall_s'] - one['train_time_s']:.1f} s of {one['_wall_s']:.1f} s wall",
            )
        )

        cell_flags = ["--epochs", "1", *threads] + (["--fraction", "0.1"] if small else [])
        warm_env = _env(
            PEPR_WARM_KEY=f"gpu-check-{uuid.uuid4().hex[:8]}", XDG_RUNTIME_DIR=str(runtime), PEPR_WARM_IDLE_S="30"
        )
        cold_wall, cold_fixed, cold_util = packed(
            tmp, "cold", k, args.model, real, cell_flags, _env(PEPR_WARM="0"), nvml
        )
        warm_wall, warm_fixed, warm_util = packed(tmp, "warm", k, args.model, real, cell_flags, warm_env, nvml)
        rows.append(
            (
                f"packed K={k} cold: wall, fixed cost per cell",
                f"{cold_wall:.1f} s, {cold_fixed:.1f} s/cell; GPU {cold_util}",
            )
        )
        rows.append(
            (
                f"packed K={k} warm: wall, fixed cost per cell",
                f"{warm_wall:.1f} s, {warm_fixed:.1f} s/cell; GPU {warm_util}",
            )
        )
        rows.append((f"packed K={k} warm / cold wall", f"{warm_wall / cold_wall:.2f}"))
        warm_metrics = json.loads((tmp / "warm-0" / "metrics.json").read_text())
        cold_metrics = json.loads((tmp / "cold-0" / "metrics.json").read_text())
        rows.append(
            (
                "seed 0 warm vs cold",
                (
                    f"test acc {warm_metrics['test_accuracy']:.4f} / {cold_metrics['test_accuracy']:.4f}, "
                    f"working set {warm_metrics['peak_memory_mb']:.0f} / {cold_metrics['peak_memory_mb']:.0f} MiB"
                ),
            )
        )

        real_flags = ["--epochs", str(epochs), *threads] + (["--fraction", "0.05"] if small else [])
        for name in precisions[: 1 if args.quick else None]:
            nvml.start_sampling()
            metrics = _train(tmp / f"real-{name}", args.model, real, "--precision", name, *real_flags)
            utilisation = nvml.stop_sampling()
            rows.append(
                (
                    f"{args.model} {epochs} ep on {real.split('/')[-1]}, {name}",
                    (
                        f"test acc {metrics['test_accuracy']:.3f}, {metrics['train_time_s']:.1f} s, {metrics['energy_kwh']:.3g} kWh, "
                        f"working set {metrics['peak_memory_mb']:.0f} MiB, recorded precision {metrics['precision']}; GPU {utilisation}"
                    ),
                )
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(runtime, ignore_errors=True)
    width = max(len(key) for key, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
