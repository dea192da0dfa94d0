"""pepr train: device/precision logic, metrics, validation, CLI errors (fast), and real CPU training
runs (slow): the metrics.json/history.csv contract, checkpoints, the failure record, resume after
a kill, and a real-data check on PneumoniaMNIST.

Training tests share work through module-scoped fixtures (import torch/timm ~3-5 s, CodeCarbon
start ~1.5 s) and use tiny synthetic sets and timm's tiny ``test_*`` architectures.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import signal
import subprocess
import sys
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest

from pepr.cli import main
from pepr.errors import PeprInputError
from pepr.results.runs import HISTORY_COLUMNS, RESULT_KEYS
from pepr.train.devices import resolve_device
from pepr.train.loop import Precision, batch_order, select_precision
from pepr.train.metrics import classification_metrics
from pepr.train.run import run_training, validate_train_config
from pepr.train.settings import TrainConfig
from shared_data import PNEUMONIA, absent

TINY = "synthetic:n_train=96,n_val=32,n_test=48"
QUIET = lambda message: None  # noqa: E731 - training logs are not under test here


def run_cli(*argv: str) -> tuple[int, str]:
    """``pepr ARGV`` in this process: (exit code, what it wrote on stderr); stdout is dropped."""
    err = io.StringIO()
    with redirect_stdout(io.StringIO()), redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as exc:  # argparse errors
            code = exc.code
    return code, err.getvalue()


def train_argv(
    out: Path, *extra: str, model: str = "test_resnet", dataset: str = TINY, epochs: int = 1, threads: int = 1
) -> list[str]:
    """``pepr train``'s arguments for a short run of ``model`` on ``dataset`` into ``out``, then ``extra``."""
    return [
        "train",
        "--model",
        model,
        "--dataset",
        dataset,
        "--epochs",
        str(epochs),
        "--threads",
        str(threads),
        "--out",
        str(out),
        *extra,
    ]


def read_history(out_dir: Path) -> list[dict[str, str]]:
    with open(out_dir / "history.csv", newline="") as handle:
        return list(csv.DictReader(handle))


# ------------------------------------------------------------------ pure logic (no training)


def test_resolve_device():
    assert resolve_device("auto", cuda_available=True) == "cuda"
    assert resolve_device("auto", cuda_available=False) == "cpu"
    assert resolve_device("cuda:1", cuda_available=True, cuda_count=2) == "cuda:1"
    assert resolve_device("cpu", cuda_available=True) == "cpu"
    with pytest.raises(PeprInputError, match="CUDA is not available"):
        resolve_device("cuda", cuda_available=False)
    with pytest.raises(PeprInputError, match="only 1 CUDA device"):
        resolve_device("cuda:1", cuda_available=True, cuda_count=1)
    with pytest.raises(PeprInputError, match="MPS is not available"):
        resolve_device("mps", cuda_available=False, mps_available=False)
    with pytest.raises(PeprInputError, match="unknown device 'tpu'"):
        resolve_device("tpu", cuda_available=True)


def test_select_precision():
    assert select_precision("cuda", bf16_supported=True) == Precision("bfloat16", True)
    assert select_precision("cuda", bf16_supported=False) == Precision(None, True)
    assert select_precision("cpu", bf16_supported=True) == Precision(None, False)
    # the training's --precision: fp32 (the paper's protocol) unless bf16 is asked for and possible
    assert select_precision("cuda", True, "fp32") == Precision(None, True)
    assert select_precision("cuda", True, "bf16") == Precision("bfloat16", True)
    assert select_precision("cpu", True, "bf16") == Precision(None, False)


def test_classification_metrics_against_hand_computed():
    y = np.array([0, 0, 0, 1, 1, 2])
    probs = np.array(
        [[0.8, 0.1, 0.1], [0.3, 0.6, 0.1], [0.5, 0.2, 0.3], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.1, 0.2, 0.7]]
    )
    m = classification_metrics(y, probs)
    # predictions 0,1,0,1,0,2: correct 4/6; recalls 2/3, 1/2, 1 ; F1 per class 2*2/(3+3), 2*1/(2+2), 2*1/(1+1)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert m["f1"] == pytest.approx((4 / 6 + 2 / 4 + 1) / 3)

    # one-vs-rest AUCs by pair counting: class0 [.8,.3,.5] vs [.2,.6,.1] -> 6/9;
    # class1 [.7,.3] vs [.1,.6,.2,.2] -> 7/8 (tie .2 counts 1/2 ... none here) ; class2 [.7] vs all -> 1
    def pair_auc(pos, neg):
        return np.mean([1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg])

    aucs = [pair_auc(probs[y == c, c], probs[y != c, c]) for c in range(3)]
    assert m["auc"] == pytest.approx(np.mean(aucs))


def test_classification_metrics_binary_matches_sklearn():
    metrics = pytest.importorskip(
        "sklearn.metrics", reason="scikit-learn not installed (optional cross-check): pip install scikit-learn"
    )
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p1 = np.clip(0.3 * y + rng.random(200) * 0.7, 0, 1)
    probs = np.stack([1 - p1, p1], axis=1)
    mine = classification_metrics(y, probs)
    assert mine["auc"] == pytest.approx(metrics.roc_auc_score(y, p1))
    assert mine["balanced_accuracy"] == pytest.approx(metrics.balanced_accuracy_score(y, probs.argmax(1)))
    assert mine["f1"] == pytest.approx(metrics.f1_score(y, probs.argmax(1), average="macro"))


def test_batch_order_covers_everything_without_singletons():
    import torch

    generator = torch.Generator().manual_seed(0)
    for n in (1, 31, 32, 33, 65, 100):
        batches = batch_order(n, 32, generator)
        together = torch.cat(batches).sort().values
        assert torch.equal(together, torch.arange(n))
        assert n == 1 or all(len(b) > 1 for b in batches)


def test_validate_lists_every_problem(tmp_path):
    cfg = TrainConfig(
        model="no_such_net",
        dataset="synthetic:classes=1",
        init="checkpoint:" + str(tmp_path / "missing.pt"),
        fraction=0.0,
        epochs=0,
        out_dir=tmp_path,
        batch_size=1,
        lr=-1.0,
        device="tpu",
        country="XYZ",
        save_model=tmp_path / "weights.bin",
    )
    with pytest.raises(PeprInputError) as info:
        validate_train_config(cfg)
    message = str(info.value)
    for words in (
        "fraction must be a finite number in (0, 1]",
        "epochs must be an integer >= 1",
        "batch size must be",
        "learning rate must be a finite number > 0",
        "unknown device 'tpu'",
        "country 'XYZ'",
        "unknown timm model 'no_such_net'",
        "out of range",
        "--save-model",
    ):
        assert words in message, words
    missing_checkpoint = TrainConfig(
        model="resnet18", dataset="synthetic", init=f"checkpoint:{tmp_path}/x.pt", out_dir=tmp_path
    )
    with pytest.raises(PeprInputError, match="checkpoint file .*x.pt not found"):
        validate_train_config(missing_checkpoint)
    with pytest.raises(PeprInputError, match="unknown init 'warm'"):
        validate_train_config(TrainConfig(model="resnet18", dataset="synthetic", init="warm", out_dir=tmp_path))
    # an architecture without ImageNet weights in timm
    with pytest.raises(PeprInputError, match="no pretrained weights"):
        validate_train_config(
            TrainConfig(model="botnet50ts_256", dataset="synthetic", init="imagenet", out_dir=tmp_path)
        )


def test_bad_data_file_fails_before_training(tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, train_images=np.zeros((4, 8, 8), np.uint8))
    with pytest.raises(PeprInputError, match="missing arrays"):
        run_training(TrainConfig(model="test_resnet", dataset=f"npz:{bad}", out_dir=tmp_path / "out"), log=QUIET)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "flags, words",
    [
        (["--fraction", "0"], "--fraction: must be in (0, 1]"),
        (["--fraction", "half"], "--fraction: must be a number, got 'half'"),
        (["--epochs", "2.5"], "--epochs: must be an integer"),
        (["--epochs", "0"], "--epochs: must be >= 1"),
        (["--batch-size", "-4"], "--batch-size: must be >= 2 (BatchNorm needs 2 samples)"),
        (["--batch-size", "1"], "--batch-size: must be >= 2"),
        (["--image-size", "4"], "--image-size: must be in 8..1024"),
        (["--lr", "0"], "--lr: must be > 0"),
        (["--lr", "inf"], "--lr: must be > 0"),
        (["--seed", "-1"], "--seed: must be in 0..4294967295"),
        (["--threads", "0"], "--threads: must be >= 1"),
        (["--init", "warm"], "unknown init 'warm'"),
        (["--country", "Denmark"], "country 'Denmark'"),
        (["--device", "gpu0"], "unknown device 'gpu0'"),
        (["--dataset", "pneumoniamnist_64"], "did you mean 'pneumoniamnist@64'"),
        (["--seed", str(2**32)], "--seed: must be in 0..4294967295"),
        (["--precision", "fp16"], "invalid choice: 'fp16'"),
        (["--save-model", "w.bin"], "use a .pt, .pth or .safetensors file name"),
        (["--save-model", "/dev/null/w.pt"], "/dev/null is not a writable folder"),
        (["--carbon-intensity", "missing.csv"], "carbon intensity file missing.csv cannot be read"),
        (["--pretrain-metrics", "missing.json"], "--pretrain-metrics missing.json cannot be read"),
    ],
)
def test_cli_bad_flags_exit_2(tmp_path, flags, words):
    base = {"--model": "test_resnet", "--dataset": "synthetic", "--out": str(tmp_path / "o")}
    for flag, value in zip(flags[::2], flags[1::2]):
        base[flag] = value
    argv = ["train"] + [item for pair in base.items() for item in pair]
    code, err = run_cli(*argv)
    assert code == 2, err
    assert words in err, err
    assert "Traceback" not in err


def test_cli_missing_required_flag():
    code, err = run_cli("train", "--dataset", "synthetic", "--out", "x")
    assert code == 2 and "--model" in err


def test_training_steps_under_gpu_precision_on_cpu():
    """The CUDA code path (bf16 autocast + channels_last) exercised on CPU tensors."""
    import timm
    import torch

    from pepr.datasets.core import load_dataset
    from pepr.train.loop import evaluate, to_device, train_epoch

    data = load_dataset("synthetic:n_train=40,n_val=8,n_test=8")
    splits = to_device(data, torch.device("cpu"), 32)  # also exercises the on-device resize
    assert splits.train_x.shape[-2:] == (32, 32) and splits.train_x.dtype == torch.uint8
    precision = Precision("bfloat16", True)
    model = timm.create_model("test_resnet", num_classes=2, in_chans=1).to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-4)
    loss = train_epoch(model, optimizer, splits, 16, torch.Generator().manual_seed(0), precision)
    assert math.isfinite(loss)
    result = evaluate(model, splits.test_x, splits.test_y, splits, precision, 5)
    assert 0.0 <= result["accuracy"] <= 1.0


# ------------------------------------------------------------------ training runs (slow)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """One 2-epoch run on a tiny synthetic set with a fraction, saving the model."""
    out = tmp_path_factory.mktemp("smoke")
    cfg = TrainConfig(
        model="test_resnet",
        dataset="synthetic:n_train=120,n_val=32,n_test=48",
        fraction=0.5,
        epochs=2,
        seed=1,
        out_dir=out / "run",
        save_model=out / "weights.pt",
        threads=2,
    )
    return cfg, run_training(cfg, log=QUIET)


@pytest.mark.slow
def test_smoke_run_writes_the_contract(smoke):
    cfg, metrics = smoke
    on_disk = json.loads((cfg.out_dir / "metrics.json").read_text())
    assert on_disk == json.loads(json.dumps(metrics))
    assert metrics["status"] == "ok" and metrics["reason"] == ""
    for key in (
        "model",
        "dataset",
        "init",
        "fraction",
        "seed",
        "params",
        *RESULT_KEYS,
        "epochs",
        "image_size",
        "batch_size",
        "lr",
        "device",
        "host",
        "country",
        "n_train",
    ):
        assert key in metrics, key
    for key in ("test_accuracy", "test_balanced_accuracy", "test_auc", "test_f1", "val_accuracy"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert metrics["energy_kwh"] > 0 and metrics["co2_kg"] > 0 and metrics["train_time_s"] > 0
    assert metrics["energy_kwh"] == pytest.approx(
        metrics["cpu_energy_kwh"] + metrics["gpu_energy_kwh"] + metrics["ram_energy_kwh"]
    )
    assert metrics["energy_method"].startswith(("measured", "estimated"))
    # peak_memory_mb is the training's working set (not libraries and data): far below the process RSS
    assert 0 < metrics["peak_memory_mb"] < metrics["process_peak_rss_mb"] and metrics["process_peak_rss_mb"] > 100
    assert metrics["precision"] == "fp32" and metrics["memory_reserved_epoch2_mb"] is None
    assert metrics["carbon_intensity_source"] == "CodeCarbon country DNK" and 0 < metrics["cpu_share_of_node"] <= 1
    assert metrics["flops_per_image"] > 0 and metrics["inference_ms_per_image"] > 0
    assert 0 < metrics["cpu_share"] <= 1.5
    assert metrics["n_train"] == 60  # stratified half of 120
    assert metrics["params"] > 0 and metrics["device"] == "cpu"
    assert set(metrics["versions"]) >= {"torch", "timm", "codecarbon"}
    assert metrics["config"]["model"] == "test_resnet"
    history = read_history(cfg.out_dir)
    assert [int(row["epoch"]) for row in history] == [1, 2]
    assert list(history[0]) == list(HISTORY_COLUMNS)
    assert float(history[-1]["test_accuracy"]) == pytest.approx(metrics["test_accuracy"])
    assert float(history[-1]["cumulative_time_s"]) == pytest.approx(metrics["train_time_s"])
    assert float(history[-1]["cumulative_energy_kwh"]) == pytest.approx(metrics["energy_kwh"])
    # nothing else in the run folder: no resume checkpoint left, no CodeCarbon files
    # (the lock file and the previous/<stamp>/ archive of this result are part of the run contract)
    assert sorted(p.name for p in cfg.out_dir.iterdir()) == [  # the lock file goes with the lock
        "history.csv",
        "metrics.json",
        "previous",
        "test_predictions.npz",
    ]
    (archived,) = (cfg.out_dir / "previous").iterdir()
    assert (archived / "metrics.json").read_text() == (cfg.out_dir / "metrics.json").read_text()
    assert (archived / "test_predictions.npz").read_bytes() == (cfg.out_dir / "test_predictions.npz").read_bytes()
    # the per-image predictions are the final model's: they give the recorded test accuracy
    from pepr.results import predictions

    pred = predictions.read(cfg.out_dir / "test_predictions.npz")
    assert pred.labels.shape == (48,) and pred.probabilities.shape == (48, 2)
    assert np.allclose(pred.probabilities.sum(axis=1), 1.0, atol=1e-5)
    correct, _ = predictions.performance_per_image(pred, "test_accuracy")
    assert correct.mean() == pytest.approx(metrics["test_accuracy"])
    assert cfg.save_model.is_file()


@pytest.mark.slow
def test_checkpoint_init_same_and_different_shapes(smoke, tmp_path):
    import torch

    from pepr.train.models import create_model

    cfg, _ = smoke
    saved = torch.load(cfg.save_model, weights_only=True)
    # same classes/channels: every tensor loaded as saved
    model, description = create_model("test_resnet", f"checkpoint:{cfg.save_model}", 2, 1, 28)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in saved.items())
    assert description == f"loaded checkpoint {cfg.save_model}"
    # 3 classes and 3 channels: head re-initialised, first conv adapted, the rest loaded
    model, description = create_model("test_resnet", f"checkpoint:{cfg.save_model}", 3, 3, 28)
    assert "classifier re-initialised" in description and "first conv adapted to 3" in description
    state = model.state_dict()
    assert state["fc.weight"].shape == (3, saved["fc.weight"].shape[1])
    first_conv = model.pretrained_cfg["first_conv"] + ".weight"
    assert state[first_conv].shape[1] == 3
    untouched = [k for k in saved if not k.startswith("fc.") and k != first_conv]
    assert all(torch.equal(state[k], saved[k]) for k in untouched)
    # and a full fine-tuning run from it on a different dataset
    metrics = run_training(
        TrainConfig(
            model="test_resnet",
            dataset=TINY + ",classes=3,channels=3",
            init=f"checkpoint:{cfg.save_model}",
            epochs=1,
            out_dir=tmp_path / "ft",
            threads=2,
        ),
        log=QUIET,
    )
    assert metrics["status"] == "ok" and "classifier re-initialised" in metrics["init_description"]
    # a checkpoint of another architecture is the user's error
    with pytest.raises(PeprInputError, match="does not match this architecture"):
        create_model("test_efficientnet", f"checkpoint:{cfg.save_model}", 2, 1, 28)


@pytest.mark.slow
def test_model_that_cannot_take_28px_is_a_failed_record(tmp_path):
    out = tmp_path / "convnext"
    code, err = run_cli(
        "train", "--model", "convnext_atto", "--dataset", TINY, "--epochs", "1", "--out", str(out), "--threads", "2"
    )
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "failed"
    assert "Kernel size can't be greater than actual input size" in metrics["reason"]
    assert metrics["params"] > 0
    assert all(metrics[key] is None for key in RESULT_KEYS if key != "params")  # params: known before the probe
    assert read_history(out) == [] and (out / "history.csv").read_text().startswith("epoch,")
    # a model that cannot even be built for this size (ViT patch 16 on 28 px) is recorded too
    metrics = run_training(
        TrainConfig(model="test_vit", dataset=TINY, epochs=1, out_dir=tmp_path / "vit", threads=2), log=QUIET
    )
    assert metrics["status"] == "failed" and "divisible by patch size" in metrics["reason"]


def _history_table(out_dir: Path) -> dict[str, np.ndarray]:
    rows = read_history(out_dir)
    return {key: np.array([float(row[key]) for row in rows]) for key in rows[0]}


@pytest.mark.slow
def test_resume_after_kill(tmp_path):
    """Kill `pepr train` after its first checkpoint, re-run: epochs continue, time/energy add up,
    and the result equals an uninterrupted run (same seed, CPU)."""
    dataset = "synthetic:n_train=600,n_val=32,n_test=48"
    out = tmp_path / "killed"
    argv = [
        sys.executable,
        "-m",
        "pepr.cli",
        "train",
        "--model",
        "test_resnet",
        "--dataset",
        dataset,
        "--epochs",
        "3",
        "--out",
        str(out),
        "--threads",
        "1",
    ]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not (out / "resume.pt").exists():
        assert process.poll() is None, f"pepr train ended before its first checkpoint: {process.stderr.read()}"
        assert time.monotonic() < deadline, "no resume.pt after 240 s"
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (out / "metrics.json").exists()

    logs: list[str] = []
    resumed = run_training(
        TrainConfig(model="test_resnet", dataset=dataset, epochs=3, out_dir=out, threads=1), log=logs.append
    )
    assert any("resuming from" in line for line in logs), logs
    assert resumed["status"] == "ok" and resumed["segments"] == 2
    history = _history_table(out)
    assert history["epoch"].tolist() == [1, 2, 3]
    assert history["segment"][0] == 0 and history["segment"][-1] == 1
    assert np.allclose(history["cumulative_time_s"], np.cumsum(history["epoch_time_s"]))
    assert np.allclose(history["cumulative_energy_kwh"], np.cumsum(history["epoch_energy_kwh"]))
    assert resumed["train_time_s"] == pytest.approx(history["epoch_time_s"].sum())
    assert resumed["energy_kwh"] == pytest.approx(history["epoch_energy_kwh"].sum())
    assert not (out / "resume.pt").exists()

    straight = run_training(
        TrainConfig(model="test_resnet", dataset=dataset, epochs=3, out_dir=tmp_path / "straight", threads=1), log=QUIET
    )
    assert resumed["test_accuracy"] == straight["test_accuracy"]
    assert np.allclose(history["train_loss"], _history_table(tmp_path / "straight")["train_loss"], rtol=1e-5)


@pytest.mark.slow
def test_stale_resume_checkpoint_of_other_settings_is_discarded(tmp_path):
    import torch

    out = tmp_path / "run"
    out.mkdir()
    other = json.dumps({"model": "other"})
    payload = {
        "fingerprint": other,
        "model": {},
        "optimizer": {},
        "generator": torch.get_rng_state(),
        "torch_rng": torch.get_rng_state(),
        "state": {},
    }
    torch.save(payload, out / "resume.pt")
    logs: list[str] = []
    metrics = run_training(
        TrainConfig(model="test_resnet", dataset=TINY, epochs=1, out_dir=out, threads=2), log=logs.append
    )
    assert metrics["segments"] == 1
    assert any("saved with other settings" in line for line in logs)
    assert not list(out.glob("resume.pt*"))


@pytest.mark.slow
@pytest.mark.skipif(not PNEUMONIA.exists(), reason=absent(PNEUMONIA))
def test_pneumoniamnist_learns(tmp_path):
    """Real chest X-rays: clearly above chance on the full test split (234 normal / 390 pneumonia).

    Accuracy alone is misleading (62.5% by always saying pneumonia): check AUC and balanced accuracy.
    """
    metrics = run_training(
        TrainConfig(
            model="resnet18",
            dataset="pneumoniamnist",
            data_dir=PNEUMONIA.parent,
            fraction=0.25,
            epochs=2,
            out_dir=tmp_path / "pneu",
            threads=2,
        ),
        log=QUIET,
    )
    assert metrics["n_test"] == 624
    assert metrics["test_auc"] > 0.8, metrics
    assert metrics["test_balanced_accuracy"] > 0.6, metrics


def test_imagenet_init_offline_without_cache_is_a_clear_error(tmp_path):
    """What a compute node without prefetched weights sees: exit 2 and what to do, no traceback.

    huggingface_hub reads HF_HUB_OFFLINE/HF_HUB_CACHE at import, hence a fresh process.
    """
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hf"), "HF_HOME": str(tmp_path / "hf")}
    argv = [
        sys.executable,
        "-m",
        "pepr.cli",
        "train",
        "--model",
        "resnet18",
        "--init",
        "imagenet",
        "--dataset",
        TINY,
        "--epochs",
        "1",
        "--out",
        str(tmp_path / "o"),
    ]
    result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 2, result.stderr
    assert "ImageNet weights for 'resnet18' are not available offline" in result.stderr
    assert "--init scratch" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "o" / "metrics.json").exists()


def test_second_training_on_the_same_folder_exits_2(tmp_path):
    """The run lock: while one process trains a folder, a second `pepr train` on it stops at once."""
    from pepr.results.runs import run_lock

    out = tmp_path / "run"
    with run_lock(out):  # held as a training in another process would hold it
        code, err = run_cli("train", "--model", "test_resnet", "--dataset", TINY, "--epochs", "1", "--out", str(out))
    assert code == 2 and "is being trained by" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not (out / "metrics.json").exists()


def test_failed_pretraining_is_recorded_without_training(tmp_path):
    source = tmp_path / "pretrain" / "metrics.json"
    source.parent.mkdir()
    source.write_text(json.dumps({"status": "failed", "reason": "out of memory"}))
    out = tmp_path / "cell"
    missing_checkpoint = tmp_path / "pretrain" / "model.pt"  # never written: the pretraining failed
    code, err = run_cli(
        "train",
        "--model",
        "test_resnet",
        "--dataset",
        TINY,
        "--init",
        f"checkpoint:{missing_checkpoint}",
        "--out",
        str(out),
        "--pretrain-metrics",
        str(source),
    )
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "failed"
    assert metrics["reason"] == f"pretraining on the transfer source failed (out of memory); see {source}"
    assert all(metrics[key] is None for key in RESULT_KEYS)
    assert (out / "history.csv").read_text().strip() == ",".join(HISTORY_COLUMNS)


@pytest.mark.slow
def test_ok_pretraining_saves_the_model_before_its_metrics_mark_it_finished(tmp_path, monkeypatch):
    """A kill at any point of the final writes never leaves out/metrics.json (the finished
    marker the transfer cells plan from) without the model file: the weights are saved after the
    result is kept in previous/ and before the run folder's metrics.json is placed."""
    from pepr.train import models

    source = tmp_path / "metrics.json"
    source.write_text(json.dumps({"status": "ok", "reason": ""}))
    out, weights = tmp_path / "cell", tmp_path / "new" / "folder" / "w.pt"
    real_save = models.save_model
    seen = {}

    def watching_save(model, path):
        seen["run folder finished"] = (out / "metrics.json").exists()
        seen["archived"] = [p.name for p in (out / "previous").glob("*/metrics.json")]
        real_save(model, path)

    monkeypatch.setattr(models, "save_model", watching_save)
    code, err = run_cli(*train_argv(out, "--pretrain-metrics", str(source), "--save-model", str(weights), threads=2))
    assert code == 0, err
    assert seen == {"run folder finished": False, "archived": ["metrics.json"]}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["saved_model"] == str(weights)
    assert weights.is_file() and [p.name for p in (out / "previous").glob("*/w.pt")] == ["w.pt"]


def test_failing_rerun_names_the_kept_previous_result(tmp_path, capsys):
    """A run folder whose finished result was archived (previous/<stamp>/) and whose rerun stops
    on bad input: the one-line error (exit 2) says where the finished result is."""
    from pepr.cli import main

    out = tmp_path / "run"
    kept = out / "previous" / "20260101T000000Z"
    kept.mkdir(parents=True)
    (kept / "metrics.json").write_text('{"status": "ok"}')
    bad = tmp_path / "bad.npz"
    np.savez(bad, train_images=np.zeros((4, 8, 8), np.uint8))
    code = main(["train", "--model", "test_resnet", "--dataset", f"npz:{bad}", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "missing arrays" in err and f"the last finished result of this run is kept in {kept}/" in err
