"""The real Snakemake workflow, end to end, on a tiny model and tiny data in a temporary folder."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT

SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
WORKFLOW_FILES = [
    "Snakefile",
    "workflow",
    "scripts",
    "config",
    "profiles",
    "environment.yml",
    "requirements.txt",
]


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [SNAKEMAKE, "--cores", "2", *args], cwd=workdir, capture_output=True, text=True, env=env, timeout=900
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
        )
    return result


def jobs_planned(workdir: Path) -> dict[str, int]:
    """Rule name -> job count from a dry run's job table."""
    output = snakemake(workdir, "--dry-run").stdout
    if "Nothing to be done" in output:
        return {}
    table = output.split("Job stats:", 1)[1].split("total", 1)[0]
    rows = [line.split() for line in table.splitlines()[3:] if line.strip()]
    return {name: int(count) for name, count in rows}


def tiny_recipe(base: str, model: Path, data: Path) -> dict:
    recipe = yaml.safe_load((ROOT / "config" / "recipes" / base).read_text(encoding="utf-8"))
    recipe["model"].update(name="tiny", source={"kind": "local", "path": str(model)})
    recipe["data"].update(name="small", path=str(data))
    recipe["split"]["eval_size"] = 8
    recipe["training"].update(
        max_steps=4,
        max_length=128,
        per_device_train_batch_size=4,
        logging_steps=1,
        eval_steps=2,
        save_steps=2,
    )
    recipe["evaluation"].update(
        max_new_tokens=8, max_length=128, reference_records=4, reference_max_new_tokens=6
    )
    return recipe


def make_workdir(tmp_path: Path, recipes: dict[str, dict]) -> Path:
    workdir = tmp_path / "work"
    workdir.mkdir()
    for name in WORKFLOW_FILES:
        source = ROOT / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, workdir / name)
    for name, recipe in recipes.items():
        (workdir / "config" / "recipes" / f"{name}.yaml").write_text(
            yaml.safe_dump(recipe, allow_unicode=True)
        )
    config = {"experiments": list(recipes), "recipes_dir": "config/recipes"}
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    return workdir


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_llama, small_alpaca) -> Path:
    recipe = tiny_recipe("smollm2-135m-alpaca-sample.yaml", tiny_llama, small_alpaca)
    workdir = make_workdir(tmp_path_factory.mktemp("e2e"), {"tiny": recipe})
    snakemake(workdir)
    return workdir


def test_end_to_end_run_writes_every_artifact(finished_run):
    run = finished_run / "results" / "tiny"
    report = (run / "report" / "report.md").read_text(encoding="utf-8")
    base = json.loads((run / "eval" / "base" / "metrics.json").read_text())
    tuned = json.loads((run / "eval" / "tuned" / "metrics.json").read_text())
    assert f"{base['eval_loss']:.4f}" in report and f"{tuned['eval_loss']:.4f}" in report
    assert "写一个Python函数计算阶乘" in report
    # The factorial question's test result for both models, and the metrics with what they were computed on.
    factorial = next(line for line in report.splitlines() if line.startswith("| 写一个Python函数计算阶乘 |"))
    assert factorial.count("/4 tests;") == 2
    assert "| pass@1 (code probes) |" in report and "| chrF |" in report and "| ROUGE-L F1 (x100) |" in report
    assert "first 4 eval records; greedy, max_new_tokens 6" in report
    scores = json.loads((run / "eval" / "tuned" / "scores.json").read_text())
    assert scores["reference"]["records"] == 4 and scores["code"]["problems"] == 5
    assert len((run / "eval" / "base" / "eval_answers.jsonl").read_text().splitlines()) == 4
    page = (run / "report" / "report.html").read_text(encoding="utf-8")
    assert "pass@1" in page and "data:image/png;base64," in page
    summary = (finished_run / "results" / "summary" / "summary.csv").read_text().splitlines()
    assert len(summary) == 2 and summary[1].startswith("tiny,")
    assert (run / "report" / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((finished_run / "results/data/small/convert_summary.json").read_text())
    assert summary["read"] == summary["kept"] + summary["rejected"] == 40
    for step in ["alpaca_to_messages", "prepare_base_model", "train_lora", "evaluate.base", "make_report"]:
        logs = list((finished_run / "results" / "logs").rglob(f"{step}.log"))
        assert logs and " - INFO - " in logs[0].read_text(), f"no log for {step}"


def test_second_run_has_nothing_to_do(finished_run):
    assert jobs_planned(finished_run) == {}


def test_changing_an_evaluation_setting_reruns_evaluation_not_training(finished_run, tmp_path):
    recipe_file = finished_run / "config" / "recipes" / "tiny.yaml"
    original = recipe_file.read_text()
    recipe = yaml.safe_load(original)
    recipe["evaluation"]["max_new_tokens"] = 5
    recipe_file.write_text(yaml.safe_dump(recipe, allow_unicode=True))
    try:
        planned = jobs_planned(finished_run)
        assert planned.get("evaluate") == 2 and planned.get("report") == 1
        assert "train_lora" not in planned and "apply_chat_template" not in planned
    finally:
        recipe_file.write_text(original)


def test_editing_a_probes_tests_rescores_without_generating_again(finished_run):
    probes_file = finished_run / "config" / "probes.yaml"
    original = probes_file.read_text(encoding="utf-8")
    probes = yaml.safe_load(original)
    probes["probes"][0]["tests"].append("assert factorial(3) == 6")
    probes_file.write_text(yaml.safe_dump(probes, allow_unicode=True), encoding="utf-8")
    try:
        planned = jobs_planned(finished_run)
    finally:
        probes_file.write_text(original, encoding="utf-8")
    assert planned.get("score_answers") == 2 and planned.get("report") == 1 and planned.get("summary") == 1
    assert "evaluate" not in planned


def test_a_bad_probe_file_stops_before_any_job(finished_run):
    probes_file = finished_run / "config" / "probes.yaml"
    original = probes_file.read_text(encoding="utf-8")
    probes_file.write_text(original.replace("- assert factorial(0) == 1", "- factorial(0) == 1", 1))
    try:
        result = snakemake(finished_run, "--dry-run", check=False)
    finally:
        probes_file.write_text(original, encoding="utf-8")
    assert result.returncode != 0
    assert "probes.yaml" in result.stdout + result.stderr and "assert" in result.stdout + result.stderr


def test_html_report(finished_run):
    snakemake(finished_run, "--report", "results/report.html")
    page = (finished_run / "results" / "report.html").read_text(encoding="utf-8")
    assert len(page) > 10_000
    for shown in ("report.html", "metrics.csv", "loss_curve.png", "eval_answers.csv", "summary.tex"):
        assert shown in page, shown


def test_a_bad_recipe_value_stops_before_any_job(finished_run):
    recipe_file = finished_run / "config" / "recipes" / "tiny.yaml"
    original = recipe_file.read_text()
    recipe = yaml.safe_load(original)
    recipe["training"]["learning_rte"] = 0.1
    recipe_file.write_text(yaml.safe_dump(recipe, allow_unicode=True))
    try:
        result = snakemake(finished_run, "--dry-run", check=False)
    finally:
        recipe_file.write_text(original)
    assert result.returncode != 0
    message = result.stdout + result.stderr
    assert "learning_rte" in message and "tiny.yaml" in message


def test_an_unknown_experiment_is_named(finished_run):
    result = snakemake(finished_run, "--dry-run", "--config", "experiments=[nope]", check=False)
    assert result.returncode != 0
    assert "nope" in result.stdout + result.stderr and "does not exist" in result.stdout + result.stderr


def test_shipped_recipes_pass_validation_and_plan_the_whole_dag():
    for experiment in ["smollm2-135m-alpaca-sample", "phi35-mini-alpaca-recipe"]:
        result = subprocess.run(
            [SNAKEMAKE, "--dry-run", "--config", f"experiments=[{experiment}]"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert "train_lora" in result.stdout and "prepare_base_model" in result.stdout


def test_the_recipe_as_written_runs_on_a_tiny_phi3(tmp_path, tiny_phi3, small_alpaca):
    """The Phi-3.5 recipe's settings (bf16, packing, all-linear LoRA r16/alpha32) on its architecture."""
    recipe = tiny_recipe("phi35-mini-alpaca-recipe.yaml", tiny_phi3, small_alpaca)
    recipe["model"]["name"] = "tiny-phi3"
    workdir = make_workdir(tmp_path, {"phi": recipe})
    snakemake(workdir)
    adapter = json.loads((workdir / "results/phi/train/adapter/adapter_config.json").read_text())
    assert adapter["r"] == 16 and adapter["lora_alpha"] == 32
    assert (workdir / "results/phi/report/report.md").exists()


def test_the_example_grid_runs_every_cell_and_summarizes_them(tmp_path, tiny_llama, small_alpaca):
    """config/grid-example.yaml as shipped, with the tiny model in place of the embedded default's."""
    recipe = tiny_recipe("smollm2-135m-alpaca-sample.yaml", tiny_llama, small_alpaca)
    recipe["training"].update(max_steps=2, eval_steps=0)
    workdir = make_workdir(tmp_path, {"smollm2-135m-alpaca-sample": recipe})
    snakemake(workdir, "--configfile", "config/grid-example.yaml")

    grid = yaml.safe_load((ROOT / "config" / "grid-example.yaml").read_text())["grids"][0]
    cells = [
        f"smollm2-135m-alpaca-sample--lora.r={r}--training.seed={seed}"
        for r in grid["vary"]["lora.r"]
        for seed in grid["vary"]["training.seed"]
    ]
    results = workdir / "results"
    with open(results / "summary" / "summary.csv", newline="") as handle:
        rows = {row["experiment"]: row for row in csv.DictReader(handle)}
    assert sorted(rows) == sorted(cells) and len(cells) == 4
    # The base model is evaluated once for all cells; the data steps ran once.
    base = json.loads((results / cells[0] / "eval" / "base" / "metrics.json").read_text())
    base_scores = json.loads((results / cells[0] / "eval" / "base" / "scores.json").read_text())
    assert not any((results / cell / "eval" / "base").exists() for cell in cells[1:])
    assert len(list((results / "logs").rglob("alpaca_to_messages.log"))) == 1
    for cell in cells:
        row = rows[cell]
        tuned = json.loads((results / cell / "eval" / "tuned" / "metrics.json").read_text())
        scores = json.loads((results / cell / "eval" / "tuned" / "scores.json").read_text())
        adapter = json.loads((results / cell / "train" / "adapter" / "adapter_config.json").read_text())
        assert int(row["lora.r"]) == adapter["r"] == int(cell.split("lora.r=")[1].split("--")[0])
        assert row["training.seed"] == cell.rsplit("=", 1)[1]
        assert float(row["eval_loss_tuned"]) == tuned["eval_loss"]
        assert float(row["perplexity_tuned"]) == tuned["perplexity"]
        assert float(row["eval_loss_base"]) == base["eval_loss"]
        assert float(row["chrf_tuned"]) == scores["reference"]["chrf"]
        assert float(row["bleu_tuned"]) == scores["reference"]["bleu"]
        assert float(row["rougeL_base"]) == base_scores["reference"]["rougeL"]
        assert float(row["pass@1_tuned"]) == scores["code"]["pass@1"]
        assert int(row["eval_hit_max_tuned"]) == tuned["eval_answers_hit_max_new_tokens"]
        assert int(row["optimizer_steps"]) == 2
    # The seeds matter: two cells of the same rank end with different adapters.
    first, second = (results / cells[0] / "train/adapter/adapter_model.safetensors", results / cells[1])
    assert first.read_bytes() != (second / "train/adapter/adapter_model.safetensors").read_bytes()
    assert "-{}-lora.r=4-{}-training.seed=1" in (results / "summary" / "summary.tex").read_text()


def test_a_grid_on_a_setting_the_recipe_lacks_is_named(finished_run):
    grid = finished_run / "config" / "bad-grid.yaml"
    grid.write_text(yaml.safe_dump({"grids": [{"recipe": "tiny", "vary": {"lora.rank": [2, 4]}}]}))
    result = snakemake(finished_run, "--dry-run", "--configfile", str(grid), check=False)
    assert result.returncode != 0
    assert "'lora.rank' is not a setting of" in result.stdout + result.stderr
