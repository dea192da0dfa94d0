"""Classification metrics of one split: accuracy, balanced accuracy, macro AUC and macro F1
(single-label: :func:`classification_metrics`; multi-label: :func:`multilabel_metrics`).

numpy only (no torch, no scipy: the training process does not pay scipy's import for one rank
function), so scoring code and tests can use them without the training stack.
"""

from __future__ import annotations

import numpy as np


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of ``values`` with ties given their average rank (``scipy.stats.rankdata``'s
    default method); all NaN when any value is NaN (rankdata's ``nan_policy="propagate"``)."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    n = values.shape[0]
    if n == 0:
        return np.empty(0, dtype=np.float64)
    if np.isnan(values).any():
        return np.full(n, np.nan)
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    starts_group = np.empty(n, dtype=bool)
    starts_group[0] = True
    starts_group[1:] = ordered[1:] != ordered[:-1]
    starts = np.flatnonzero(starts_group)
    ends = np.append(starts[1:], n)  # positions starts..ends-1 hold ranks starts+1..ends
    group = np.cumsum(starts_group) - 1
    ranks = np.empty(n, dtype=np.float64)
    ranks[order] = ((starts + 1 + ends) / 2.0)[group]
    return ranks


def classification_metrics(y_true: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """Accuracy, balanced accuracy, macro one-vs-rest AUC and macro F1 of class probabilities.

    Balanced accuracy averages the recall of the classes present in ``y_true``; AUC averages the
    one-vs-rest AUCs of classes with both positives and negatives in ``y_true`` (binary: the AUC
    of class 1), computed from ranks with ties averaged; F1 is the macro mean over all classes,
    0 for a class never predicted nor present.
    """
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
        ranks = average_ranks(probs[:, cls])
        aucs.append((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
    return {
        "accuracy": accuracy,
        "balanced_accuracy": float(np.mean(recalls)) if recalls else float("nan"),
        "auc": float(np.mean(aucs)) if aucs else float("nan"),
        "f1": float(np.mean(f1s)),
    }


def _binary_auc(y: np.ndarray, score: np.ndarray) -> float | None:
    """Rank AUC of one binary problem (ties averaged); None without both classes."""
    positive = y.astype(bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = average_ranks(score)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def multilabel_metrics(y_true: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Metrics of a multi-label task as MedMNIST reports them, plus macro F1 and balanced accuracy.

    ``y_true`` (N, L) 0/1, ``scores`` (N, L) sigmoid outputs. ``auc``: mean over labels of each
    label's AUC (labels with both values present); ``accuracy``: mean over labels of the
    per-label accuracy at ``threshold`` (MedMNIST's ``getACC`` for multi-label);
    ``balanced_accuracy``: mean over labels of (sensitivity + specificity) / 2 at the threshold
    (of the values present); ``f1``: macro mean over labels of F1 at the threshold (0 for a label
    never predicted nor present).
    """
    y_true = np.asarray(y_true).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    predicted = scores > threshold
    accuracy = float(np.mean(predicted == y_true))
    aucs, balanced, f1s = [], [], []
    for label in range(y_true.shape[1]):
        truth, guess = y_true[:, label], predicted[:, label]
        auc = _binary_auc(truth, scores[:, label])
        if auc is not None:
            aucs.append(auc)
        rates = []
        if truth.any():
            rates.append(np.sum(truth & guess) / truth.sum())
        if (~truth).any():
            rates.append(np.sum(~truth & ~guess) / (~truth).sum())
        balanced.append(float(np.mean(rates)))
        denominator = truth.sum() + guess.sum()
        f1s.append(2 * np.sum(truth & guess) / denominator if denominator else 0.0)
    return {
        "accuracy": accuracy,
        "balanced_accuracy": float(np.mean(balanced)),
        "auc": float(np.mean(aucs)) if aucs else float("nan"),
        "f1": float(np.mean(f1s)),
    }
