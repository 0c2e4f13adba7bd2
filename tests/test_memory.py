"""The training step fits its micro-batch to a memory budget (src/alpaca_lora/memory.py), on a tiny model."""

from __future__ import annotations

import json
import math

import pytest

from alpaca_lora import memory
from alpaca_lora.testing import build_tiny_model
from conftest import SAMPLE_DATA, run_script
from test_train_and_evaluate import read_history, templated_splits, train_arguments, train_settings

pytestmark = pytest.mark.skipif(not memory.can_measure(), reason="needs /proc/self/clear_refs (Linux)")

# Micro-batches with gradient accumulation see the same batches and the same loss normalisation: what differs
# is the order of float32 sums (other matmul shapes, per-micro-batch padding). Relative tolerance on every
# logged loss after 6 optimizer steps; observed differences are about 1e-7.
LOSS_RTOL = 1e-4


@pytest.fixture(scope="module")
def wide_model(tmp_path_factory):
    """Wide and long enough that one sequence's activations (tens of MB) stand well above measuring noise."""
    return build_tiny_model(tmp_path_factory.mktemp("wide"), SAMPLE_DATA, "llama", hidden_size=256)


def fitted_run(folder, model, splits, budget_gb: float | None) -> dict:
    # No dropout: its random masks depend on the micro-batch shapes, which is not what is compared here.
    settings = train_settings({"lora_dropout": 0.0}, max_length=1024, per_device_train_batch_size=4)
    settings["resources"] = {"max_memory_gb": budget_gb} if budget_gb else {}
    result = run_script("train_lora.py", *train_arguments(folder, model, splits, settings))
    summary = json.loads((folder / "summary.json").read_text())
    return {"summary": summary, "log": result.stderr, "history": read_history(folder / "history.csv")}


def test_a_small_budget_splits_the_batch_and_keeps_the_losses(tmp_path, wide_model, small_alpaca):
    splits = templated_splits(tmp_path, wide_model, small_alpaca)
    whole = fitted_run(tmp_path / "whole", wide_model, splits, None)
    assert (whole["summary"]["micro_batch"], whole["summary"]["gradient_accumulation_steps"]) == (4, 1)
    probed = whole["summary"]["memory_fit"]
    # A budget between the estimates at micro-batches 2 and 4: the step must choose 2 x 2.
    budget = memory.estimate(probed["resident_gb"], probed["per_sequence_gb"], 3)
    split = fitted_run(tmp_path / "split", wide_model, splits, budget)

    fit = split["summary"]["memory_fit"]
    assert (split["summary"]["micro_batch"], split["summary"]["gradient_accumulation_steps"]) == (2, 2)
    assert (fit["micro_batch"], fit["effective_batch"], fit["budget_gb"]) == (2, 4, round(budget, 2))
    assert fit["estimated_peak_gb"] <= budget
    assert "micro-batch 2 x 2 accumulation steps (effective batch 4)" in split["log"]
    assert split["summary"]["sft_config"]["per_device_train_batch_size"] == 2
    assert split["summary"]["train_tokens"] == whole["summary"]["train_tokens"]
    pairs = [
        (float(mine[key]), float(theirs[key]))
        for mine, theirs in zip(split["history"], whole["history"], strict=True)
        for key in ("loss", "eval_loss")
        if mine[key]
    ]
    assert len(pairs) == 6 + 2  # a loss every step, an eval loss every 3 steps
    for mine, theirs in pairs:
        assert math.isclose(mine, theirs, rel_tol=LOSS_RTOL), pairs
    assert math.isclose(
        split["summary"]["final_eval_loss"], whole["summary"]["final_eval_loss"], rel_tol=LOSS_RTOL
    )
    # Another micro-batch is another run: a checkpoint of one is never resumed by the other.
    assert split["summary"]["settings_fingerprint"] != whole["summary"]["settings_fingerprint"]


def test_a_budget_below_the_model_stops_before_loading_it(tmp_path, wide_model, small_alpaca):
    splits = templated_splits(tmp_path, wide_model, small_alpaca)
    settings = {**train_settings(), "resources": {"max_memory_gb": 0.0001}}
    arguments = train_arguments(tmp_path, wide_model, splits, settings)
    result = run_script("train_lora.py", *arguments, check=False)
    assert result.returncode == 1
    assert "resources.max_memory_gb 0.0001 is below the model's size" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "checkpoints").exists()


def test_a_length_that_does_not_fit_one_sequence_stops_with_the_estimate(tmp_path, wide_model, small_alpaca):
    splits = templated_splits(tmp_path, wide_model, small_alpaca)
    # Above the weights, far below what the process itself takes (Python and torch alone: hundreds of MB).
    weights = memory.weights_gb(wide_model)
    settings = {**train_settings(max_length=1024), "resources": {"max_memory_gb": round(weights * 2, 4)}}
    arguments = train_arguments(tmp_path, wide_model, splits, settings)
    result = run_script("train_lora.py", *arguments, check=False)
    assert result.returncode == 1
    assert "one training sequence of training.max_length 1024 needs about" in result.stderr
    assert "lower training.max_length or raise resources.max_memory_gb" in result.stderr
    assert "Traceback" not in result.stderr and "Trainable parameters" not in result.stderr
    assert not (tmp_path / "checkpoints").exists()
