"""Recipe settings reach PEFT and TRL as they are: the schema's lora and training keys are their fields."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml

from alpaca_lora.experiments import SCHEMAS, ConfigError, Experiments
from conftest import ROOT

SCHEMA = yaml.safe_load((SCHEMAS / "recipe.schema.yaml").read_text(encoding="utf-8"))
TRAINING = SCHEMA["properties"]["training"]["properties"]
LORA = SCHEMA["properties"]["lora"]["properties"]
RECIPES = sorted((ROOT / "config" / "recipes").glob("*.yaml"))


def sample_value(key: str, schema: dict) -> object:
    """A value the schema allows: from a shipped recipe when one sets the key, else one of its type."""
    for path in RECIPES:
        training = yaml.safe_load(path.read_text(encoding="utf-8"))["training"]
        if key in training:
            return training[key]
    if "enum" in schema:
        return schema["enum"][-1]
    return {"integer": 3, "number": 0.5, "boolean": True, "string": "adamw_torch"}[schema["type"]]


def plain(value: object) -> object:
    return getattr(value, "value", value)  # TRL keeps some settings as enums (lr_scheduler_type)


@pytest.mark.parametrize("key", sorted(TRAINING))
def test_every_training_key_is_an_sft_config_field_that_takes_the_value(key, tmp_path):
    from trl import SFTConfig

    import train_lora

    assert key in {f.name for f in dataclasses.fields(SFTConfig)}, f"{key} is not an SFTConfig field"
    assert key not in train_lora.OWNED_FIELDS
    value = sample_value(key, TRAINING[key])
    config = train_lora.training_config({"seed": 1, key: value}, tmp_path)
    assert plain(getattr(config, key)) == value


def test_every_lora_key_is_a_lora_config_field():
    from peft import LoraConfig

    fields = {f.name for f in dataclasses.fields(LoraConfig)}
    assert set(LORA) <= fields
    recipe = yaml.safe_load(RECIPES[0].read_text(encoding="utf-8"))
    config = LoraConfig(task_type="CAUSAL_LM", **recipe["lora"])
    assert (config.r, config.lora_alpha) == (recipe["lora"]["r"], recipe["lora"]["lora_alpha"])


def test_settings_the_step_owns_are_refused(tmp_path):
    import train_lora

    settings = tmp_path / "settings.yaml"
    settings.write_text(yaml.safe_dump({"lora": {"r": 2}, "training": {"output_dir": "elsewhere"}}))
    with pytest.raises(SystemExit, match="training.output_dir is set by train_lora.py itself"):
        train_lora.read_settings(str(settings))


def test_a_new_trl_option_is_one_line_in_the_schema(tmp_path):
    """neftune_noise_alpha: refused until the schema names it; then it reaches SFTConfig unchanged."""
    import train_lora

    schemas = tmp_path / "schemas"
    schemas.mkdir()
    for schema in SCHEMAS.glob("*.yaml"):
        (schemas / schema.name).write_text(schema.read_text(encoding="utf-8"), encoding="utf-8")
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    recipe = yaml.safe_load((ROOT / "config/recipes/smollm2-135m-alpaca-sample.yaml").read_text())
    recipe["training"]["neftune_noise_alpha"] = 5.0
    recipe["evaluation"]["probes"] = str(ROOT / recipe["evaluation"]["probes"])
    (recipes / "neft.yaml").write_text(yaml.safe_dump(recipe, allow_unicode=True))
    config = {"experiments": ["neft"], "recipes_dir": str(recipes)}

    with pytest.raises(ConfigError, match="neftune_noise_alpha"):
        Experiments(dict(config), schemas=schemas)

    text = (schemas / "recipe.schema.yaml").read_text(encoding="utf-8")
    anchor = "      learning_rate: {type: number, exclusiveMinimum: 0}\n"
    assert anchor in text
    line = "      neftune_noise_alpha: {type: number, exclusiveMinimum: 0}\n"
    (schemas / "recipe.schema.yaml").write_text(text.replace(anchor, anchor + line), encoding="utf-8")

    settings = Experiments(dict(config), schemas=schemas).training_settings("neft")
    assert settings["training"]["neftune_noise_alpha"] == 5.0
    sft_config = train_lora.training_config(settings["training"], tmp_path / "checkpoints")
    assert sft_config.neftune_noise_alpha == 5.0
    assert sft_config.learning_rate == recipe["training"]["learning_rate"]


def test_the_settings_file_is_what_the_step_reads(tmp_path):
    """A recipe file itself is a valid settings file for the step run alone (of its model section, only the
    keys from_pretrained takes; its other sections ignored)."""
    import train_lora

    path = ROOT / "config/recipes/phi35-mini-alpaca-recipe.yaml"
    settings = train_lora.read_settings(str(path))
    recipe = yaml.safe_load(path.read_text(encoding="utf-8"))
    model = {"attn_implementation": recipe["model"]["attn_implementation"]}
    sections = {"lora": recipe["lora"], "training": recipe["training"], "model": model, "resources": {}}
    assert settings == sections
    config = train_lora.training_config(settings["training"], Path(tmp_path))
    assert config.packing is True and config.bf16 is True and config.completion_only_loss is True
    assert config.data_seed == recipe["training"]["seed"]


def test_a_gpu_recipe_stops_on_a_machine_without_a_gpu(tmp_path, monkeypatch):
    """bf16 or packing with a billion-parameter model and no GPU: one clear error, unless use_cpu is set."""
    import train_lora

    monkeypatch.setattr(train_lora, "has_accelerator", lambda: False)
    model = tmp_path / "model"
    model.mkdir()
    (model / "source.json").write_text(json.dumps({"parameters": 3_821_079_552}))
    training = {"bf16": True, "packing": True}
    with pytest.raises(
        train_lora.StepError, match=r"3.8 billion parameters with training.bf16 and packing on"
    ):
        train_lora.refuse_cpu_at_scale(training, str(model))
    train_lora.refuse_cpu_at_scale({**training, "use_cpu": True}, str(model))  # the user's override
    train_lora.refuse_cpu_at_scale({"bf16": False, "packing": False}, str(model))  # a CPU recipe
    (model / "source.json").write_text(json.dumps({"parameters": 134_515_008}))
    train_lora.refuse_cpu_at_scale(training, str(model))  # small enough for a CPU
    monkeypatch.setattr(train_lora, "has_accelerator", lambda: True)
    (model / "source.json").write_text(json.dumps({"parameters": 3_821_079_552}))
    train_lora.refuse_cpu_at_scale(training, str(model))  # a GPU machine
