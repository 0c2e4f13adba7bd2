"""scripts/apply_chat_template.py: text, prompt and completion rendered with the model's own template."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from apply_chat_template import render
from conftest import run_script
from convert_to_messages import convert

# What each tiny model's template (alpaca_lora.testing) puts before the answer.
GENERATION_PROMPT = {"tiny_llama": "<|im_start|>assistant\n", "tiny_phi3": "<|assistant|>\n"}

_TOKENIZERS: dict[Path, object] = {}


def load_tokenizer(folder: Path):
    if folder not in _TOKENIZERS:
        from transformers import AutoTokenizer

        _TOKENIZERS[folder] = AutoTokenizer.from_pretrained(folder)
    return _TOKENIZERS[folder]


@pytest.fixture(params=sorted(GENERATION_PROMPT))
def model(request) -> tuple[str, Path]:
    return request.param, request.getfixturevalue(request.param)


@pytest.fixture(scope="module")
def records(sample_records: list) -> list[dict]:
    """A few converted sample records, with and without an input, in both languages."""
    with_input = [r for r in sample_records if r["input"].strip()][:3]
    without_input = [r for r in sample_records if not r["input"].strip()][:3]
    converted = convert(with_input + without_input)
    assert not converted.rejected
    return converted.kept


def write_lines(path: Path, lines: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in lines), encoding="utf-8")
    return path


def test_script_output(model: tuple[str, Path], records: list[dict], tmp_path: Path) -> None:
    name, folder = model
    output = tmp_path / "templated.jsonl"
    run_script(
        "apply_chat_template.py",
        "--model",
        folder,
        "--input",
        write_lines(tmp_path / "in.jsonl", records),
        "--output",
        output,
    )
    lines = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == len(records)
    tokenizer = load_tokenizer(folder)
    for line, record in zip(lines, records, strict=True):
        messages = record["messages"]
        assert line["id"] == record["id"]
        assert line["messages"] == messages
        assert line["text"] == tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=False
        )
        assert line["text"] == line["prompt"] + line["completion"]
        assert line["prompt"].endswith(GENERATION_PROMPT[name])
        assert line["completion"].startswith(messages[-1]["content"])
        assert messages[0]["content"] in line["prompt"]
        assert messages[0]["content"] not in line["completion"]


def test_multi_turn_scores_only_the_last_answer(model: tuple[str, Path]) -> None:
    name, folder = model
    messages = [
        {"role": "user", "content": "First question"},
        {"role": "assistant", "content": "First answer"},
        {"role": "user", "content": "第二个问题"},
        {"role": "assistant", "content": "第二个回答"},
    ]
    rendered = render(load_tokenizer(folder), {"id": "multi", "messages": messages})
    assert rendered["text"] == rendered["prompt"] + rendered["completion"]
    assert rendered["prompt"].endswith(GENERATION_PROMPT[name])
    assert "First answer" in rendered["prompt"] and "第二个问题" in rendered["prompt"]
    assert rendered["completion"].startswith("第二个回答")
    assert "First answer" not in rendered["completion"]


def test_last_message_must_be_the_assistants(tiny_llama: Path, tmp_path: Path) -> None:
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    bad = {"id": "no-answer", "messages": [*messages, {"role": "user", "content": "And?"}]}
    with pytest.raises(ValueError, match="no-answer"):
        render(load_tokenizer(tiny_llama), bad)
    output = tmp_path / "templated.jsonl"
    good = {"id": "fine", "messages": messages}
    result = run_script(
        "apply_chat_template.py",
        "--model",
        tiny_llama,
        "--input",
        write_lines(tmp_path / "in.jsonl", [good, bad]),
        "--output",
        output,
        check=False,
    )
    assert result.returncode != 0
    assert "no-answer" in result.stderr
    assert not output.exists()
