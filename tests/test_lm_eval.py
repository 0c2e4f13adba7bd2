"""lm-evaluation-harness as a rule (scripts/run_lm_eval.py): the project's own task, offline, on a tiny model,
base and tuned, into the report and the summary; an unknown task and a dataset missing offline stop early."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from alpaca_lora import layout
from alpaca_lora.common import read_json, read_jsonl
from alpaca_lora.lm_harness import LOCAL_TASK, summarized
from alpaca_lora.testing import make_workdir, snakemake, tiny_recipe, workflow_env
from conftest import SCRIPTS

KEY = f"lm_eval:{LOCAL_TASK}:acc"


@pytest.fixture(scope="module")
def lm_eval_run(tmp_path_factory, tiny_llama, small_alpaca) -> Path:
    recipe = tiny_recipe("smollm2-135m-alpaca-sample.yaml", tiny_llama, small_alpaca)
    recipe["evaluation"]["lm_eval"] = {"tasks": [LOCAL_TASK], "limit": 6, "batch_size": 4}
    workdir = make_workdir(tmp_path_factory.mktemp("lm-eval"), {"tiny": recipe})
    snakemake(workdir, env=workflow_env(HF_DATASETS_OFFLINE="1"))
    return workdir


def results_of(workdir: Path) -> dict[str, dict]:
    return {
        which: read_json(workdir / layout.files("lm_eval", experiment="tiny", which=which)["results"])
        for which in ("base", "tuned")
    }


def test_the_local_task_scores_base_and_adapter_offline(lm_eval_run):
    results = results_of(lm_eval_run)
    for which, result in results.items():
        entry = result["tasks"][LOCAL_TASK]
        assert (entry["samples"], entry["documents"]) == (6, 8), which  # limit 6 of the 8 eval records
        assert 0 <= entry["metrics"]["acc"]["value"] <= 1 and entry["metrics"]["acc"]["stderr"] > 0
    assert results["base"]["adapter"] is None and results["tuned"]["adapter"].endswith("train/adapter")
    # lm-eval loaded the adapter with peft: the tuned model has the LoRA weights on top of the base model's.
    assert results["tuned"]["model_parameters"] > results["base"]["model_parameters"]


def test_the_local_task_is_built_from_the_eval_split(lm_eval_run):
    [split] = lm_eval_run.glob("results/data/*/*/*/eval.jsonl")
    tasks = Path(layout.files("lm_eval", experiment="tiny", which="base")["tasks"])
    documents = list(read_jsonl(lm_eval_run / tasks / f"{LOCAL_TASK}.jsonl"))
    records = list(read_jsonl(split))
    assert len(documents) == len(records)
    for document, record in zip(documents, records, strict=True):
        assert document["question"] == record["messages"][-2]["content"]
        assert document["choices"][document["label"]] == record["messages"][-1]["content"]
        assert len(set(document["choices"])) == 4
    assert len({document["label"] for document in documents}) > 1, "the answer's position varies"


def test_the_numbers_land_in_the_report_and_the_summary(lm_eval_run):
    results = results_of(lm_eval_run)
    value = {which: results[which]["tasks"][LOCAL_TASK]["metrics"]["acc"]["value"] for which in results}
    report = layout.files("report", experiment="tiny")
    with open(lm_eval_run / report["metrics"], encoding="utf-8") as handle:
        row = {r["key"]: r for r in csv.DictReader(handle)}[KEY]
    assert float(row["base"]) == pytest.approx(value["base"])
    assert float(row["tuned"]) == pytest.approx(value["tuned"])
    assert "6 of 8 documents" in row["computed_on"] and "lm-eval 0.4.13" in row["computed_on"]
    markdown = (lm_eval_run / report["markdown"]).read_text(encoding="utf-8")
    assert "### lm-evaluation-harness" in markdown and f"{value['tuned']:.4f} ± " in markdown
    summary = layout.files("summary")
    with open(lm_eval_run / summary["csv"], encoding="utf-8") as handle:
        [line] = list(csv.DictReader(handle))
    assert float(line[f"{KEY}_base"]) == pytest.approx(value["base"])
    assert float(line[f"{KEY}_tuned"]) == pytest.approx(value["tuned"])
    assert LOCAL_TASK.replace("_", r"\_") in (lm_eval_run / summary["latex"]).read_text(encoding="utf-8")


def test_an_unknown_task_stops_before_any_job(tmp_path, tiny_llama, small_alpaca):
    recipe = tiny_recipe("smollm2-135m-alpaca-sample.yaml", tiny_llama, small_alpaca)
    recipe["evaluation"]["lm_eval"] = {"tasks": ["arc_challenge", "alpaca_heldout_choise"]}
    workdir = make_workdir(tmp_path, {"bad": recipe})
    result = snakemake(workdir, check=False)
    said = [line for line in (result.stdout + result.stderr).splitlines() if "workflow specific" not in line]
    assert result.returncode == 1 and len(said) == 1, said
    assert "config/recipes/bad.yaml: evaluation.lm_eval.tasks[1]: lm-eval knows no task" in said[0]
    assert "did you mean alpaca_heldout_choice?" in said[0]
    assert not (workdir / "results").exists(), "no job ran"


def test_a_dataset_missing_offline_stops_before_the_model_loads(tmp_path):
    """arc_challenge's dataset is not cached in an empty HF_HOME; the model folder does not even exist, so a
    step that loaded the model first would fail on the model instead."""
    hub = tmp_path / "hf"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(hub)}
    env["HF_DATASETS_CACHE"] = str(hub / "datasets")
    outputs = {"tasks_dir": tmp_path / "tasks", "results": tmp_path / "lm_eval.json"}
    result = subprocess.run(
        [
            sys.executable,
            SCRIPTS / "run_lm_eval.py",
            "--model",
            tmp_path / "no-model",
            "--eval",
            tmp_path / "eval.jsonl",
            "--task",
            "arc_challenge",
            "--tasks-dir",
            outputs["tasks_dir"],
            "--results",
            outputs["results"],
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    errors = [line for line in result.stderr.splitlines() if " - ERROR - " in line]
    assert result.returncode == 1 and len(errors) == 1 and "Traceback" not in result.stderr
    assert "lm-eval task arc_challenge: its dataset is not in the Hugging Face cache" in errors[0]
    assert "HF_HUB_OFFLINE=0 HF_DATASETS_OFFLINE=0" in errors[0]
    assert not any(path.exists() for path in outputs.values()), "no partial output"


def test_results_keep_metrics_with_their_errors_and_a_group_counts_its_tasks_documents():
    """lm-eval's results shape: a group of two tasks, a filtered metric, a stderr lm-eval did not compute."""
    results = {
        "results": {
            "group": {"alias": "group", "acc,none": 0.5, "acc_stderr,none": 0.1},
            "a": {"alias": " - a", "acc,none": 0.4, "acc_stderr,none": "N/A", "sample_len": 5},
            "b": {"alias": " - b", "exact_match,strict-match": 0.25, "exact_match_stderr,strict-match": 0.2},
        },
        "group_subtasks": {"group": ["a", "b"], "a": [], "b": []},
        "n-samples": {"a": {"original": 5, "effective": 2}, "b": {"original": 4, "effective": 3}},
        "n-shot": {"a": 5, "b": 0},
        "versions": {"a": 1.0, "b": 2.0},
    }
    summary = summarized(results)
    assert summary["a"]["metrics"] == {"acc": {"value": 0.4, "stderr": None}}
    assert summary["b"]["metrics"] == {"exact_match/strict-match": {"value": 0.25, "stderr": 0.2}}
    assert (summary["group"]["samples"], summary["group"]["documents"]) == (2 + 3, 5 + 4)
    assert (summary["a"]["samples"], summary["a"]["num_fewshot"], summary["b"]["version"]) == (2, 5, 2.0)
