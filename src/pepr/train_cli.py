"""``pepr train``: train, evaluate and measure one timm model on one dataset (one grid cell).

Light at import (argparse only): torch, timm and codecarbon load inside :func:`run`.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

from pepr.errors import PeprInputError

HELP = "train, evaluate and measure one timm model on one dataset (one grid cell)"

DESCRIPTION = """\
Train one timm model on one dataset and write OUT/metrics.json (performance, energy, CO2, time,
memory; status "ok", or "failed" with the reason when the model cannot run on this input) and
OUT/history.csv (one row per epoch). Defaults follow the PePR paper: Adam, lr 5e-4, batch 32,
10 epochs, cross-entropy; the final performance is the last epoch's on the full test set.

Datasets (--dataset):
  pneumoniamnist, dermamnist@64, ...   a MedMNIST 2D flag [@ size 28/64/128/224], read from
                                      --data-dir (downloaded there when missing and online)
  npz:PATH                            a file in the MedMNIST npz layout
  synthetic[:key=value,...]           generated lesion-like blobs (NOT medical data), keys:
                                      classes, size, channels, n_train, n_val, n_test,
                                      imbalance, noise, seed
Init (--init): scratch | imagenet (timm weights from the Hugging Face cache) |
  checkpoint:PATH (a state dict from --save-model; other class count/channels are adapted).

Energy is measured with CodeCarbon's offline tracker (no network); the method it used
(hardware counters or TDP-based estimate) is recorded as energy_method. An interrupted run
resumes from OUT/resume.pt when re-run with the same flags. A finished run is kept in
OUT/previous/<time>/; re-run with the same settings and data, it is restored from there, not
trained again (--retrain trains it again).
"""


def _number(text: str, kind: type) -> int | float:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {'an integer' if kind is int else 'a number'}, got {text!r}") from None


def _positive_int(text: str) -> int:
    value = _number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = _number(text, int)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _seed(text: str) -> int:
    value = _non_negative_int(text)
    if value > 2**32 - 1:
        raise argparse.ArgumentTypeError(f"must be in 0..{2**32 - 1} (numpy's seed range), got {text}")
    return value


def _fraction(text: str) -> float:
    value = _number(text, float)
    if not (0.0 < value <= 1.0):
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def _positive_float(text: str) -> float:
    value = _number(text, float)
    if not (0.0 < value < float("inf")):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``pepr train`` flags to ``parser``."""
    parser.add_argument("--model", required=True, help="timm model name, e.g. resnet18")
    parser.add_argument("--dataset", required=True, metavar="SPEC", help="dataset spec (see above)")
    parser.add_argument("--init", default="scratch", metavar="STRATEGY", help="scratch | imagenet | checkpoint:PATH (default: scratch)")
    parser.add_argument("--fraction", type=_fraction, default=1.0, help="stratified fraction of the train split, in (0, 1] (default: 1)")
    parser.add_argument("--epochs", type=_positive_int, default=10, help="training epochs (default: 10)")
    parser.add_argument("--seed", type=_seed, default=0, help="seed for the subset, init and batch order (default: 0)")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder for metrics.json and history.csv")
    parser.add_argument("--data-dir", type=Path, default=None, metavar="D", help="folder with MedMNIST .npz files (default: ~/.medmnist)")
    parser.add_argument("--image-size", type=_positive_int, default=None, metavar="PX", help="train at this size (resized on the device; default: the stored size)")
    parser.add_argument("--batch-size", type=_positive_int, default=32, help="batch size (default: 32)")
    parser.add_argument("--lr", type=_positive_float, default=5e-4, help="Adam learning rate (default: 5e-4)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps (default: auto = cuda if available)")
    parser.add_argument("--country", default="DNK", metavar="ISO3", help="country for the CO2 intensity, ISO 3166-1 alpha-3 (default: DNK)")
    parser.add_argument("--save-model", type=Path, default=None, metavar="PATH", help="save the final weights (.pt/.pth/.safetensors), e.g. for --init checkpoint:PATH")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="training numerics: fp32 (the paper's protocol, default) or bf16 autocast (CUDA only; CPU always trains in fp32)")
    parser.add_argument("--carbon-intensity", type=Path, default=None, metavar="CSV", help="time-varying grid intensity, columns timestamp (ISO 8601),gco2_per_kwh: each epoch's CO2 uses the value at its midpoint (default: CodeCarbon's country average)")
    parser.add_argument("--pretrain-metrics", type=Path, default=None, metavar="PATH", help="metrics.json of the transfer source's pretraining: when its status is not ok, record this cell as failed (exit 0) without training")
    parser.add_argument("--retrain", action="store_true", help="train even when OUT/previous/ keeps a finished result of identical settings and data (by default that result is restored: a killed, requeued or forced rerun never trains a finished cell twice)")
    parser.add_argument("--threads", type=_positive_int, default=None, metavar="N", help="torch CPU threads (default: all cores this process may use)")


def run(args: argparse.Namespace) -> int:
    """Build a :class:`pepr.train.TrainConfig` from the flags and run it; exit 0 for ok and failed runs."""
    from pepr.train import TrainConfig, run_training

    cfg = TrainConfig(
        model=args.model,
        dataset=args.dataset,
        init=args.init,
        fraction=args.fraction,
        epochs=args.epochs,
        seed=args.seed,
        out_dir=args.out,
        data_dir=args.data_dir,
        image_size=args.image_size,
        batch_size=args.batch_size,
        lr=args.lr,
        device=args.device,
        country=args.country,
        save_model=args.save_model,
        threads=args.threads,
        precision=args.precision,
        carbon_intensity=args.carbon_intensity,
        pretrain_metrics=args.pretrain_metrics,
        retrain=args.retrain,
    )
    try:
        run_training(cfg)
    except PeprInputError as exc:
        note = previous_result_note(cfg.out_dir)
        raise PeprInputError(f"{exc}; {note}" if note else str(exc)) from None
    except Exception:
        # A crash mid-training: the traceback, then where the last finished result is (a
        # workflow rerun has deleted metrics.json/history.csv before this job started).
        traceback.print_exc()
        note = previous_result_note(cfg.out_dir)
        if note:
            print(f"pepr train: {note}", file=sys.stderr)
        return 1
    return 0


def previous_result_note(out_dir: Path) -> str | None:
    """Where the last finished result of ``out_dir`` is kept (``previous/<stamp>/``), or None.

    ``pepr.runs.archive_finished`` keeps every finished result there, so a rerun that fails
    (after Snakemake deleted the outputs it re-makes) loses nothing; the message tells the user.
    """
    from pepr.runs import METRICS_FILE, PREVIOUS_DIR

    kept = sorted(Path(out_dir).glob(f"{PREVIOUS_DIR}/*/{METRICS_FILE}"))
    if not kept:
        return None
    folder = kept[-1].parent  # stamps are UTC times: the last name is the newest
    return f"the last finished result of this run is kept in {folder}/ (copy its files back into {out_dir}/ to restore it)"
