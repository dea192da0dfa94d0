"""Rerun promises, fast tier: independent archives verified by hash, lost and edited results
found for repair, and the rule logic that used to sit in common.smk (pepr.plan.rules)."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from pepr.errors import PeprInputError
from pepr.plan import rules
from pepr.results import runs

METRICS, HISTORY = {"status": "ok", "training_identity": {"model": "m"}}, [{"epoch": 1, "train_loss": 0.5}]


def published(tmp_path: Path) -> tuple[Path, Path]:
    out = tmp_path / "run"
    archive = runs.publish_finished(out, METRICS, HISTORY)
    return out, archive


def test_archive_holds_independent_copies_with_their_sums(tmp_path):
    out, archive = published(tmp_path)
    for name in ("metrics.json", "history.csv"):
        assert os.stat(out / name).st_ino != os.stat(archive / name).st_ino
        assert (out / name).read_bytes() == (archive / name).read_bytes()
    sums = (archive / runs.SUMS_FILE).read_text().splitlines()
    assert sorted(line.split("  ")[1] for line in sums) == ["history.csv", "metrics.json"]
    assert runs.archive_intact(archive)


def test_edit_in_place_leaves_the_archive_intact_and_is_found(tmp_path):
    out, archive = published(tmp_path)
    assert runs.result_damage(out) is None
    with open(out / "metrics.json", "r+b") as handle:  # `: > metrics.json`
        handle.truncate(0)
    assert runs.result_damage(out) == "edited"
    assert runs.archive_intact(archive) and runs.find_finished(out, {"model": "m"}) == archive
    runs.restore_finished(archive, out)
    assert runs.result_damage(out) is None
    assert (out / "metrics.json").read_bytes() == (archive / "metrics.json").read_bytes()


def test_same_content_with_a_new_time_is_no_damage(tmp_path):
    out, _ = published(tmp_path)
    os.utime(out / "history.csv", (1, 1))  # `touch`, `cp` without -p: the content is what counts
    assert runs.result_damage(out) is None


def test_lost_result_is_found_and_a_pending_cell_is_not(tmp_path):
    out, _ = published(tmp_path)
    (out / "metrics.json").unlink()
    assert runs.result_damage(out) == "lost"
    pending = tmp_path / "pending"
    pending.mkdir()
    assert runs.result_damage(pending) is None and runs.result_damage(tmp_path / "absent") is None
    assert rules.outputs_to_repair([str(out), str(pending)]) == {str(out / "metrics.json"): "lost"}


def test_damaged_archive_is_never_restored(tmp_path):
    out, archive = published(tmp_path)
    (archive / "metrics.json").write_text('{"status": "ok", "training_identity": {"model": "m"}, "edited": 1}')
    assert not runs.archive_intact(archive)
    assert runs.find_finished(out, {"model": "m"}) is None


def test_archive_of_an_earlier_pepr_without_sums_still_restores(tmp_path):
    out, archive = published(tmp_path)
    (archive / runs.SUMS_FILE).unlink()
    assert runs.archive_intact(archive) and runs.find_finished(out, {"model": "m"}) == archive
    # hard links (an earlier pepr's layout): same inode, never "edited"
    for name in ("metrics.json", "history.csv"):
        (out / name).unlink()
        os.link(archive / name, out / name)
    assert runs.result_damage(out) is None


def test_weights_are_restored_as_a_link(tmp_path):
    out, archive = published(tmp_path)
    (archive / "model.pt").write_bytes(b"w" * 10)
    (out / "metrics.json").unlink()
    runs.restore_finished(archive, out, out / "model.pt")
    assert os.stat(out / "model.pt").st_ino == os.stat(archive / "model.pt").st_ino


@pytest.mark.parametrize(
    "value, expected",
    [
        ("true", True),
        (" Yes ", True),
        ("1", True),
        ("false", False),
        ("no", False),
        ("null", None),
        ("None", None),
        (True, True),
        (None, None),
        ("maybe", "maybe"),
    ],
)
def test_retrain_words(value, expected):
    assert rules.retrain_choice(value) == expected


def test_gpus_given_prefers_the_override_and_a_function_counts_as_one():
    resources = {"train": {"gpu": 0}, "pretrain": {"gpu": 0}}
    assert rules.train_gpus_given({}, resources) == 0
    assert rules.train_gpus_given({"train_model": 1}, resources) == 1
    assert rules.train_gpus_given({"pretrain_source": "2"}, resources) == 2
    assert rules.train_gpus_given({"train_model": lambda wildcards: 1}, resources) == 1
    assert rules.train_gpus_given({}, {"train": {"gpu": 1}, "pretrain": {"gpu": 0}}) == 1


def test_cache_homes(tmp_path):
    inside = rules.cache_homes(str(tmp_path / "w"), {})
    assert inside == {"HF_HOME": str(tmp_path / "w" / "huggingface"), "TORCH_HOME": str(tmp_path / "w" / "torch")}
    assert rules.cache_homes(None, {"HF_HOME": "/h", "XDG_CACHE_HOME": "/x"}) == {
        "HF_HOME": "/h",
        "TORCH_HOME": "/x/torch",
    }


def test_lost_checkpoint_of_a_finished_pretraining_stops_planning(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pretrain = SimpleNamespace(metrics="pre/metrics.json", checkpoint="pre/model.pt", directory="pre", model="m")
    cell = SimpleNamespace(metrics="cell/metrics.json", key="cell", pretrain=pretrain)
    rules.check_checkpoint(cell)  # nothing finished yet: fine
    Path("pre").mkdir()
    Path("pre/metrics.json").write_text('{"status": "ok"}')
    with pytest.raises(PeprInputError, match="pre/model.pt is missing"):
        rules.check_checkpoint(cell)
    Path("pre/metrics.json").write_text('{"status": "failed"}')
    rules.check_checkpoint(cell)  # a failed pretraining has no weights: its cells record that


def test_half_a_result_without_an_archive_is_lost(tmp_path):
    out = tmp_path / "old"
    out.mkdir()
    (out / "history.csv").write_text("epoch\n1\n")  # an earlier pepr's run, its metrics.json removed
    assert runs.result_damage(out) == "lost"


#: The one cell :func:`one_cell_status` asks about, below results/.
CELL = "runs/d/scratch/1.0/m/seed0"


def one_cell_status(root: Path):
    """``pepr status``'s view of :data:`CELL` in the sweep folder ``root`` (no squeue)."""
    from pepr.results import status

    found = status.collect_status(
        [("cell", CELL, "m", f"results/{CELL}/metrics.json")],
        results_dir=root / "results",
        snakemake_dir=root / ".snakemake",
        use_squeue=False,
    )
    (cell,) = found.cells
    return cell


def test_status_never_opens_a_fifo_and_advises_the_repair(tmp_path):
    from pepr.results import status

    out = tmp_path / "results" / CELL
    out.mkdir(parents=True)
    os.mkfifo(out / "metrics.json")
    os.mkfifo(out / ".pepr-train.lock")
    with pytest.raises(OSError, match="not a regular file"):
        status.open_regular(out / "metrics.json")
    cell = one_cell_status(tmp_path)
    assert cell.state == "failed" and "is not a regular file" in cell.reason
    assert "run the same snakemake command" in cell.reason and "previous/" in cell.reason


def test_image_size_equal_to_the_stored_size_is_no_change(tmp_path):
    import numpy as np

    from pepr.plan import rerun

    old = {"model": "m", "dataset": "pneumoniamnist", "epochs": 1, "lr": 0.0005}
    same = {**old, "image_size": 28, "lr": 5e-4}
    never, fresh = (lambda: None), (lambda: False)
    assert rerun.native_image_size("pneumoniamnist", None) == 28
    assert rerun.equivalent(old, same, never, fresh, lambda: 28)
    assert rerun.equivalent(same, old, never, fresh, lambda: 28)
    assert not rerun.equivalent(old, {**old, "image_size": 64}, never, fresh, lambda: 28)
    assert not rerun.equivalent(old, same, never, fresh, lambda: None)  # unknown size: a change
    path = tmp_path / "cells.npz"
    np.savez(path, train_images=np.zeros((4, 32, 32), np.uint8), train_labels=np.zeros((4, 1)))
    assert rerun.native_image_size(f"npz:{path}", str(path)) == 32
    assert rerun.native_image_size("synthetic:n_train=10", None) == rerun.native_image_size("synthetic", None)


def shared_pneumonia() -> Path | None:
    """Real PneumoniaMNIST: $PEPR_SHARED_DIR, else a `shared/` folder beside any parent of the repo."""
    import os as _os

    here = Path(__file__).resolve().parents[1]
    roots = [Path(_os.environ["PEPR_SHARED_DIR"])] if _os.environ.get("PEPR_SHARED_DIR") else []
    roots += [parent / "shared" for parent in here.parents]
    for root in roots:
        path = root / "data" / "medmnist" / "pneumoniamnist.npz"
        if path.is_file():
            return path
    return None


PNEUMONIA = shared_pneumonia()


def planning_problems(**config):
    from pepr.plan import config as pepr_config
    from pepr.plan import prepare

    schema = pepr_config.load_schema(
        Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "config.schema.yaml"
    )
    config.setdefault("models", ["resnet18"])
    pepr_config.apply_defaults(config, schema)
    catalogue = {"models": ["resnet18"], "pretrained": ["resnet18"]}
    return prepare.config_problems(config, schema, catalogue=catalogue)


@pytest.mark.skipif(
    PNEUMONIA is None, reason="real PneumoniaMNIST not found: set PEPR_SHARED_DIR to the folder holding data/medmnist/"
)
def test_a_class_emptying_fraction_on_real_data_is_found_at_planning():
    problems = planning_problems(datasets=["pneumoniamnist"], data_dir=str(PNEUMONIA.parent), fractions=[0.0001, 0.5])
    assert [p for p in problems if "leaves class" in p] == [
        "fractions: on pneumoniamnist: fraction 0.0001 leaves class 0 (388 training samples) with no sample; "
        "use fraction >= 0.00387 or drop this cell"
    ], problems


@pytest.mark.parametrize("where", ["fractions", "transfer.fraction"])
def test_a_class_emptying_fraction_of_synthetic_or_npz_data_is_found_at_planning(tmp_path, where):
    import numpy as np

    labels = np.array([0] * 50 + [1] * 3).reshape(-1, 1)
    path = tmp_path / "cells.npz"
    np.savez(
        path,
        train_images=np.zeros((53, 28, 28), np.uint8),
        train_labels=labels,
        val_images=np.zeros((4, 28, 28), np.uint8),
        val_labels=np.array([[0], [1], [0], [1]]),
        test_images=np.zeros((4, 28, 28), np.uint8),
        test_labels=np.array([[0], [1], [0], [1]]),
    )
    if where == "fractions":
        problems = planning_problems(datasets=[f"npz:{path}"], fractions=[0.1])
        assert any(
            p.startswith("fractions: on npz:") and "leaves class 1 (3 training samples)" in p for p in problems
        ), problems
    else:
        problems = planning_problems(
            datasets=["synthetic"],
            inits=["transfer"],
            fractions=[1.0],
            transfer={"source": f"npz:{path}", "fraction": 0.1, "epochs": 1},
        )
        assert any(p.startswith("transfer.fraction: on npz:") for p in problems), problems
    assert not [p for p in planning_problems(datasets=[f"npz:{path}"], fractions=[0.5]) if "leaves class" in p]


def test_a_training_rejected_inside_the_lock_leaves_nothing(tmp_path):
    out = tmp_path / "fresh"
    with pytest.raises(PeprInputError):
        with runs.run_lock(out):
            assert (out / ".pepr-train.lock").is_file()
            raise PeprInputError("fraction 0.0001 leaves class 0 with no sample")
    assert not out.exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    with runs.run_lock(kept):
        pass
    assert sorted(p.name for p in kept.iterdir()) == ["notes.txt"]


def test_a_second_holder_is_refused_while_the_first_trains(tmp_path):
    with runs.run_lock(tmp_path / "run"):
        with pytest.raises(PeprInputError, match="is being trained by pid"):
            with runs.run_lock(tmp_path / "run"):
                pass


def test_kill_9_during_a_table_write_leaves_a_temp_the_next_write_removes(tmp_path, monkeypatch):
    import signal
    import subprocess
    import sys
    import time

    target = tmp_path / "results" / "pepr.csv"
    target.parent.mkdir()
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"""
import time
import pandas as pd
from pepr.results import tableio
def slow(df, path):
    open(path, "w").write("half a table")
    time.sleep(120)
tableio.write_csv = slow
tableio.write_table(pd.DataFrame({{"a": [1]}}), {str(target)!r})
""",
        ]
    )
    deadline = time.time() + 60
    while not list(target.parent.glob(".pepr.csv.*.tmp")) and time.time() < deadline:
        time.sleep(0.1)
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    (leftover,) = target.parent.glob(".pepr.csv.*.tmp")
    import pandas as pd

    from pepr.results import tableio

    young = runs.remove_stale_temporaries(target)  # a writer's file younger than a minute is left alone
    assert young == [] and leftover.exists()
    monkeypatch.setattr(runs, "STALE_TEMPORARY_S", 0.0)
    (alive := tmp_path / "results" / f".pepr.csv.{os.getpid()}.{'a' * 32}.tmp").write_text("in progress")
    tableio.write_table(pd.DataFrame({"a": [2]}), target)
    assert not leftover.exists() and alive.exists()  # a live writer's file stays
    assert pd.read_csv(target)["a"].tolist() == [2]


def test_status_says_a_lost_result_is_restored_by_the_next_run(tmp_path):
    out = tmp_path / "results" / CELL
    runs.publish_finished(out, METRICS, HISTORY)
    (out / "metrics.json").unlink()
    cell = one_cell_status(tmp_path)
    assert cell.state == "pending" and "restores the copy kept in its previous/" in cell.reason
