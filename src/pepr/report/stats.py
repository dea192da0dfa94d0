"""Statistics of the report: paired and unpaired t tests with confidence intervals, Holm
correction, TOST equivalence tests, rank bootstrap, Pareto fronts and the per-epoch PePR curve.

The unit of every comparison is one value per model (its seed mean) within one context, so a
model's seeds are never counted as independent pairs (no pseudo-replication). Tests over several
cells are Holm-corrected (:func:`holm`). "On par" is decided by an equivalence test (TOST) with
a margin, never by a non-significant difference (:func:`verdict`).

Tests never invent a p-value: when there are too few observations the result carries
``p = NaN`` and a ``note`` saying why ("n too small for a test", "all pairs equal").
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from pepr.results.scoring import score


def format_p(p: float) -> str:
    """``p = 0.012`` style text; ``p < 0.001`` below a thousandth (computed, not asserted)."""
    if np.isnan(p):
        return "no test"
    if p < 0.001:
        return f"p = {p:.1e}"
    return f"p = {p:.3f}"


@dataclass(frozen=True)
class Effect:
    """A difference with its (1 - alpha) t confidence interval, test and equivalence test.

    ``estimate`` is mean(a - b) for paired data, mean(a) - mean(b) for two groups. ``p`` is the
    two-sided t test of no difference; ``p_tost`` the TOST p-value of |difference| < margin
    (NaN when no margin was given). Both NaN, with ``note`` saying why, when no test was run.
    """

    test: str
    n: int
    estimate: float
    ci_low: float
    ci_high: float
    statistic: float
    p: float
    p_tost: float
    note: str

    @property
    def tested(self) -> bool:
        """Whether a test was actually run."""
        return not np.isnan(self.p)


def _no_test(test: str, n: int, estimate: float, note: str) -> Effect:
    return Effect(test, n, estimate, np.nan, np.nan, np.nan, np.nan, np.nan, note)


def paired_effect(a: np.ndarray, b: np.ndarray, alpha: float, min_pairs: int, margin: float | None = None) -> Effect:
    """Paired t test of ``a`` vs ``b`` (pairs with a NaN dropped): mean difference a - b, its
    Student-t (1 - alpha) CI, the two-sided p-value (``scipy.stats.ttest_rel``) and, when
    ``margin`` is given, the TOST p-value: the larger of the one-sided tests of
    mean(a - b) > -margin and mean(a - b) < +margin.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    keep = ~(np.isnan(a) | np.isnan(b))
    diff = a[keep] - b[keep]
    n = int(len(diff))
    estimate = float(diff.mean()) if n else np.nan
    test = "paired t"
    if n < min_pairs:
        return _no_test(test, n, estimate, f"n too small for a test (need {min_pairs} pairs)")
    if np.ptp(diff) == 0:
        # No spread: the t statistic is undefined (0/0 or x/0); claiming p = 0 would be invented.
        note = "all pairs equal: no test" if estimate == 0 else "identical difference in every pair: no test"
        return _no_test(test, n, estimate, note)
    result = stats.ttest_rel(a[keep], b[keep])
    ci = result.confidence_interval(1 - alpha)
    p_tost = np.nan
    if margin is not None:
        lower = stats.ttest_1samp(diff, -margin, alternative="greater").pvalue
        upper = stats.ttest_1samp(diff, margin, alternative="less").pvalue
        p_tost = float(max(lower, upper))
    return Effect(
        test, n, estimate, float(ci.low), float(ci.high), float(result.statistic), float(result.pvalue), p_tost, ""
    )


def welch_effect(a: np.ndarray, b: np.ndarray, alpha: float, min_group: int, margin: float | None = None) -> Effect:
    """Welch t test of two independent groups (NaNs dropped): mean(a) - mean(b), its Welch
    (1 - alpha) CI, the two-sided p-value (``scipy.stats.ttest_ind(equal_var=False)``) and,
    when ``margin`` is given, the TOST p-value from the two one-sided Welch tests of
    mean(a) - mean(b) > -margin and < +margin (shifting a group leaves its variance unchanged).
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    a, b = a[~np.isnan(a)], b[~np.isnan(b)]
    n = int(len(a) + len(b))
    estimate = float(a.mean() - b.mean()) if len(a) and len(b) else np.nan
    test = "Welch t"
    if min(len(a), len(b)) < min_group:
        return _no_test(
            test, n, estimate, f"n too small for a test (need {min_group} per group, have {len(a)} and {len(b)})"
        )
    if np.ptp(a) == 0 and np.ptp(b) == 0:
        return _no_test(test, n, estimate, "no spread within either group: no test")
    result = stats.ttest_ind(a, b, equal_var=False)
    ci = result.confidence_interval(1 - alpha)
    p_tost = np.nan
    if margin is not None:
        lower = stats.ttest_ind(a + margin, b, equal_var=False, alternative="greater").pvalue
        upper = stats.ttest_ind(a - margin, b, equal_var=False, alternative="less").pvalue
        p_tost = float(max(lower, upper))
    return Effect(
        test, n, estimate, float(ci.low), float(ci.high), float(result.statistic), float(result.pvalue), p_tost, ""
    )


def holm(p: np.ndarray) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values of one family of tests; NaN (no test) stays NaN and
    does not count towards the family's size.

    Sorted ascending, the i-th smallest of m p-values becomes max over j <= i of
    min(1, (m - j + 1) * p_(j)), so the adjusted values keep the order of the raw ones.
    """
    p = np.asarray(p, dtype=float)
    out = np.full(p.shape, np.nan)
    tested = np.flatnonzero(~np.isnan(p))
    m = len(tested)
    if m == 0:
        return out
    order = tested[np.argsort(p[tested], kind="stable")]
    adjusted = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(adjusted)
    return out


#: The three answers to "are the two the same, within the margin?".
EQUIVALENT, DIFFERENT, CANNOT_TELL = "equivalent", "different", "cannot tell"


def verdict(p_difference: float, p_tost: float, alpha: float) -> str:
    """Equivalent when TOST rejects a difference of at least the margin; different when the
    t test rejects no difference; "cannot tell" when neither (or no test was run).

    Equivalence comes first: a difference that is significant yet smaller than the margin is
    practically equivalent (the margin is the size the user called negligible). Pass the
    Holm-adjusted p-values when the test is one of a family.
    """
    if not np.isnan(p_tost) and p_tost < alpha:
        return EQUIVALENT
    if not np.isnan(p_difference) and p_difference < alpha:
        return DIFFERENT
    return CANNOT_TELL


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


def bootstrap_rank_ci(values: dict[str, np.ndarray], resamples: int, alpha: float, seed: int) -> pd.DataFrame:
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
        dominated = (
            (performance >= performance[i])
            & (resource <= resource[i])
            & ((performance > performance[i]) | (resource < resource[i]))
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


#: The answers to "are small models not worse than large ones by more than the margin?".
NOT_WORSE, WORSE = "not worse", "worse"


@dataclass(frozen=True)
class NonInferiority:
    """One-sided Welch tests of a - b against the margin: ``p_not_worse`` tests
    mean(a) - mean(b) > -margin (rejecting means a is not worse than b by the margin or more),
    ``p_worse`` tests mean(a) - mean(b) < -margin (a is worse by more than the margin). NaN
    (with ``note``) when no test was run."""

    p_not_worse: float
    p_worse: float
    note: str


def welch_noninferiority(a: np.ndarray, b: np.ndarray, margin: float, min_group: int) -> NonInferiority:
    """Non-inferiority of group ``a`` against ``b`` with ``margin`` (Welch, NaNs dropped):
    the lower one-sided test of the TOST pair and its mirror (``scipy.stats.ttest_ind`` with
    ``equal_var=False`` on ``a + margin`` vs ``b``)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    a, b = a[~np.isnan(a)], b[~np.isnan(b)]
    if min(len(a), len(b)) < min_group:
        return NonInferiority(
            np.nan, np.nan, f"n too small for a test (need {min_group} per group, have {len(a)} and {len(b)})"
        )
    if np.ptp(a) == 0 and np.ptp(b) == 0:
        return NonInferiority(np.nan, np.nan, "no spread within either group: no test")
    not_worse = stats.ttest_ind(a + margin, b, equal_var=False, alternative="greater").pvalue
    worse = stats.ttest_ind(a + margin, b, equal_var=False, alternative="less").pvalue
    return NonInferiority(float(not_worse), float(worse), "")


def noninferiority_verdict(p_not_worse: float, p_worse: float, alpha: float) -> str:
    """ "not worse" when the non-inferiority test rejects a deficit of the margin or more;
    "worse" when the mirror test shows a deficit larger than the margin; else "cannot tell".
    Pass Holm-adjusted p-values when the test is one of a family."""
    if not np.isnan(p_not_worse) and p_not_worse < alpha:
        return NOT_WORSE
    if not np.isnan(p_worse) and p_worse < alpha:
        return WORSE
    return CANNOT_TELL


def direction(
    estimate: float, p: float, alpha: float, higher: str, lower: str, neither: str = "no significant difference"
) -> str:
    """Which way a tested difference goes: ``higher`` / ``lower`` when ``p`` < alpha (by the
    sign of ``estimate``), ``neither`` when not significant, "no test" when p is NaN."""
    if np.isnan(p):
        return "no test"
    if p >= alpha:
        return neither
    return higher if estimate > 0 else lower


@dataclass(frozen=True)
class Trend:
    """Spearman's rank correlation of two variables (``scipy.stats.spearmanr``), NaN with a
    ``note`` when no test was run."""

    n: int
    rho: float
    p: float
    note: str


#: Up to this many models the Spearman p-value is exact (all n! pairings), beyond it scipy's t
#: approximation (good from about 10 on).
EXACT_SPEARMAN_N = 8


def spearman_trend(x: np.ndarray, y: np.ndarray, min_n: int) -> Trend:
    """Spearman's rho of ``x`` vs ``y`` (pairs with a NaN dropped) and its two-sided p-value:
    exact (permutation over every pairing) for at most :data:`EXACT_SPEARMAN_N` pairs, else
    ``scipy.stats.spearmanr``'s."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    n = int(len(x))
    if n < min_n:
        return Trend(n, np.nan, np.nan, f"n too small for a test (need {min_n} models)")
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return Trend(n, np.nan, np.nan, "one variable is constant: no test")
    result = stats.spearmanr(x, y)
    p = float(result.pvalue)
    if abs(float(result.statistic)) == 1:
        p = max(p, 2 / math.factorial(n))  # t is infinite; exactly 2 of the n! pairings are this extreme
    if n <= EXACT_SPEARMAN_N:
        # The t approximation is far off for few models (rho = 1 of 3 models gives p = 0; the
        # exact p is 1/3): enumerate every pairing of the ranks instead.
        rx, ry = stats.rankdata(x), stats.rankdata(y)
        pairings = ry[np.array(list(itertools.permutations(range(n))))]  # n! x n, at most 40320 x 8
        a, b = rx - rx.mean(), pairings - pairings.mean(axis=1, keepdims=True)
        rhos = (b @ a) / np.sqrt((a @ a) * (b * b).sum(axis=1))
        observed = float(rhos[0])  # the identity pairing comes first
        # Two-sided: pairings at least as extreme as the observed one (a small tolerance for ties).
        p = float(np.mean(np.abs(rhos) >= abs(observed) - 1e-12))
    return Trend(n, float(result.statistic), p, "")


@dataclass(frozen=True)
class Levelling:
    """Whether ``y`` levels off as ``log10 x`` grows: the quadratic coefficient of an OLS fit
    ``y ~ a + b t + c t^2`` (t = centred log10 x) and one-sided p-values for c < 0 (concave:
    levels off) and c > 0 (accelerates); NaN with a ``note`` when no test was run."""

    n: int
    curvature: float
    p_levels_off: float
    p_accelerates: float
    note: str


def levelling_off(x: np.ndarray, y: np.ndarray, min_n: int) -> Levelling:
    """The concave-vs-line test of diminishing returns (see :class:`Levelling`): a quadratic in
    log10 of ``x`` against the line, by the t statistic of its quadratic term (n - 3 degrees of
    freedom; needs at least max(min_n, 4) points and three distinct sizes)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = ~(np.isnan(x) | np.isnan(y)) & (x > 0)
    t, y = np.log10(x[keep]), y[keep]
    n = int(len(t))
    need = max(min_n, 4)
    if n < need:
        return Levelling(n, np.nan, np.nan, np.nan, f"n too small for a levelling-off test (need {need} models)")
    if len(np.unique(t)) < 3:
        return Levelling(n, np.nan, np.nan, np.nan, "fewer than three distinct sizes: no levelling-off test")
    t = t - t.mean()
    design = np.column_stack([np.ones(n), t, t**2])
    coef, _, rank, _ = np.linalg.lstsq(design, y, rcond=None)
    residual = y - design @ coef
    dof = n - 3
    sigma2 = float(residual @ residual) / dof
    if rank < 3 or sigma2 == 0:
        return Levelling(
            n, float(coef[2]) if rank == 3 else np.nan, np.nan, np.nan, "a perfect fit: no levelling-off test"
        )
    se = math.sqrt(sigma2 * np.linalg.inv(design.T @ design)[2, 2])
    statistic = coef[2] / se
    return Levelling(n, float(coef[2]), float(stats.t.cdf(statistic, dof)), float(stats.t.sf(statistic, dof)), "")
