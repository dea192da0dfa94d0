"""Issue 19: outputs that cannot be written fail in one line (exit 2), and nothing finished is lost.

Read-only and full file systems are real: a small tmpfs mounted for the test (needs root and
mount permission; skipped with the reason otherwise). ENOSPC at the exact writes (torch.save of
resume.pt, the final metrics write) is also simulated by patching, so it is tested everywhere.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

import pepr.train.run as train_module
from pepr.results.outputs import output_dir_problems, write_failure_message
from test_train import run_cli, train_argv

TINY = "synthetic:n_train=64,n_val=16,n_test=32"


def train(out: Path, *extra: str) -> tuple[int, str]:
    """A 2-epoch tiny ``pepr train`` into ``out`` (a resume checkpoint is written between the epochs)."""
    return run_cli(*train_argv(out, *extra, dataset=TINY, epochs=2))


def assert_one_line_error(code: int, err: str, *words: str) -> None:
    lines = [line for line in err.splitlines() if line.startswith("pepr train: error:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    for word in words:
        assert word in lines[0], lines[0]


def _mount_tmpfs(where: Path, options: str) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True)
    return done.returncode == 0


@pytest.fixture
def small_fs(tmp_path):
    """A 48 MiB tmpfs (room for the free-space checks of a tiny run, not for much more)."""
    where = tmp_path / f"fs-{uuid.uuid4().hex[:6]}"
    if not _mount_tmpfs(where, "size=48m"):
        pytest.skip(
            "cannot mount a tmpfs here: the full-disk tests need root with mount permission "
            "(CAP_SYS_ADMIN; in a container, --privileged)"
        )
    yield where
    subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.fixture
def read_only_fs(tmp_path):
    where = tmp_path / f"ro-{uuid.uuid4().hex[:6]}"
    if not _mount_tmpfs(where, "ro,size=1m"):
        if os.geteuid() == 0:
            pytest.skip(
                "cannot mount a read-only tmpfs, and root ignores chmod: run as root with mount "
                "permission (CAP_SYS_ADMIN) or as a user other than root"
            )
        where.chmod(0o555)
    yield where
    subprocess.run(["umount", "-l", str(where)], check=False) if os.geteuid() == 0 else where.chmod(0o755)


def fill(fs: Path, leave_bytes: int = 0) -> Path:
    """Fill ``fs`` up to ``leave_bytes`` free."""
    filler = fs / "filler"
    with open(filler, "ab") as handle:
        try:
            while shutil.disk_usage(fs).free > leave_bytes:
                handle.write(b"\0" * min(2**20, max(4096, shutil.disk_usage(fs).free - leave_bytes)))
                handle.flush()
        except OSError:
            pass
    return filler


# ------------------------------------------------------------------ checked before any work


def test_out_that_is_an_existing_file(tmp_path):
    target = tmp_path / "metrics-here"
    target.write_text("x")
    code, err = train(target)
    assert_one_line_error(code, err, str(target), "is a file")
    assert target.read_text() == "x"


def test_out_in_a_read_only_folder(read_only_fs):
    code, err = train(read_only_fs / "run")
    assert_one_line_error(code, err, str(read_only_fs / "run"), "not writable")
    code, err = train(read_only_fs)
    assert_one_line_error(code, err, str(read_only_fs))


def test_out_on_a_full_disk_fails_before_loading_data(small_fs):
    fill(small_fs, leave_bytes=2**20)
    code, err = train(small_fs / "run")
    assert_one_line_error(code, err, str(small_fs / "run"), "free")
    assert not (small_fs / "run").exists()


def test_threads_beyond_the_machine_are_refused(tmp_path):
    cores = os.cpu_count()
    for threads in ("5000", "100000"):
        code, err = train(tmp_path / "run", "--threads", threads)
        assert_one_line_error(code, err, f"--threads {threads}", f"{cores} CPU cores")


def test_output_dir_problems_names_the_kind(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    assert "is not a folder" in output_dir_problems(fifo)[0]
    assert output_dir_problems(tmp_path / "new" / "deeper") == []


def test_write_failure_message_is_one_line_naming_the_path():
    message = write_failure_message(OSError(errno.ENOSPC, "No space left on device", "/x/resume.pt"))
    assert "/x/resume.pt" in message and "No space left" in message and "\n" not in message
    assert write_failure_message(OSError(errno.ECONNRESET, "reset")) is None


# ------------------------------------------------------------------ a disk that fills during training


@pytest.mark.slow
def test_disk_full_at_the_resume_save_keeps_the_last_epoch_and_leaves_no_temp(small_fs, monkeypatch):
    from pepr.train.resume import save_resume as real_save

    out = small_fs / "run"
    calls = []

    def save_then_fill(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # epoch 2's save: the disk is full by now
            fill(small_fs)
        return real_save(*args, **kwargs)

    monkeypatch.setattr(train_module, "save_resume", save_then_fill)
    code, err = train(out)
    assert_one_line_error(code, err, "resume.pt", "No space left on device", "a rerun continues")
    assert [p.name for p in out.iterdir() if ".tmp" in p.name] == []  # no partial temp file keeps the disk full
    assert (out / "resume.pt").stat().st_size > 0
    (small_fs / "filler").unlink()
    monkeypatch.undo()
    code, err = train(out)
    assert code == 0, err
    assert "resuming from" in err and "1 epoch(s) done" in err  # epoch 1 was not trained again


@pytest.mark.slow
def test_disk_full_at_the_final_write_loses_no_epoch(tmp_path, monkeypatch):
    out = tmp_path / "run"
    real_write = train_module.runs.archive_result

    def full_disk(out_dir, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(Path(out_dir) / "metrics.json"))

    monkeypatch.setattr(train_module.runs, "archive_result", full_disk)
    code, err = run_cli(*train_argv(out, dataset=TINY))
    assert_one_line_error(code, err, "metrics.json", "No space left on device", "resume.pt")
    monkeypatch.setattr(train_module.runs, "archive_result", real_write)
    code, err = run_cli(*train_argv(out, dataset=TINY))
    assert code == 0, err
    assert "1 epoch(s) done" in err and "epoch 1/1" not in err  # the one epoch was kept, not retrained
    assert (out / "metrics.json").is_file() and not (out / "resume.pt").exists()


def test_a_failing_torch_save_never_replaces_resume_pt(tmp_path, monkeypatch):
    import torch

    from pepr.train.resume import RunState, save_resume

    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters())
    generator = torch.Generator().manual_seed(0)
    path = tmp_path / "resume.pt"
    save_resume(path, {"seed": 0}, model, optimizer, generator, RunState(epochs_done=1))
    before = path.read_bytes()

    def partial_then_enospc(obj, handle, *args, **kwargs):
        handle.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", partial_then_enospc)
    with pytest.raises(OSError) as caught:
        save_resume(path, {"seed": 0}, model, optimizer, generator, RunState(epochs_done=2))
    assert caught.value.errno == errno.ENOSPC
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["resume.pt"]


@pytest.mark.slow
def test_stale_temp_of_a_killed_save_is_removed_at_start(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    stale = out / ".resume.pt.tmp4242-deadbeef"
    stale.write_bytes(b"")  # what a kill -9 during torch.save leaves
    other = out / ".resume.pt.4242.0123456789abcdef.tmp"  # pepr.results.runs' temp-name pattern
    other.write_bytes(b"")
    code, err = run_cli(*train_argv(out, dataset=TINY))
    assert code == 0, err
    assert not stale.exists() and not other.exists() and "interrupted earlier" in err


# ------------------------------------------------------------------ report figures and tables


def test_report_folders_on_a_full_disk_fail_before_drawing(small_fs):
    from pepr.errors import PeprInputError
    from pepr.report.build import write_figures, write_tables

    fill(small_fs, leave_bytes=2**20)
    for write, flag in ((write_figures, "figures folder"), (write_tables, "tables folder")):
        with pytest.raises(PeprInputError, match=f"{flag} {small_fs / 'out'}: only .* free"):
            write(None, small_fs / "out")  # data is never touched: the check comes first


def test_a_figure_write_failing_leaves_no_partial_file_and_one_line(tmp_path, monkeypatch, capsys):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.figure

    from pepr.report import figures
    from pepr.results.outputs import one_line_errors

    fig = matplotlib.figure.Figure()
    fig.add_subplot().plot([0, 1])
    (tmp_path / "f.png").write_bytes(b"old figure")

    def full(self, path, *args, **kwargs):
        Path(path).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", full)
    with pytest.raises(SystemExit) as stopped:
        with one_line_errors("report_figures"):
            figures.save(fig, tmp_path / "f", ["png"])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("pepr report_figures: error: cannot write ") and "No space left" in err and err.count("\n") == 1
    )
    assert (
        sorted(p.name for p in tmp_path.iterdir()) == ["f.png"] and (tmp_path / "f.png").read_bytes() == b"old figure"
    )
