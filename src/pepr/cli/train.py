"""``pepr train``: train, evaluate and measure one timm model on one dataset (one grid cell).

Light at import (argparse only): torch, timm and codecarbon load inside :func:`run`.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

from pepr.cli.args import setting_parser
from pepr.errors import PeprInputError
from pepr.train.settings import TrainConfig, flag_of, has_default, train_fields

HELP = "train, evaluate and measure one timm model on one dataset (one grid cell)"

DESCRIPTION = """\
Train one timm model on one dataset and write OUT/metrics.json (performance, energy, CO2, time,
memory; status "ok", or "failed" with the reason when the model cannot run on this input) and
OUT/history.csv (one row per epoch). Defaults follow the PePR paper: Adam, lr 5e-4, batch 32,
10 epochs, cross-entropy (multi-label tasks: BCE-with-logits); the final performance is the last epoch's on the full test set.

Datasets (--dataset):
  pneumoniamnist, dermamnist@64, ...   a MedMNIST 2D flag [@ size 28/64/128/224], read from
                                      --data-dir (downloaded there when missing and online)
  npz:PATH                            a file in the MedMNIST npz layout
  folder:PATH[,val=0.1,test=0.2,size=N,channels=1|3,seed=S]
                                      your images: PATH/{train,val,test}/CLASS/* or PATH/CLASS/*
                                      (then a seeded stratified split); PNG, JPEG, TIFF, BMP,
                                      DICOM (pip install 'pepr-bench[dicom]'), 8/16-bit
  csv:FILE[,...same options]          a manifest path,label[,split] (or labels a;b, or one 0/1
                                      column per label: multi-label); both are converted once
                                      into --data-dir/images/ and then read as npz:
  synthetic[:key=value,...]           generated lesion-like blobs (NOT medical data), keys:
                                      classes, size, channels, n_train, n_val, n_test,
                                      imbalance, noise, seed
Init (--init): scratch | imagenet (timm weights from the Hugging Face cache) |
  checkpoint:PATH (a state dict from --save-model; other class count/channels are adapted).

Energy is measured with CodeCarbon's offline tracker (no network); the method it used
(hardware counters or TDP-based estimate) is recorded as energy_method. An interrupted run
resumes from OUT/resume.pt when re-run with the same flags.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``pepr train`` flags to ``parser``: one per :class:`pepr.train.settings.TrainConfig` field."""
    for item in train_fields():
        meta = item.metadata
        options: dict = {"help": meta["help"]}  # dest: the flag's name (args.out for --out)
        if has_default(item):
            options["default"] = item.default
            if item.default is not None and "default:" not in meta["help"]:
                options["help"] += f" (default: {item.default})"
        else:
            options["required"] = True
        value_parser = setting_parser(item)
        if value_parser is not None:
            options["type"] = value_parser
        for key in ("metavar", "choices", "action"):
            if key in meta:
                options[key] = meta[key]
        parser.add_argument(flag_of(item), **options)


def run(args: argparse.Namespace) -> int:
    """Build a :class:`pepr.train.settings.TrainConfig` from the flags and run it; exit 0 for ok and failed runs."""
    from pepr.train import warm

    if getattr(args, "_argv", None):  # an allocation's fork server, when there is one (pepr.train.warm)
        status = warm.train_through_server(
            args._argv, lambda message: print(message, file=sys.stderr, flush=True), NOTIFY_FD_VARIABLE
        )
        if status is not None:
            return status
    from pepr.train.run import run_training

    cfg = TrainConfig(**{item.name: getattr(args, flag_of(item)[2:].replace("-", "_")) for item in train_fields()})
    try:
        record = run_training(cfg)
    except PeprInputError as exc:
        note = previous_result_note(cfg.out_dir)
        # The error itself is pepr's one stderr line: the notice goes to the terminal stream only.
        announce_failure(cfg.out_dir, str(exc).splitlines()[0] if str(exc) else "bad input", to_log=False)
        raise PeprInputError(f"{exc}; {note}" if note else str(exc)) from None
    except OSError as exc:
        from pepr.results.outputs import write_failure_message

        message = write_failure_message(exc)  # full disk, permissions: one line naming the path, exit 2
        if message is None:
            raise
        kept = resume_note(cfg.out_dir)
        announce_failure(cfg.out_dir, message)
        raise PeprInputError(f"{message}{'; ' + kept if kept else ''}") from None
    except Exception as exc:
        # A crash mid-training: the traceback, then where the last finished result is (a
        # workflow rerun has deleted metrics.json/history.csv before this job started).
        traceback.print_exc()
        note = previous_result_note(cfg.out_dir)
        if note:
            print(f"pepr train: {note}", file=sys.stderr)
        announce_failure(
            cfg.out_dir, f"crashed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")
        )
        return 1
    if isinstance(record, dict) and str(record.get("status", "ok")).lower() != "ok":
        announce_failure(cfg.out_dir, str(record.get("reason") or "no reason recorded"))
    return 0


def resume_note(out_dir: Path) -> str | None:
    """What a rerun continues from after a failed write: the finished epochs in resume.pt, if any."""
    from pepr.results.runs import RESUME_FILE

    if (Path(out_dir) / RESUME_FILE).is_file():
        return f"the finished epochs are kept in {Path(out_dir) / RESUME_FILE}: a rerun continues from there"
    return None


#: Environment variable naming an extra file descriptor for failure lines. The workflow's train
#: rules send pepr train's output to the job's log and set it to 3, with fd 3 the terminal
#: stream Snakemake shows (``3>&2 >> log 2>&1``), so a failed cell is seen the moment it fails.
NOTIFY_FD_VARIABLE = "PEPR_NOTIFY_FD"


def announce_failure(out_dir: Path, reason: str, *, to_log: bool = True) -> None:
    """Print ``pepr: <run folder> failed: <reason>`` on stderr (the job's log; skipped with
    ``to_log=False`` when the caller's own error line says it) and, when
    :data:`NOTIFY_FD_VARIABLE` names an open file descriptor, there too (one line, never raises)."""
    line = f"pepr: {out_dir} failed: {' '.join(reason.split())[:400]}\n"
    if to_log:
        print(line, end="", file=sys.stderr, flush=True)
    import os

    fd_text = os.environ.get(NOTIFY_FD_VARIABLE, "")
    if not fd_text.isdigit() or int(fd_text) <= 2:
        return
    try:
        os.write(int(fd_text), line.encode("utf-8", "replace"))
    except OSError:
        pass  # not open in this process (pepr train run by hand with the variable set): the log has it


def previous_result_note(out_dir: Path) -> str | None:
    """Where the last finished result of ``out_dir`` is kept (``previous/<stamp>/``), or None.

    ``pepr.results.runs.archive_result`` keeps every finished result there, so a rerun that fails
    (after Snakemake deleted the outputs it re-makes) loses nothing; the message tells the user.
    """
    from pepr.results.runs import METRICS_FILE, PREVIOUS_DIR

    kept = sorted(Path(out_dir).glob(f"{PREVIOUS_DIR}/*/{METRICS_FILE}"))
    if not kept:
        return None
    folder = kept[-1].parent  # stamps are UTC times: the last name is the newest
    return (
        f"the last finished result of this run is kept in {folder}/ (copy its files back into {out_dir}/ to restore it)"
    )
