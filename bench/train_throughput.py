"""Throughput of ``pepr train``'s training loop vs a bare PyTorch loop, and the cost of CodeCarbon.

Three variants train the same model on the same device tensors with the same threads:

* ``bare``   - a minimal loop over pre-normalised float tensors (the reference);
* ``pepr``   - :func:`pepr.train.loop.train_epoch` (uint8 tensors, normalisation per batch on the
  device, loss accumulated on the device);
* ``pepr+cc``- the same inside a CodeCarbon offline-tracker task, as ``run_training`` does.

Variants are interleaved in a shuffled order on every repeat (after one warm-up epoch each) so
machine noise hits all of them alike; the ratios are medians of per-repeat ratios. Targets:
pepr/bare >= 0.97 and CodeCarbon's loss <= 2%.

    .venv/bin/python bench/train_throughput.py --model resnet18 --repeats 5
"""

from __future__ import annotations

import argparse
import random
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--dataset", default="synthetic:n_train=512,n_val=8,n_test=8")
    parser.add_argument("--image-size", type=int, default=28)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    import timm
    import torch
    import torch.nn.functional as F

    from pepr.datasets.core import load_dataset
    from pepr.train.devices import resolve_device
    from pepr.train.loop import select_precision, to_device, train_epoch
    from pepr.train.measure import EnergyMeter
    from pepr.train.run import default_threads

    threads = args.threads or default_threads()
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cuda = torch.cuda.is_available()
    device = torch.device(resolve_device(args.device, cuda, torch.cuda.device_count() if cuda else 0))
    precision = select_precision(device.type, bool(cuda and torch.cuda.is_bf16_supported()))
    data = load_dataset(args.dataset)
    splits = to_device(data, device, args.image_size)
    n = splits.train_x.shape[0]
    model = timm.create_model(args.model, num_classes=data.num_classes, in_chans=data.channels).to(device)
    if precision.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-4)
    generator = torch.Generator().manual_seed(0)

    # the bare loop gets its inputs pre-normalised once: the cheapest possible input path
    bare_x = (splits.train_x.float() * splits.scale - splits.mean) / splits.std
    if precision.channels_last:
        bare_x = bare_x.contiguous(memory_format=torch.channels_last)
    bare_y = splits.train_y
    autocast_dtype = getattr(torch, precision.autocast_dtype) if precision.autocast_dtype else None

    def bare_epoch() -> None:
        model.train()
        for index in torch.randperm(n, generator=generator).split(args.batch_size):
            index = index.to(device)
            with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                loss = F.cross_entropy(model(bare_x[index]), bare_y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        loss.item()  # one sync, as train_epoch does

    meter = EnergyMeter(country="DNK")
    meter.start()

    def pepr_epoch() -> None:
        train_epoch(model, optimizer, splits, args.batch_size, generator, precision)

    def pepr_cc_epoch() -> None:
        meter.begin("bench")
        train_epoch(model, optimizer, splits, args.batch_size, generator, precision)
        meter.end("bench")

    variants = {"bare": bare_epoch, "pepr": pepr_epoch, "pepr+cc": pepr_cc_epoch}

    def timed(fn) -> tuple[float, float]:
        """Images per wall second and per CPU second of this process (the latter is less
        sensitive to other processes taking the cores, but counts OpenMP spin-waiting)."""
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started, cpu_started = time.perf_counter(), time.process_time()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return n / (time.perf_counter() - started), n / (time.process_time() - cpu_started)

    for fn in variants.values():  # warm-up (first batches are much slower)
        fn()
    rates: dict[str, list[float]] = {name: [] for name in variants}
    cpu_rates: dict[str, list[float]] = {name: [] for name in variants}
    order_rng = random.Random(0)
    cpu_started, wall_started = time.process_time(), time.perf_counter()
    for _ in range(args.repeats):
        order = list(variants)
        order_rng.shuffle(order)
        for name in order:
            wall_rate, cpu_rate = timed(variants[name])
            rates[name].append(wall_rate)
            cpu_rates[name].append(cpu_rate)
    cpu_share = (time.process_time() - cpu_started) / ((time.perf_counter() - wall_started) * threads)
    meter.close()

    def paired(a: list[float], b: list[float]) -> float:
        return statistics.median(x / y for x, y in zip(a, b))

    loop_ratio = paired(rates["pepr"], rates["bare"])
    cc_loss = 1 - paired(rates["pepr+cc"], rates["pepr"])
    print(
        f"model {args.model}, {n} images {args.image_size}px, batch {args.batch_size}, {threads} threads, device {device}, {args.repeats} interleaved repeats"
    )
    for name, values in rates.items():
        print(
            f"  {name:8s} images/s: median {statistics.median(values):8.1f}  (min {min(values):.1f}, max {max(values):.1f})"
        )
    print(f"pepr loop / bare loop throughput ratio: {loop_ratio:.3f}   (target >= 0.97)")
    print(f"CodeCarbon throughput loss: {100 * cc_loss:+.2f}%   (target <= 2%)")
    print(
        f"same from process CPU time: pepr/bare {paired(cpu_rates['pepr'], cpu_rates['bare']):.3f}, "
        f"CodeCarbon loss {100 * (1 - paired(cpu_rates['pepr+cc'], cpu_rates['pepr'])):+.2f}%"
    )
    print(
        f"process CPU share during the benchmark: {cpu_share:.2f} (~1 = quiet machine; lower = contended, ratios less reliable)"
    )


if __name__ == "__main__":
    main()
