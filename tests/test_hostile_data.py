"""Issue 19: data files are checked against limits from their headers, before anything is allocated.

The hostile files are a few hundred bytes: .npy headers that declare huge arrays with no data
behind them, or a real label array holding 10^12. Reading any of them for real would need
terabytes; the checks must answer instantly with one line naming the file and the limit.
"""

from __future__ import annotations

import io
import os
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest

from pepr.datasets import npzcheck
from pepr.datasets.core import dataset_problems, load_dataset, npz_problems
from pepr.errors import PeprInputError

SPLITS = ("train", "val", "test")


def header_only_npz(path: Path, images: tuple[int, ...], rows: int | None = None) -> Path:
    """An npz whose .npy members are headers only (no data): shapes as declared."""
    rows = images[0] if rows is None else rows
    with zipfile.ZipFile(path, "w") as archive:
        for split in SPLITS:
            for name, shape, descr in ((f"{split}_images", images, "|u1"), (f"{split}_labels", (rows, 1), "<i8")):
                buffer = io.BytesIO()
                np.lib.format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": False, "shape": shape})
                archive.writestr(f"{name}.npy", buffer.getvalue())
    return path


def real_npz(path: Path, labels_train: np.ndarray) -> Path:
    n = len(labels_train)
    arrays = {}
    for split in SPLITS:
        arrays[f"{split}_images"] = np.zeros((n, 8, 8), np.uint8)
        arrays[f"{split}_labels"] = labels_train.reshape(-1, 1)
    np.savez(path, **arrays)
    return path


def finishes_quickly(function, *args, seconds: float = 20.0):
    """Run ``function`` in a thread; fail (instead of hanging the suite) when it does not return."""
    result: dict = {}

    def target():
        try:
            result["value"] = function(*args)
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            result["error"] = exc

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"{function.__name__} did not return within {seconds} s (it hangs)"
    if "error" in result:
        raise result["error"]
    return result["value"]


def test_huge_images_declared_in_the_header(tmp_path):
    path = header_only_npz(tmp_path / "huge.npz", (10, 40000, 40000))
    problems = finishes_quickly(npz_problems, path)
    assert len(problems) >= 1 and all("40000x40000" in p and f"{npzcheck.MAX_IMAGE_SIDE} px" in p for p in problems)
    assert str(path) in problems[0]


def test_rows_declared_beyond_the_limit(tmp_path):
    path = header_only_npz(tmp_path / "rows.npz", (10**11, 28, 28))
    problems = finishes_quickly(npz_problems, path)
    assert any("100,000,000,000 rows" in p for p in problems), problems


def test_a_label_of_ten_to_the_twelve(tmp_path):
    labels = np.array([0, 1, 0, 10**12], dtype=np.int64)
    path = real_npz(tmp_path / "label.npz", labels)
    problems = finishes_quickly(npz_problems, path)
    assert problems == [
        f"{path}: a label is 1,000,000,000,000; labels are class indices 0..K-1 with K at most {npzcheck.MAX_CLASSES:,} (renumber the classes)"
    ]


def test_an_npz_path_that_is_a_fifo_is_refused_without_hanging(tmp_path):
    fifo = tmp_path / "data.npz"
    os.mkfifo(fifo)
    problems = finishes_quickly(dataset_problems, f"npz:{fifo}", None)
    assert len(problems) == 1 and "is a FIFO (named pipe), not a regular file" in problems[0]
    with pytest.raises(PeprInputError, match="FIFO"):
        finishes_quickly(load_dataset, f"npz:{fifo}")


def test_an_npz_path_that_is_a_directory_or_device(tmp_path):
    folder = tmp_path / "folder.npz"
    folder.mkdir()
    assert "is a directory" in dataset_problems(f"npz:{folder}", None)[0]
    assert "is a device" in npz_problems(Path("/dev/zero"))[0]


def test_memory_check_before_reading(tmp_path, monkeypatch):
    path = real_npz(tmp_path / "ok.npz", np.array([0, 1, 0, 1]))
    monkeypatch.setattr(npzcheck, "available_memory_bytes", lambda: 100)
    with pytest.raises(PeprInputError, match="needs .* of memory, this machine has"):
        load_dataset(f"npz:{path}")
    monkeypatch.undo()
    assert load_dataset(f"npz:{path}").num_classes == 2


def test_init_checkpoint_that_is_a_directory(tmp_path):
    from pepr.train.checks import training_problems

    problems = training_problems(
        {"model": "resnet18", "dataset": "synthetic", "init": f"checkpoint:{tmp_path}"}, check_data=False
    )
    assert any("is a directory" in p and "not found" not in p for p in problems), problems


# ------------------------------------------------------------------ carbon-intensity series


def _series_text(start_hour: int = 12, hours: int = 3, day: str = "2024-03-01") -> str:
    rows = [f"{day}T{h:02d}:00:00Z,{100 + h}" for h in range(start_hour, start_hour + hours)]
    return "timestamp,gco2_per_kwh\n" + "\n".join(rows) + "\n"


def test_carbon_series_with_a_utf8_bom_is_read(tmp_path):
    from pepr.train.measure import read_carbon_intensity

    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbf" + _series_text().encode())
    assert read_carbon_intensity(path).values == (112.0, 113.0, 114.0)


def test_carbon_series_error_never_prints_the_files_first_line(tmp_path):
    from pepr.train.measure import read_carbon_intensity

    secret = tmp_path / "id_rsa"
    secret.write_text("-----BEGIN OPENSSH PRIVATE KEY----- s3cr3t\nmore\n")
    with pytest.raises(PeprInputError) as caught:
        read_carbon_intensity(secret)
    message = str(caught.value)
    assert "s3cr3t" not in message and "BEGIN" not in message and str(secret) in message and "\n" not in message


def test_carbon_series_message_has_no_doubled_series_word(tmp_path):
    from pepr.train.measure import read_carbon_intensity

    path = tmp_path / "s.csv"
    path.write_text(_series_text())
    series = read_carbon_intensity(path)
    with pytest.raises(PeprInputError) as caught:
        series.at(series.times[-1] + 10 * 3600)
    assert "series series" not in str(caught.value) and str(path) in str(caught.value)


def test_carbon_series_fifo_is_refused(tmp_path):
    from pepr.train.measure import read_carbon_intensity

    fifo = tmp_path / "ci.csv"
    os.mkfifo(fifo)
    with pytest.raises(PeprInputError, match="FIFO"):
        finishes_quickly(read_carbon_intensity, fifo)


def test_carbon_series_ending_before_a_job_time_limit_is_a_planning_problem(tmp_path):
    import time
    from datetime import datetime, timezone

    from pepr.plan.prepare import _carbon_span_problems

    now = datetime.fromtimestamp(time.time(), tz=timezone.utc).replace(minute=0, second=0, microsecond=0)
    rows = [
        f"{datetime.fromtimestamp(now.timestamp() + i * 900, tz=timezone.utc).isoformat()},100" for i in range(0, 6)
    ]
    path = tmp_path / "short.csv"
    path.write_text("timestamp,gco2_per_kwh\n" + "\n".join(rows) + "\n")  # covers the next ~1.5 h
    config = {"carbon_intensity": str(path), "resources": {"train": {"runtime": 600}}}
    problems = _carbon_span_problems(config)
    assert (
        len(problems) == 1 and "resources.train.runtime = 600 min" in problems[0] and "extend the series" in problems[0]
    )
    config["resources"]["train"]["runtime"] = 30
    assert _carbon_span_problems(config) == []
