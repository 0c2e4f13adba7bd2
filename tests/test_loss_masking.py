"""Answer-only loss, on the trainer's real batch: what TRL scores for the records the pipeline feeds it.

The batch comes from train_lora.build_trainer (the step's own code) and TRL's collator, on templated records
rendered by apply_chat_template.render with each tiny model's chat template: ChatML (like SmolLM2) and Phi-3.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from apply_chat_template import render
from conftest import SAMPLE_DATA

# The end-of-turn text each tiny template closes an assistant turn with.
END_OF_TURN = {"tiny_llama": "<|im_end|>", "tiny_phi3": "<|end|>"}
MULTI_TURN = {
    "id": "multi",
    "messages": [
        {"role": "user", "content": "Name a prime number."},
        {"role": "assistant", "content": "Seven is prime."},
        {"role": "user", "content": "And an even one?"},
        {"role": "assistant", "content": "Two is the only even prime."},
    ],
}


def single_turn(count: int) -> list[dict]:
    records = json.loads(SAMPLE_DATA.read_text(encoding="utf-8"))[:count]
    return [
        {
            "id": str(index),
            "messages": [
                {"role": "user", "content": f"{r['instruction']}\n{r['input']}".strip()},
                {"role": "assistant", "content": r["output"]},
            ],
        }
        for index, r in enumerate(records)
    ]


def first_batch(model: Path, records: list[dict], tmp_path: Path, completion_only_loss: bool):
    """The tokenizer, the templated records, and the first training batch the step's trainer builds."""
    from transformers import AutoTokenizer

    import train_lora

    tokenizer = AutoTokenizer.from_pretrained(model)
    templated = [render(tokenizer, record) for record in records]
    data = tmp_path / "train.templated.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in templated), encoding="utf-8")
    settings = {
        "lora": {"r": 2, "lora_alpha": 4, "lora_dropout": 0.0, "target_modules": "all-linear"},
        "training": {
            "max_steps": 1,
            "per_device_train_batch_size": len(records),
            "max_length": 512,
            "packing": False,
            "bf16": False,
            "seed": 1,
            "completion_only_loss": completion_only_loss,
            "train_sampling_strategy": "random",
        },
    }
    args = argparse.Namespace(model=str(model), train=str(data), eval=str(data))
    loaded = train_lora.load_model(settings, args)
    trainer = train_lora.build_trainer(loaded, settings, args, tmp_path / "checkpoints")
    batch = next(iter(trainer.get_train_dataloader()))
    return tokenizer, templated, batch, trainer


def rows(tokenizer, batch) -> dict[str, tuple[list[int], list[int]]]:
    """Each row's (token ids, labels) without padding, keyed by its decoded text (the batch is shuffled)."""
    found = {}
    for ids, labels, mask in zip(batch["input_ids"], batch["labels"], batch["attention_mask"], strict=True):
        kept = mask.bool()
        ids, labels = ids[kept].tolist(), labels[kept].tolist()
        found[tokenizer.decode(ids)] = (ids, labels)
    return found


@pytest.mark.parametrize("name", sorted(END_OF_TURN))
def test_only_the_answer_and_its_end_of_turn_are_scored(name, request, tmp_path):
    import train_lora

    model = request.getfixturevalue(name)
    tokenizer, templated, batch, _ = first_batch(model, [*single_turn(3), MULTI_TURN], tmp_path, True)
    by_text = rows(tokenizer, batch)
    assert len(by_text) == 4
    for record in templated:
        prompt, completion = train_lora.loss_pair(record, tokenizer.eos_token)
        ids, labels = by_text[
            tokenizer.decode(tokenizer(prompt + completion, add_special_tokens=False).input_ids)
        ]
        prompt_length = len(tokenizer(prompt, add_special_tokens=False).input_ids)
        assert all(label == -100 for label in labels[:prompt_length]), "a prompt token is scored"
        scored = [token for token, label in zip(ids, labels, strict=True) if label != -100]
        assert scored == ids[prompt_length:], "every answer token must be scored"
        answer = tokenizer.decode(scored)
        assert answer.startswith(record["messages"][-1]["content"][:20])
        assert END_OF_TURN[name] in answer, "the end-of-turn token must be learned"
        if record["id"] == "multi":
            # The first exchange is context: its answer is in the prompt, never scored.
            assert "Seven is prime." in prompt and "Seven" not in answer


@pytest.mark.parametrize("name", sorted(END_OF_TURN))
def test_completion_only_loss_off_scores_the_whole_text(name, request, tmp_path):
    model = request.getfixturevalue(name)
    tokenizer, _, batch, _ = first_batch(model, single_turn(2), tmp_path, False)
    for ids, labels in rows(tokenizer, batch).values():
        assert labels[1:] == ids[1:] and len(ids) > 20


def test_evaluation_scores_what_trl_scores_with_a_bos_adding_tokenizer(tmp_path):
    """A tokenizer that puts a BOS token before every text (as Llama's and Gemma's do): the evaluation's
    per-record loss, summed over the batch's answer tokens, equals TRL's own loss on the trainer's batch."""
    import torch

    import evaluate
    from alpaca_lora.testing import BOS, build_tiny_model
    from conftest import SAMPLE_DATA as data

    model_dir = build_tiny_model(tmp_path / "bos-model", data, bos=True)
    records = single_turn(4)
    tokenizer, templated, batch, trainer = first_batch(model_dir, records, tmp_path, True)
    bos = tokenizer.convert_tokens_to_ids(BOS)
    starts = [
        ids[mask.bool()][0].item()
        for ids, mask in zip(batch["input_ids"], batch["attention_mask"], strict=True)
    ]
    assert starts == [bos] * len(records), "TRL's batch starts every record with the BOS token"
    trainer.model.eval()
    with torch.no_grad():
        trl_loss = trainer.compute_loss(trainer.model, dict(batch)).item()
    found = evaluate.answer_loss(tokenizer, trainer.model, templated, batch_size=2, max_length=512)
    assert found["answer_tokens"] == int((batch["labels"][:, 1:] != -100).sum())
    assert found["eval_loss"] == pytest.approx(trl_loss, rel=1e-5)
