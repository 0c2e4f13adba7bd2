"""Confidence intervals on known cases: the paired bootstrap, Wilson intervals, the t interval over seeds."""

from __future__ import annotations

import math

import numpy as np
import pytest

from alpaca_lora import stats


def test_a_paired_bootstrap_of_a_mean_difference_matches_the_normal_interval():
    """Many records: the percentile interval of a mean difference approaches mean ± 1.96 s / sqrt(n)."""
    rng = np.random.default_rng(1)
    base = rng.normal(0.0, 1.0, 2000)
    tuned = base + 0.3 + rng.normal(0.0, 0.5, 2000)
    found = stats.paired_bootstrap([base, tuned], stats.mean_difference, 4999, seed=0)
    differences = tuned - base
    half = 1.96 * differences.std(ddof=1) / math.sqrt(differences.size)
    assert found["low"] == pytest.approx(differences.mean() - half, abs=0.006)
    assert found["high"] == pytest.approx(differences.mean() + half, abs=0.006)
    assert found["significant"]


def test_pairing_removes_what_both_models_share():
    """Records that differ a lot from each other but where tuned is base + 0.1 give a tight interval."""
    base = np.linspace(0.0, 10.0, 50)
    tuned = base + 0.1
    found = stats.paired_bootstrap([base, tuned], stats.mean_difference, 999, seed=0)
    assert found["low"] == pytest.approx(0.1) and found["high"] == pytest.approx(0.1)


def test_an_interval_containing_zero_is_not_significant_and_the_seed_fixes_it():
    base = np.array([0, 1, 0, 1, 1, 0, 0, 1.0])
    tuned = np.array([1, 0, 0, 1, 0, 1, 0, 1.0])
    first = stats.paired_bootstrap([base, tuned], stats.mean_difference, 999, seed=3)
    assert first["low"] < 0 < first["high"] and not first["significant"]
    assert stats.paired_bootstrap([base, tuned], stats.mean_difference, 999, seed=3) == first


def test_the_eval_loss_difference_weighs_every_token_the_same():
    """Every answer token's loss falls by 0.5: the pooled difference is -0.5 in every resample."""
    tokens = np.array([3, 10, 1, 7, 4.0])
    base = np.array([6.0, 31.0, 2.5, 20.0, 9.0])
    tuned = base - 0.5 * tokens
    found = stats.paired_bootstrap([base, tuned, tokens], stats.pooled_difference, 999, seed=0)
    assert found["low"] == pytest.approx(-0.5) and found["high"] == pytest.approx(-0.5)
    assert found["significant"]


def test_wilson_interval_of_no_passes_has_its_closed_form():
    # 0 of n: the upper bound is z^2 / (n + z^2).
    z = 1.959963984540054
    found = stats.wilson(0, 10)
    assert found["low"] == pytest.approx(0.0, abs=1e-12)
    assert found["high"] == pytest.approx(z**2 / (10 + z**2), rel=1e-6)


def test_mean_over_seeds_with_student_t_half_width():
    found = stats.mean_interval([1.0, 2.0, 3.0])
    # t(0.975, 2) = 4.302653; sem = 1 / sqrt(3).
    assert found["mean"] == 2.0 and found["n"] == 3
    assert found["half_width"] == pytest.approx(4.302653 / math.sqrt(3), rel=1e-5)
    assert math.isnan(stats.mean_interval([1.0])["half_width"])
