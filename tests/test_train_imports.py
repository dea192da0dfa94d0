"""The training process imports what training needs, once: the import budget (checked in a fresh
process), the timm import without torchvision's model zoo, and the numpy rank AUC that replaced
scipy's."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from pepr.train.metrics import average_ranks, classification_metrics, multilabel_metrics


@pytest.mark.parametrize("seed", range(5))
def test_average_ranks_equal_scipy_rankdata_with_ties(seed):
    from scipy.stats import rankdata

    rng = np.random.default_rng(seed)
    values = rng.integers(0, 6, size=40).astype(float) / 5  # many ties
    np.testing.assert_array_equal(average_ranks(values), rankdata(values))
    values = rng.random(33)
    np.testing.assert_array_equal(average_ranks(values), rankdata(values))
    assert average_ranks(np.array([])).shape == (0,)
    assert np.isnan(average_ranks(np.array([0.1, np.nan, 0.3]))).all()  # rankdata's nan_policy="propagate"


def test_auc_from_ranks_matches_pair_counting():
    # AUC = P(score of a positive > score of a negative) + 0.5 P(tie), counted pair by pair
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, size=60)
    p1 = np.round(rng.random(60), 1)  # ties between positives and negatives
    probs = np.stack([1 - p1, p1], axis=1)
    pos, neg = p1[y == 1], p1[y == 0]
    pairs = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
    assert classification_metrics(y, probs)["auc"] == pytest.approx(pairs)
    labels = np.stack([y, 1 - y], axis=1)
    scores = np.stack([p1, 1 - p1], axis=1)
    assert multilabel_metrics(labels, scores)["auc"] == pytest.approx(pairs)


def test_pepr_train_help_imports_nothing_heavy():
    code = (
        "import sys\nfrom pepr.cli import main\n"
        "try:\n    main(['train', '--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = ['torch', 'numpy', 'pandas', 'timm', 'codecarbon', 'scipy', 'pepr.train.run']\n"
        "print(sorted(name for name in heavy if name in sys.modules), file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip().splitlines()[-1] == "[]"


_TIMM_PROBE = r"""
import json, sys
from pepr.train.imports import import_timm
timm = import_timm()
after_timm = {name: name in sys.modules for name in ("torchvision", "torchvision.models")}
model = timm.create_model("resnet18", num_classes=2, in_chans=1)
import timm.layers._fx as fx
import torchvision, torchvision.models  # a later full import still works
print(json.dumps({"after_timm": after_timm, "fx": fx.has_fx_feature_extraction, "tv_models": hasattr(torchvision.models, "resnet18")}))
"""


@pytest.mark.slow
def test_timm_is_imported_without_torchvision_models_and_torchvision_still_imports_fully():
    result = subprocess.run(
        [sys.executable, "-c", _TIMM_PROBE], capture_output=True, text=True, check=False, timeout=600
    )
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout.strip().splitlines()[-1])
    # if this fails after a timm upgrade, timm needs more of torchvision at import: import_timm
    # fell back to the full import; see pepr.train.imports
    assert found["after_timm"] == {"torchvision": False, "torchvision.models": False}, found
    assert found["fx"] is False  # timm's own answer to a missing torchvision.models
    assert found["tv_models"] is True


_BUDGET_PROBE = r"""
import json, sys
from pathlib import Path
from pepr.cli import main
status = main(["train", "--model", "mobilenetv3_small_050", "--dataset", "synthetic:size=28,n_train=64,n_val=16,n_test=16",
               "--epochs", "1", "--threads", "1", "--out", sys.argv[1]])
print(json.dumps({"status": status, "modules": sorted(sys.modules)}))
"""


@pytest.mark.slow
def test_training_path_import_budget(tmp_path):
    # a fresh process, as one cell runs; PEPR_WARM=0: the cold path, in this process
    env = {**__import__("os").environ, "PEPR_WARM": "0"}
    result = subprocess.run(
        [sys.executable, "-c", _BUDGET_PROBE, str(tmp_path / "run")],
        capture_output=True,
        text=True,
        check=False,
        timeout=1200,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["status"] == 0, result.stderr
    modules = set(found["modules"])
    assert "torchvision.models" not in modules  # timm's FX helper: pepr.train.imports.import_timm
    assert not any(name == "scipy" or name.startswith("scipy.") for name in modules)  # rank AUC in numpy
    assert "sklearn" not in modules and "matplotlib" not in modules
    # torch._dynamo is imported (torch.optim.Optimizer.step needs it), before the measured
    # windows: tests/test_measure.py::test_no_one_off_imports_inside_the_measured_windows
