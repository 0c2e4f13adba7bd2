"""Uncertainty of the report's numbers: paired bootstrap confidence intervals of base-vs-tuned differences
(scipy.stats.bootstrap, percentile method, seeded), Wilson intervals of pass rates, and Student-t intervals of
a mean over seeds.

Paired: the base and the tuned model answered the same records (problems, probes), so each resample draws
the same records for both, and the interval is of the difference itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

CONFIDENCE = 0.95


def interval(low: float, high: float) -> dict:
    """{low, high, significant}: significant when the interval of a difference excludes 0."""
    return {"low": float(low), "high": float(high), "significant": bool(low > 0 or high < 0)}


def paired_bootstrap(
    samples: Sequence[Sequence[float]],
    statistic: Callable[..., np.ndarray],
    resamples: int,
    seed: int,
) -> dict:
    """95% interval of `statistic(*samples, axis=-1)` over records resampled with replacement, all samples
    drawn together (paired). Records all alike (no spread to resample) give the point itself."""
    from scipy.stats import bootstrap

    data = [np.asarray(sample, dtype=float) for sample in samples]
    if data[0].size == 0:
        raise ValueError("no records to resample")
    point = float(statistic(*data, axis=-1))
    if all(np.all(sample == sample[0]) for sample in data):
        return interval(point, point)
    result = bootstrap(
        data,
        statistic,
        paired=True,
        vectorized=True,
        n_resamples=resamples,
        confidence_level=CONFIDENCE,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return interval(result.confidence_interval.low, result.confidence_interval.high)


def mean_difference(base: np.ndarray, tuned: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(tuned - base, axis=axis)


def pooled_difference(
    base_sum: np.ndarray, tuned_sum: np.ndarray, weight: np.ndarray, axis: int = -1
) -> np.ndarray:
    """Difference of two token-weighted means (sum of losses over sum of tokens): the eval loss."""
    total = np.sum(weight, axis=axis)
    return (np.sum(tuned_sum, axis=axis) - np.sum(base_sum, axis=axis)) / total


def pooled_mean(value_sum: np.ndarray, weight: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.sum(value_sum, axis=axis) / np.sum(weight, axis=axis)


def wilson(passed: int, total: int) -> dict:
    """Wilson score interval of a pass rate (scipy's binomtest)."""
    from scipy.stats import binomtest

    found = binomtest(passed, total).proportion_ci(confidence_level=CONFIDENCE, method="wilson")
    return interval(found.low, found.high)


def mean_interval(values: Sequence[float]) -> dict:
    """Mean, half-width of its Student-t 95% interval and n (over seeds); one value has no interval."""
    from scipy import stats

    data = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    mean = float(np.mean(data)) if data.size else math.nan
    if data.size < 2:
        return {"mean": mean, "half_width": math.nan, "n": int(data.size)}
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, data.size - 1) * stats.sem(data))
    return {"mean": mean, "half_width": half, "n": int(data.size)}


if __name__ == "__main__":
    from alpaca_lora.common import module_help

    module_help(__doc__ + "\nA library: nothing to run.").parse_args()
