"""alpaca_lora.common: loss_pair, atomic writes, JSON Lines reading."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from alpaca_lora.common import atomic_directory, atomic_path, loss_pair, read_jsonl, write_json, write_jsonl

PROMPT = "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


@pytest.mark.parametrize(
    ("completion", "eos", "expected"),
    [
        ("Hello<|im_end|>\n", "<|im_end|>", "Hello<|im_end|>"),
        ("Hello<|im_end|> \n\t\n", "<|im_end|>", "Hello<|im_end|>"),
        ("  Hello \n<|im_end|>\n", "<|im_end|>", "  Hello \n<|im_end|>"),
        ("Hello<|im_end|>", "<|im_end|>", "Hello<|im_end|>"),
        ("Hello\n", "<|im_end|>", "Hello\n"),
        ("Hello<|im_end|> and more\n", "<|im_end|>", "Hello<|im_end|> and more\n"),
        ("Hello<|end|>\n<|endoftext|>", "<|endoftext|>", "Hello<|end|>\n<|endoftext|>"),
        ("Hello<|end|>\n", "<|endoftext|>", "Hello<|end|>\n"),
        ("Hello<|im_end|>\n", None, "Hello<|im_end|>\n"),
        ("Hello<|im_end|>\n", "", "Hello<|im_end|>\n"),
    ],
)
def test_loss_pair(completion: str, eos: str | None, expected: str) -> None:
    prompt, trimmed = loss_pair({"prompt": PROMPT, "completion": completion, "text": "ignored"}, eos)
    assert prompt == PROMPT
    assert trimmed == expected


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_atomic_path_success(tmp_path: Path) -> None:
    target = tmp_path / "out" / "file.txt"
    with atomic_path(target) as temporary:
        temporary.write_text("done", encoding="utf-8")
        assert not target.exists()
    assert target.read_text(encoding="utf-8") == "done"
    assert listing(target.parent) == ["file.txt"]


@pytest.mark.parametrize("existing", [None, "old"])
def test_atomic_path_failure_leaves_nothing(tmp_path: Path, existing: str | None) -> None:
    target = tmp_path / "file.txt"
    if existing is not None:
        target.write_text(existing, encoding="utf-8")
    with pytest.raises(RuntimeError), atomic_path(target) as temporary:
        temporary.write_text("half", encoding="utf-8")
        raise RuntimeError("killed")
    if existing is None:
        assert listing(tmp_path) == []
    else:
        assert listing(tmp_path) == ["file.txt"]
        assert target.read_text(encoding="utf-8") == existing


@pytest.mark.parametrize("existing", [False, True])
def test_atomic_directory(tmp_path: Path, existing: bool) -> None:
    target = tmp_path / "model"
    if existing:
        target.mkdir()
        (target / "old.bin").write_text("old", encoding="utf-8")
    with pytest.raises(RuntimeError), atomic_directory(target) as temporary:
        (temporary / "new.bin").write_text("half", encoding="utf-8")
        raise RuntimeError("killed")
    assert listing(tmp_path) == (["model"] if existing else [])
    if existing:
        assert listing(target) == ["old.bin"]
    with atomic_directory(target) as temporary:
        (temporary / "new.bin").write_text("new", encoding="utf-8")
    assert listing(tmp_path) == ["model"]
    assert listing(target) == ["new.bin"]


def test_write_jsonl_failure_leaves_nothing(tmp_path: Path) -> None:
    def records() -> Iterator[dict]:
        yield {"a": 1}
        raise RuntimeError("generator failed")

    with pytest.raises(RuntimeError):
        write_jsonl(tmp_path / "out.jsonl", records())
    assert listing(tmp_path) == []
    assert write_jsonl(tmp_path / "out.jsonl", iter([{"a": "é"}, {"b": 2}])) == 2
    assert (tmp_path / "out.jsonl").read_text(encoding="utf-8") == '{"a":"é"}\n{"b":2}\n'


def test_write_json_failure_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        write_json(tmp_path / "out.json", {"bad": object()})
    assert listing(tmp_path) == []


def test_read_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text('{"a": 1}\n\n{"b": "中"}\n', encoding="utf-8")
    assert list(read_jsonl(path)) == [{"a": 1}, {"b": "中"}]


def test_read_jsonl_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text(
        json.dumps({"a": 1}) + "\n\n" + '{"b": 2\n' + json.dumps({"c": 3}) + "\n", encoding="utf-8"
    )
    records = read_jsonl(path)
    assert next(records) == {"a": 1}
    with pytest.raises(ValueError) as caught:
        next(records)
    message = str(caught.value)
    assert str(path) in message
    assert "line 3" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1e-4", 1e-4), ("5e-05", 5e-05), ("3.0e-4", 3e-4), ("-2E+3", -2000.0), ("0.5", 0.5), ("12", 12)],
)
def test_yaml_reads_numbers_as_yaml_1_2_does(text: str, expected: float) -> None:
    """PyYAML alone reads 1e-4 and 5e-05 (what json.dumps writes for 5e-5) as strings."""
    from alpaca_lora.common import load_yaml

    value = load_yaml(f"learning_rate: {text}\n")["learning_rate"]
    assert value == expected and type(value) is type(expected)
    assert load_yaml("version: '1e-4'\nname: e5\n") == {"version": "1e-4", "name": "e5"}
