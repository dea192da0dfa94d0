"""Intervals on performance and PePR, and which models cannot be told apart from the best.

Per group (one PePR normalisation group), one method gives every model a (1 - alpha) interval
for its performance and for each PePR variant, and decides whether two models differ:

``paired bootstrap``
    Every successful run of the group has ``test_predictions.npz`` with the same test labels
    (the workflow since predictions are saved) and the performance is accuracy or balanced
    accuracy. The test images are resampled with replacement (``bootstrap_resamples`` times,
    the same resample for every model: paired); a model's performance on a resample comes from
    its per-image correctness (averaged over its seeds), and its PePR on the resample is its
    PePR scaled by the same factor as its performance (the resource, a measurement, is not
    resampled). Intervals are percentile intervals; two models differ when the percentile
    interval of their PePR difference excludes 0.
``seeds``
    Every model of the group has two or more seeds: Student-t intervals of the seed mean, and
    Welch's t interval of the difference of two models' means.
``binomial``
    One run per model and a test-set size (``n_test``): Wilson's interval for the performance
    as a proportion of ``n_test`` images, the PePR interval the performance interval divided by
    (1 + R); two models differ when the normal interval of the PePR difference (independent
    errors: conservative, as errors on the same images are positively correlated) excludes 0.
``unknown``
    None of these: no interval, and the report says so.

The recommended model is then the cheapest (smallest headline resource) of the best-PePR model
and its *contenders*, the models not distinguishable from it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from pepr.results.predictions import PER_IMAGE_METRICS, Predictions, performance_per_image

__all__ = [
    "BOOTSTRAP",
    "SEEDS",
    "BINOMIAL",
    "UNKNOWN",
    "GroupUncertainty",
    "group_uncertainty",
    "bootstrap_weights",
    "resampled_performance",
    "paired_difference_interval",
    "wilson",
]

BOOTSTRAP, SEEDS, BINOMIAL, UNKNOWN = "paired bootstrap", "seeds", "binomial", "unknown"


def wilson(p: np.ndarray, n: np.ndarray, z: float) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of proportions ``p`` of ``n`` trials (vectorised)."""
    p, n = np.asarray(p, dtype=float), np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        denom = 1 + z**2 / n
        centre = (p + z**2 / (2 * n)) / denom
        half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / denom
    return np.clip(centre - half, 0, 1), np.clip(centre + half, 0, 1)


def bootstrap_weights(n: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(resamples, n) counts: how often each test image is drawn in each resample."""
    return rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(np.float64)


def resampled_performance(correct: np.ndarray, labels: np.ndarray, metric: str, weights: np.ndarray) -> np.ndarray:
    """(models, resamples) performance on each resample from per-image ``correct`` (models, n)
    and the shared ``labels`` (n,): accuracy, or balanced accuracy (mean per-class recall; a
    class absent from a resample is left out of its mean)."""
    if metric == "test_accuracy":
        return correct @ weights.T / weights.sum(axis=1)
    recalls, present = [], []
    for cls in np.unique(labels):
        mask = (labels == cls).astype(np.float64)
        total = weights @ mask  # (resamples,)
        with np.errstate(invalid="ignore", divide="ignore"):
            recalls.append((correct * mask) @ weights.T / total)
        present.append(total > 0)
    recall = np.stack(recalls)  # (classes, models, resamples)
    counted = np.stack(present)[:, None, :]
    return np.where(counted, recall, 0).sum(axis=0) / counted.sum(axis=0)


def paired_difference_interval(draws_a: np.ndarray, draws_b: np.ndarray, alpha: float) -> tuple[float, float]:
    """Percentile interval of ``a - b`` over paired bootstrap draws."""
    low, high = np.quantile(draws_a - draws_b, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


@dataclass
class GroupUncertainty:
    """One group's intervals (per model, in ``models`` order) and how two models are compared.

    ``method``: one of :data:`BOOTSTRAP`, :data:`SEEDS`, :data:`BINOMIAL`, :data:`UNKNOWN`;
    ``detail``: the method in words (e.g. "paired bootstrap over 624 test images, 2000 resamples").
    """

    method: str
    detail: str
    models: list[str]
    performance: np.ndarray
    performance_ci: np.ndarray  # (M, 2), NaN when unknown
    pepr: dict[str, np.ndarray]
    pepr_ci: dict[str, np.ndarray]
    alpha: float
    _differ: Callable[[str, int, int], bool | None] = field(repr=False, default=lambda column, a, b: None)
    #: The performance of guessing (the majority-class rate for accuracy, 1/classes for
    #: balanced accuracy, 0.5 for AUC) and its (1 - alpha) interval over the test-set size;
    #: None when unknown (no test labels, or a metric without a known chance level).
    chance: tuple[float, float, float] | None = None

    def uninformative(self) -> bool:
        """Whether even the best model's performance lies within the interval of guessing."""
        return self.chance is not None and bool(np.nanmax(self.performance) <= self.chance[2])

    def distinguishable(self, column: str, a: int, b: int) -> bool | None:
        """Whether models ``a`` and ``b`` (indices) differ in ``column`` (a PePR column) at
        level alpha; None when the method cannot tell (unknown)."""
        return self._differ(column, a, b)

    def table(self, keys: Mapping[str, object]) -> pd.DataFrame:
        """Per model: the method, the performance and every PePR with their intervals."""
        rows = pd.DataFrame({"model": self.models})
        for name, value in keys.items():
            rows.insert(len(rows.columns) - 1, name, value)
        rows["interval_method"] = self.detail
        rows["performance"] = self.performance
        rows["performance_ci_low"], rows["performance_ci_high"] = self.performance_ci[:, 0], self.performance_ci[:, 1]
        for column, values in self.pepr.items():
            rows[column] = values
            rows[f"{column}_ci_low"], rows[f"{column}_ci_high"] = self.pepr_ci[column][:, 0], self.pepr_ci[column][:, 1]
        return rows


def chance_level(metric: str, labels: np.ndarray | None, classes: int | None) -> float | None:
    """What guessing scores in ``metric``: always the majority class for accuracy, 1/classes
    for balanced accuracy, 0.5 for AUC; None when not known."""
    if metric.endswith("auc"):
        return 0.5
    if metric.endswith("balanced_accuracy") and classes:
        return 1.0 / classes
    if metric.endswith("accuracy") and labels is not None and labels.ndim == 1 and len(labels):
        return float(np.bincount(labels.astype(np.int64)).max() / len(labels))
    return None


def _chance(
    metric: str, labels: np.ndarray | None, classes: int | None, n: float | None, alpha: float
) -> tuple[float, float, float] | None:
    from scipy import stats as scipy_stats

    level = chance_level(metric, labels, classes)
    if level is None or not n or not np.isfinite(n):
        return None
    low, high = wilson(np.array([level]), np.array([n]), float(scipy_stats.norm.ppf(1 - alpha / 2)))
    return level, float(low[0]), float(high[0])


def _paired_inputs(
    runs: pd.DataFrame, models: list[str], metric: str, predictions: Mapping[object, Predictions]
) -> tuple[np.ndarray, np.ndarray] | None:
    """(per-image correctness averaged over each model's seeds (M, n), labels) when every run
    has predictions on the same test labels; else None."""
    if metric not in PER_IMAGE_METRICS:
        return None
    labels, rows = None, []
    for model in models:
        seeds = []
        for index in runs.index[runs["model"] == model]:
            pred = predictions.get(index)
            per_image = performance_per_image(pred, metric) if pred is not None else None
            if per_image is None:
                return None
            correct, run_labels = per_image
            if labels is None:
                labels = run_labels
            elif run_labels.shape != labels.shape or not np.array_equal(run_labels, labels):
                return None
            seeds.append(correct)
        rows.append(np.mean(seeds, axis=0))
    if labels is None or len(labels) == 0:
        return None
    return np.stack(rows), labels


def group_uncertainty(
    runs: pd.DataFrame,
    performance: str,
    pepr_columns: Sequence[str],
    cfg_alpha: float,
    resamples: int,
    seed: int,
    predictions: Mapping[object, Predictions] | None = None,
    n_test: str | None = None,
) -> GroupUncertainty:
    """The intervals of one group's successful ``runs`` (columns model, ``performance``, the
    ``pepr_columns``; ``n_test`` a test-set size column or None), by the first method that
    applies (see the module docstring); ``predictions``: run index -> its test predictions."""
    grouped = runs.groupby("model", sort=True)
    models = list(grouped.groups)
    means = grouped[[performance, *pepr_columns]].mean()
    perf = means[performance].to_numpy(dtype=float)
    pepr = {c: means[c].to_numpy(dtype=float) for c in pepr_columns}
    alpha = cfg_alpha
    nan = np.full((len(models), 2), np.nan)

    labels_seen = next((p for p in (predictions or {}).values() if not p.multi_label), None)
    sizes_column = pd.to_numeric(runs[n_test], errors="coerce") if n_test and n_test in runs.columns else None
    size = (
        len(labels_seen.labels)
        if labels_seen is not None
        else (float(sizes_column.min()) if sizes_column is not None and sizes_column.notna().any() else None)
    )
    chance = _chance(
        performance,
        labels_seen.labels if labels_seen is not None else None,
        labels_seen.probabilities.shape[1] if labels_seen is not None else None,
        size,
        alpha,
    )
    paired = _paired_inputs(runs, models, performance, predictions) if predictions else None
    if paired is not None:
        correct, labels = paired
        rng = np.random.default_rng(seed)
        weights = bootstrap_weights(len(labels), resamples, rng)
        perf_draws = resampled_performance(correct, labels, performance, weights)
        # the PePR of a resample: the model's PePR scaled as its performance is (R is not resampled)
        point = resampled_performance(correct, labels, performance, np.ones((1, len(labels))))[:, 0]
        with np.errstate(invalid="ignore", divide="ignore"):
            scale = np.where(point[:, None] > 0, perf_draws / point[:, None], 1.0)
        pepr_draws = {c: pepr[c][:, None] * scale for c in pepr_columns}
        q = [alpha / 2, 1 - alpha / 2]

        def differ(column: str, a: int, b: int) -> bool:
            low, high = paired_difference_interval(pepr_draws[column][a], pepr_draws[column][b], alpha)
            return bool(not (low <= 0 <= high))

        return GroupUncertainty(
            BOOTSTRAP,
            f"paired bootstrap over {len(labels)} test images, {resamples} resamples",
            models,
            perf,
            np.quantile(perf_draws, q, axis=1).T * (perf / np.where(point > 0, point, 1))[:, None],
            pepr,
            {c: np.quantile(d, q, axis=1).T for c, d in pepr_draws.items()},
            alpha,
            differ,
            chance,
        )

    from scipy import stats as scipy_stats

    counts = grouped.size().to_numpy()
    if len(models) and counts.min() >= 2:
        columns = [performance, *pepr_columns]
        mean, var = means[columns], grouped[columns].var(ddof=1)
        n = counts.astype(float)
        half_t = scipy_stats.t.ppf(1 - alpha / 2, n - 1)

        def t_interval(column: str) -> np.ndarray:
            half = half_t * np.sqrt(var[column].to_numpy(dtype=float) / n)
            centre = mean[column].to_numpy(dtype=float)
            return np.column_stack([centre - half, centre + half])

        mean_of = {c: mean[c].to_numpy(dtype=float) for c in columns}
        error_of = {c: var[c].to_numpy(dtype=float) / n for c in columns}  # squared standard errors

        def differ(column: str, a: int, b: int) -> bool:
            ma, mb = mean_of[column][a], mean_of[column][b]
            ea, eb = error_of[column][a], error_of[column][b]
            if ea + eb == 0:
                return bool(ma != mb)
            dof = (ea + eb) ** 2 / (ea**2 / (n[a] - 1) + eb**2 / (n[b] - 1))
            return bool(abs(ma - mb) > scipy_stats.t.ppf(1 - alpha / 2, dof) * math.sqrt(ea + eb))

        return GroupUncertainty(
            SEEDS,
            f"seeds (Student t; {counts.min()}-{counts.max()} seeds per model)",
            models,
            perf,
            t_interval(performance),
            pepr,
            {c: t_interval(c) for c in pepr_columns},
            alpha,
            differ,
            chance,
        )

    sizes = pd.to_numeric(grouped[n_test].first(), errors="coerce").to_numpy(dtype=float) if n_test else None
    if sizes is not None and len(models) and np.all(sizes > 0):
        z = float(scipy_stats.norm.ppf(1 - alpha / 2))
        perf_ci = np.column_stack(wilson(perf, sizes, z))
        se = np.sqrt(np.clip(perf * (1 - perf), 0, None) / sizes)
        # PePR = P / (1 + R): its interval is the performance's, scaled by the run's 1 / (1 + R)
        with np.errstate(invalid="ignore", divide="ignore"):
            factor = {c: np.where(perf > 0, pepr[c] / perf, 0.0) for c in pepr_columns}

        def differ(column: str, a: int, b: int) -> bool:
            fa, fb = factor[column][a], factor[column][b]
            half = z * math.hypot(se[a] * fa, se[b] * fb)
            return bool(abs(pepr[column][a] - pepr[column][b]) > half)

        shown = f"{int(sizes.min())}" if sizes.min() == sizes.max() else f"{int(sizes.min())}-{int(sizes.max())}"
        return GroupUncertainty(
            BINOMIAL,
            f"binomial (Wilson) from {shown} test images",
            models,
            perf,
            perf_ci,
            pepr,
            {c: perf_ci * factor[c][:, None] for c in pepr_columns},
            alpha,
            differ,
            chance,
        )

    return GroupUncertainty(
        UNKNOWN,
        "unknown: one run per model, no test predictions and no test-set size",
        models,
        perf,
        nan,
        pepr,
        {c: nan.copy() for c in pepr_columns},
        alpha,
        chance=chance,
    )


def load_predictions(df: pd.DataFrame, runs_root: str | None) -> dict[object, Predictions]:
    """Test predictions of the successful runs of a workflow table (columns dataset, init,
    fraction, model, seed: the run folder under ``runs_root``), by row index; runs without a
    readable ``test_predictions.npz`` are left out. Empty when ``runs_root`` is None or the
    table lacks those columns."""
    from pathlib import Path

    from pepr.results import predictions as predictions_file
    from pepr.results.runs import PREDICTIONS_FILE, cell_key, format_fraction, run_folder

    needed = ["dataset", "init", "fraction", "model", "seed"]
    if runs_root is None or not set(needed) <= set(df.columns):
        return {}
    found = {}
    for index, row in df.loc[df["ok"], needed].iterrows():
        try:
            fraction = format_fraction(float(row["fraction"]))
            key = cell_key(str(row["dataset"]), str(row["init"]), fraction, str(row["model"]), int(row["seed"]))
        except (TypeError, ValueError):
            continue
        pred = predictions_file.read(Path(run_folder(key, str(runs_root))) / PREDICTIONS_FILE)
        if pred is not None:
            found[index] = pred
    return found


def group_uncertainties(
    df: pd.DataFrame,
    group: Sequence[str],
    performance: str,
    pepr_columns: Sequence[str],
    alpha: float,
    resamples: int,
    seed: int,
    predictions: Mapping[object, Predictions],
    n_test: str | None,
) -> dict[tuple, GroupUncertainty]:
    """:func:`group_uncertainty` of every group of the successful runs of ``df``, by group key."""
    ok = df[df["ok"]]
    out = {}
    for index, (key, runs) in enumerate(ok.groupby(list(group), sort=False)):
        key = key if isinstance(key, tuple) else (key,)
        mine = {i: predictions[i] for i in runs.index if i in predictions}
        out[key] = group_uncertainty(runs, performance, pepr_columns, alpha, resamples, seed + index, mine, n_test)
    return out
