"""The shipped recipes and the example grid as written, run end to end with tiny models in place of theirs.

Apart from test_workflow.py (one tiny run that many tests share) so that, under `make test`'s parallel
workers, these two long runs go to another worker.
"""

from __future__ import annotations

import csv
import json
import subprocess

import yaml

from alpaca_lora.testing import SNAKEMAKE, make_workdir, snakemake, tiny_recipe
from conftest import ROOT


def test_shipped_recipes_pass_validation_and_plan_the_whole_dag():
    for experiment in ["smollm2-135m-alpaca-sample", "phi35-mini-alpaca-recipe"]:
        result = subprocess.run(
            [SNAKEMAKE, "--dry-run", "--forceall", "--config", f"experiments=[{experiment}]"],
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
    # Long enough sequences for several records to share one, as they do at the recipe's 2048 tokens.
    recipe["training"]["max_length"] = 1024
    workdir = make_workdir(tmp_path, {"phi": recipe})
    snakemake(workdir)
    adapter = json.loads((workdir / "results/phi/train/adapter/adapter_config.json").read_text())
    assert adapter["r"] == 16 and adapter["lora_alpha"] == 32
    # all-linear: every linear layer of the model but the output head carries a LoRA update.
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_phi3)
    linear = {name for name, module in model.named_modules() if module.__class__.__name__ == "Linear"}
    assert set(adapter["target_modules"]) == linear - {"lm_head"} and len(linear) >= 8
    # bf16 and packing took effect: the frozen weights trained in bf16, and records shared sequences.
    summary = json.loads((workdir / "results/phi/train/summary.json").read_text())
    split = json.loads(next((workdir / "results/data/small").glob("*/*/split_summary.json")).read_text())
    assert summary["base_dtype"] == "torch.bfloat16"
    assert summary["train_sequences"] < split["train"]
    assert (workdir / "results/phi/report/report.md").exists()
    # The recipe's lm-eval settings reach lm-eval (tiny_recipe swaps the Hub tasks for the offline one).
    lm_eval = json.loads((workdir / "results/phi/eval/tuned/lm_eval.json").read_text())
    assert lm_eval["tasks"]["alpaca_heldout_choice"]["num_fewshot"] == 5
    assert lm_eval["settings"]["apply_chat_template"] is True


def test_the_example_grid_runs_every_cell_and_summarizes_them(tmp_path, tiny_llama, small_alpaca):
    """config/grid-example.yaml as shipped, with the tiny model in place of the embedded default's."""
    recipe = tiny_recipe("smollm2-135m-alpaca-sample.yaml", tiny_llama, small_alpaca)
    recipe["training"].update(max_steps=2, eval_strategy="no")
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
    assert len(list((results / "logs").rglob("convert_to_messages.log"))) == 1
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
    # A seed grid's LaTeX table is per setting (lora.r), over its seeds: mean ± half-width.
    latex = (results / "summary" / "summary.tex").read_text()
    table_rows = [line for line in latex.splitlines() if line.endswith("\\\\") and "±" in line]
    assert [row.split(" & ")[:2] for row in table_rows] == [[str(r), "2"] for r in grid["vary"]["lora.r"]]
