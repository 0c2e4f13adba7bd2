"""export_model.py: the merged model equals base + adapter on the eval records, and ships with its card."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import ROOT, recipe_line, run_script
from test_train_and_evaluate import trained  # noqa: F401 (a fixture: one short training)

RECIPE = ROOT / "config/recipes/smollm2-135m-alpaca-sample.yaml"


def export_arguments(trained: dict, out: Path, *extra: str) -> list[str]:  # noqa: F811
    folder = trained["folder"]
    metrics = out / "metrics.json"
    metrics.parent.mkdir(parents=True, exist_ok=True)
    metrics.write_text(json.dumps({"tuned": {"eval_loss": 1.5}, "base": {"eval_loss": 2.5}}))
    return [
        "--model", trained["model"], "--adapter", folder / "adapter", "--eval", trained["eval"],
        "--recipe", RECIPE, "--convert-summary", folder / "convert.json", "--metrics", metrics,
        "--experiment", "tiny", "--license", "apache-2.0",
        "--output-dir", out / "merged", "--check", out / "check.json", *extra,
    ]  # fmt: skip


def test_the_merged_model_gives_the_logits_of_base_plus_adapter(trained, tmp_path):  # noqa: F811
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run_script("export_model.py", *export_arguments(trained, tmp_path))
    check = json.loads((tmp_path / "check.json").read_text())
    assert check["tokens"] > 0 and check["max_abs_logit_difference"] <= check["tolerance"] == 1e-3
    merged_dir = tmp_path / "merged"
    assert list(merged_dir.glob("*.safetensors")) and not (merged_dir / "adapter_config.json").exists()
    # Independently of the script: the adapter does change the logits, and the merged files carry it.
    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    assert tokenizer.chat_template and "<|im_start|>" in tokenizer.chat_template
    batch = tokenizer(["<|im_start|>user\nAdd 2 and 3.<|im_end|>\n"], return_tensors="pt")
    with torch.no_grad():
        base = AutoModelForCausalLM.from_pretrained(trained["model"])
        plain = base(**batch).logits
        tuned = PeftModel.from_pretrained(base, trained["folder"] / "adapter")(**batch).logits
        merged = AutoModelForCausalLM.from_pretrained(merged_dir)(**batch).logits
    assert (tuned - plain).abs().max() > 100 * check["max_abs_logit_difference"]
    assert torch.allclose(merged, tuned, atol=1e-3)


def test_the_card_states_base_data_recipe_metrics_and_license(trained, tmp_path):  # noqa: F811
    run_script("export_model.py", *export_arguments(trained, tmp_path))
    card = (tmp_path / "merged" / "README.md").read_text()
    convert = json.loads((trained["folder"] / "convert.json").read_text())
    assert card.startswith("---\n") and "license: apache-2.0" in card
    assert convert["input_sha256"] in card and convert["output_sha256"] in card
    assert recipe_line(RECIPE, "learning_rate") in card and "eval_loss: 1.5" in card
    assert "Merge check" in card


@pytest.mark.parametrize("problem", ["no adapter", "tolerance"])
def test_a_missing_adapter_or_a_merge_off_tolerance_stops_naming_the_experiment(trained, tmp_path, problem):  # noqa: F811
    arguments = export_arguments(trained, tmp_path)
    if problem == "no adapter":
        arguments[arguments.index("--adapter") + 1] = tmp_path / "nowhere"
        expected = "experiment tiny: "
    else:
        arguments += ["--tolerance", "0"]  # a float32 merge is not bit-exact: the real difference exceeds 0
        expected = "experiment tiny: the merged model's logits differ from base + adapter by up to"
    result = run_script("export_model.py", *arguments, check=False)
    assert result.returncode == 1 and expected in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "merged").exists() and not (tmp_path / "check.json").exists()


def test_the_gguf_hook_gets_the_merged_folder_and_the_gguf_path(trained, tmp_path):  # noqa: F811
    hook = tmp_path / "convert.sh"
    hook.write_text('#!/bin/sh\nls "$1" > "$2"\n')
    hook.chmod(0o755)
    run_script("export_model.py", *export_arguments(trained, tmp_path, "--gguf-hook", hook))
    assert "model.safetensors" in (tmp_path / "merged" / "model.gguf").read_text()
