"""Statistics of the report: paired and unpaired tests, confidence intervals, rank bootstrap,
Pareto fronts and the per-epoch PePR curve.

Tests never invent a p-value: when there are too few observations the result carries
``p = NaN`` and a ``note`` saying why ("n too small for a test", "all pairs equal").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from pepr.scoring import score


@dataclass(frozen=True)
class TestResult:
    """Outcome of one statistical test; ``p`` is NaN when no test was run (see ``note``)."""

    test: str
    n: int
    statistic: float
    p: float
    note: str

    @property
    def tested(self) -> bool:
        """Whether a test was actually run."""
        return not np.isnan(self.p)


def format_p(p: float) -> str:
    """``p = 0.012`` style text; ``p < 0.001`` below a thousandth (computed, not asserted)."""
    if np.isnan(p):
        return "no test"
    if p < 0.001:
        return f"p = {p:.1e}"
    return f"p = {p:.3f}"


def describe(result: TestResult) -> str:
    """One-phrase description of a test result for captions and the summary."""
    if not result.tested:
        return f"{result.note} (n = {result.n})"
    return f"{result.test}, n = {result.n}, {format_p(result.p)}"


def paired_test(a: np.ndarray, b: np.ndarray, min_pairs: int) -> TestResult:
    """Two-sided Wilcoxon signed-rank test of paired samples ``a`` and ``b``.

    Pairs with a missing value are dropped first. Fewer than ``min_pairs`` pairs, or pairs
    that are all equal, give no test.
    """
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    keep = ~(np.isnan(a) | np.isnan(b))
    a, b = a[keep], b[keep]
    n = int(len(a))
    if n < min_pairs:
        return TestResult("Wilcoxon signed-rank", n, np.nan, np.nan, f"n too small for a test (need {min_pairs} pairs)")
    if np.all(a == b):
        return TestResult("Wilcoxon signed-rank", n, np.nan, np.nan, "all pairs equal: no test")
    result = stats.wilcoxon(a, b, alternative="two-sided")
    return TestResult("Wilcoxon signed-rank", n, float(result.statistic), float(result.pvalue), "")


def unpaired_test(a: np.ndarray, b: np.ndarray, min_group: int) -> TestResult:
    """Two-sided Mann-Whitney U test of two independent samples (NaNs dropped)."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    a, b = a[~np.isnan(a)], b[~np.isnan(b)]
    n = int(len(a) + len(b))
    if min(len(a), len(b)) < min_group:
        return TestResult(
            "Mann-Whitney U", n, np.nan, np.nan, f"n too small for a test (need {min_group} per group, have {len(a)} and {len(b)})"
        )
    if np.ptp(np.concatenate([a, b])) == 0:
        return TestResult("Mann-Whitney U", n, np.nan, np.nan, "all values equal: no test")
    result = stats.mannwhitneyu(a, b, alternative="two-sided")
    return TestResult("Mann-Whitney U", n, float(result.statistic), float(result.pvalue), "")


def mean_ci(values: np.ndarray, alpha: float) -> tuple[float, float, float]:
    """Mean and Student-t (1 - alpha) confidence interval; CI is NaN for fewer than 2 values."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return np.nan, np.nan, np.nan
    mean = float(values.mean())
    if len(values) < 2:
        return mean, np.nan, np.nan
    half = float(stats.t.ppf(1 - alpha / 2, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values)))
    return mean, mean - half, mean + half


def bootstrap_rank_ci(
    values: dict[str, np.ndarray], resamples: int, alpha: float, seed: int
) -> pd.DataFrame:
    """Bootstrap (1 - alpha) intervals of each model's rank by mean score (rank 1 = best).

    Each resample draws every model's seeds with replacement, averages them and ranks the
    models (ties share the best rank). Returns model, observed rank, rank_low, rank_high.
    """
    models = list(values)
    rng = np.random.default_rng(seed)
    means = np.empty((resamples, len(models)))
    for j, model in enumerate(models):
        sample = np.asarray(values[model], dtype=float)
        draws = rng.integers(0, len(sample), size=(resamples, len(sample)))
        means[:, j] = sample[draws].mean(axis=1)
    ranks = stats.rankdata(-means, axis=1, method="min")
    observed = stats.rankdata(-np.array([np.mean(values[m]) for m in models]), method="min")
    return pd.DataFrame(
        {
            "model": models,
            "rank": observed.astype(int),
            "rank_low": np.percentile(ranks, 100 * alpha / 2, axis=0, method="lower").astype(int),
            "rank_high": np.percentile(ranks, 100 * (1 - alpha / 2), axis=0, method="higher").astype(int),
        }
    )


def top_k_separable(rank_ci: pd.DataFrame, k: int) -> bool | None:
    """Whether the observed top-k models are separated from the rest by their rank intervals.

    True when every top-k model's interval stays within ranks 1..k and every other model's
    interval lies beyond k. None when there are no more than k models (nothing to separate).
    """
    if len(rank_ci) <= k:
        return None
    ordered = rank_ci.sort_values(["rank", "model"])
    top, rest = ordered.iloc[:k], ordered.iloc[k:]
    return bool((top["rank_high"] <= k).all() and (rest["rank_low"] > k).all())


def pareto_front(performance: np.ndarray, resource: np.ndarray) -> np.ndarray:
    """Boolean mask of the Pareto-optimal points: no other point has at least the performance
    at no more resource, with one of the two strictly better."""
    performance = np.asarray(performance, dtype=float)
    resource = np.asarray(resource, dtype=float)
    mask = np.ones(len(performance), dtype=bool)
    for i in range(len(performance)):
        dominated = (performance >= performance[i]) & (resource <= resource[i]) & (
            (performance > performance[i]) | (resource < resource[i])
        )
        mask[i] = not dominated.any()
    return mask


def epoch_curves(history: pd.DataFrame, performance: str, resource: str, cell: list[str]) -> pd.DataFrame:
    """PePR of every (run, epoch) as if training had stopped there.

    At epoch e, P is the run's ``performance`` at e and R its cumulative ``resource`` up to e,
    min-max normalised over all runs *and* epochs of the cell; the score is P / (1 + R).
    Adds ``epoch_norm`` and ``epoch_pepr``.
    """
    curves = score(history, performance=performance, resources=[resource], by=cell)
    return curves.rename(columns={f"{resource}_norm": "epoch_norm", f"pepr_{resource}": "epoch_pepr"})


def peak_epochs(curves: pd.DataFrame, run: list[str], performance: str, resource: str) -> pd.DataFrame:
    """Per run: the epoch of highest epoch PePR (earliest on ties), and what stopping there
    would have saved versus the last epoch (resource) and cost (performance)."""
    rows = []
    for key, group in curves.sort_values("epoch").groupby(run, sort=False):
        best = group.loc[group["epoch_pepr"].idxmax()]
        last = group.iloc[-1]
        rows.append(
            {
                **dict(zip(run, key)),
                "peak_epoch": int(best["epoch"]),
                "last_epoch": int(last["epoch"]),
                "peak_pepr": float(best["epoch_pepr"]),
                "last_pepr": float(last["epoch_pepr"]),
                "performance_at_peak": float(best[performance]),
                "performance_at_last": float(last[performance]),
                "resource_at_peak": float(best[resource]),
                "resource_at_last": float(last[resource]),
                "resource_saved": float(last[resource] - best[resource]),
                "performance_cost": float(last[performance] - best[performance]),
            }
        )
    return pd.DataFrame(rows)
