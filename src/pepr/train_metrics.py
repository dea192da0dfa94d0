"""Classification metrics of one split: accuracy, balanced accuracy, macro AUC and macro F1.

numpy/scipy only (no torch), so scoring code and tests can use them without the training stack.
"""

from __future__ import annotations

import numpy as np


def import_dependencies() -> None:
    """Import what :func:`classification_metrics` imports lazily (``scipy.stats``).

    The training calls this before its measured windows open, so the first evaluation of epoch 1
    does not pay a one-off import (time, energy and memory) that later epochs do not.
    """
    import scipy.stats  # noqa: F401


def classification_metrics(y_true: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """Accuracy, balanced accuracy, macro one-vs-rest AUC and macro F1 of class probabilities.

    Balanced accuracy averages the recall of the classes present in ``y_true``; AUC averages the
    one-vs-rest AUCs of classes with both positives and negatives in ``y_true`` (binary: the AUC
    of class 1), computed from ranks with ties averaged; F1 is the macro mean over all classes,
    0 for a class never predicted nor present.
    """
    from scipy.stats import rankdata

    y_true = np.asarray(y_true).reshape(-1)
    probs = np.asarray(probs, dtype=np.float64)
    n_classes = probs.shape[1]
    predicted = probs.argmax(axis=1)
    accuracy = float(np.mean(predicted == y_true))
    recalls, f1s, aucs = [], [], []
    for cls in range(n_classes):
        positive = y_true == cls
        predicted_positive = predicted == cls
        true_positive = np.sum(positive & predicted_positive)
        if positive.any():
            recalls.append(true_positive / positive.sum())
        denominator = positive.sum() + predicted_positive.sum()
        f1s.append(2 * true_positive / denominator if denominator else 0.0)
    auc_classes = [1] if n_classes == 2 else range(n_classes)
    for cls in auc_classes:
        positive = y_true == cls
        n_pos, n_neg = int(positive.sum()), int((~positive).sum())
        if n_pos == 0 or n_neg == 0:
            continue
        ranks = rankdata(probs[:, cls])
        aucs.append((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
    return {
        "accuracy": accuracy,
        "balanced_accuracy": float(np.mean(recalls)) if recalls else float("nan"),
        "auc": float(np.mean(aucs)) if aucs else float("nan"),
        "f1": float(np.mean(f1s)),
    }
