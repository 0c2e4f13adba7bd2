"""Padding-free packing (packing_strategy bfd) is exact with every attention implementation the pipeline
allows.

Several records share one row, told apart only by position_ids that restart at each record (TRL's
padding-free collator). Each record's per-token loss must then equal its loss computed alone; a row whose
attention crosses records (wrapped packing: positions run on) gives other losses, which is why the pipeline
refuses it.
"""

from __future__ import annotations

import pytest
import torch

from alpaca_lora import hardware
from alpaca_lora.experiments import ConfigError, Experiments
from alpaca_lora.testing import ROOT, tiny_recipe

ALLOWED = sorted(
    name
    for name in hardware.PACKING_SAFE
    if (package := hardware.ATTENTION[name]) is None or hardware.installed(package)
)
RECORD_LENGTHS = (7, 12, 5)


def records(vocab: int) -> list[list[int]]:
    generator = torch.Generator().manual_seed(0)
    return [torch.randint(10, vocab, (n,), generator=generator).tolist() for n in RECORD_LENGTHS]


def token_losses(model, input_ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each next token (one row), unreduced. No cache, as SFTTrainer.compute_loss asks: with
    one, transformers does not look for packed records in position_ids."""
    with torch.no_grad():
        logits = model(input_ids=input_ids, position_ids=position_ids, use_cache=False).logits[0, :-1]
    return torch.nn.functional.cross_entropy(logits.float(), input_ids[0, 1:], reduction="none")


def load(path, attention: str):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        path, attn_implementation=attention, dtype=torch.float32
    ).eval()


def packed_batch(rows: list[list[int]]) -> dict[str, torch.Tensor]:
    """What TRL's padding-free collator gives the model for these records in one row."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    collator = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)
    return collator([{"input_ids": row} for row in rows])


@pytest.mark.parametrize("attention", ALLOWED)
@pytest.mark.parametrize("architecture", ["tiny_llama", "tiny_phi3"])
def test_packed_per_token_loss_equals_unpacked(request, architecture, attention):
    path = request.getfixturevalue(architecture)
    model = load(path, attention)
    rows = records(model.config.vocab_size)
    alone = [token_losses(model, torch.tensor([row]), torch.arange(len(row))[None]) for row in rows]
    batch = packed_batch(rows)
    assert (
        "attention_mask" not in batch or batch["attention_mask"] is None
    )  # the records are told apart by position
    packed = token_losses(model, batch["input_ids"], batch["position_ids"])
    start = 0
    for row, expected in zip(rows, alone, strict=True):
        # Within a record: its own next tokens (the step from its last token to the next record's is not one).
        got = packed[start : start + len(row) - 1]
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
        start += len(row)

    # Control: the same row with positions running on (wrapped packing) lets records attend to earlier ones.
    running = token_losses(model, batch["input_ids"], torch.arange(batch["input_ids"].shape[1])[None])
    second = slice(len(rows[0]), len(rows[0]) + len(rows[1]) - 1)
    assert not torch.allclose(running[second], alone[1], atol=1e-3)


def experiments_of(tmp_path, recipe: dict) -> Experiments:
    path = tmp_path / "r.yaml"
    import yaml

    path.write_text(yaml.safe_dump(recipe))
    config = {"experiments": ["r"], "recipes_dir": str(tmp_path)}
    return Experiments(config)


def test_leaking_packing_is_refused_before_any_job(tmp_path, tiny_llama, small_alpaca):
    recipe = tiny_recipe("phi35-mini-alpaca-recipe.yaml", tiny_llama, small_alpaca)
    recipe["training"]["packing_strategy"] = "wrapped"
    with pytest.raises(ConfigError, match=r"r\.yaml.*training\.packing_strategy: wrapped packing lets"):
        experiments_of(tmp_path, recipe).check_training(None)
    recipe["training"]["packing_strategy"] = "bfd"
    experiments_of(tmp_path, recipe).check_training(None)


def test_the_phi_recipe_packs_with_flash_attention():
    import yaml

    recipe = yaml.safe_load((ROOT / "config/recipes/phi35-mini-alpaca-recipe.yaml").read_text())
    assert recipe["training"]["packing"] and recipe["training"]["packing_strategy"] == "bfd"
    assert recipe["model"]["attn_implementation"] == "flash_attention_2"
