"""Checks on the bundled Alpaca sample, data/raw/alpaca_zh_en_sample.json."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest

from conftest import SAMPLE_DATA

CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
PYTHON_FENCE = re.compile(r"```python\n(.*?)```", re.DOTALL)
RECIPE_INSTRUCTION = "写一个Python函数计算斐波那契数列"

# Loaded at import so that the fenced-code test can be parametrised per record.
_RECORDS = json.loads(SAMPLE_DATA.read_text(encoding="utf-8"))
_WITH_PYTHON = [
    i for i, r in enumerate(_RECORDS) if isinstance(r, dict) and "```python" in r.get("output", "")
]


def stated_count(pattern: str) -> int:
    """A count data/raw/README.md states, e.g. "320 instruction records"."""
    text = " ".join((SAMPLE_DATA.parent / "README.md").read_text(encoding="utf-8").split())
    match = re.search(pattern, text)
    assert match, f"data/raw/README.md no longer states {pattern!r}"
    return int(match.group(1))


def is_chinese(record: dict) -> bool:
    return bool(CJK.search(record["instruction"]))


def test_the_counts_the_readme_states(sample_records: list) -> None:
    assert isinstance(sample_records, list)
    assert len(sample_records) == stated_count(r"(\d+) instruction records") == 320
    with_input = sum(1 for r in sample_records if r["input"].strip())
    assert with_input == stated_count(r"(\d+) have a non-empty `input`") == 133
    chinese = sum(1 for r in sample_records if is_chinese(r))
    assert chinese == stated_count(r"(\d+) in Simplified Chinese") == 170
    assert len(sample_records) - chinese == stated_count(r"(\d+) in English") == 150


def test_record_fields_are_strings(sample_records: list) -> None:
    for index, record in enumerate(sample_records):
        assert isinstance(record, dict), f"record {index}"
        for field in ("instruction", "input", "output"):
            assert isinstance(record.get(field), str), f"record {index}: {field}"
        assert record["instruction"].strip(), f"record {index}: empty instruction"
        assert record["output"].strip(), f"record {index}: empty output"


def test_the_english_records_are_english(sample_records: list) -> None:
    english = [r for r in sample_records if not is_chinese(r)]
    assert all(re.search("[A-Za-z]{3}", r["instruction"]) for r in english)


def test_recipe_example_is_present(sample_records: list) -> None:
    matches = [r for r in sample_records if r["instruction"] == RECIPE_INSTRUCTION]
    assert len(matches) == 1
    assert matches[0]["input"] == ""
    assert re.search(r"\bdef fibonacci\(", matches[0]["output"])


def test_held_out_probe_is_absent(sample_records: list) -> None:
    for index, record in enumerate(sample_records):
        text = json.dumps(record, ensure_ascii=False).lower()
        assert "阶乘" not in text and "factorial" not in text, f"record {index} mentions the held-out probe"


def test_some_outputs_have_python_code() -> None:
    assert len(_WITH_PYTHON) >= 10


@pytest.mark.parametrize("index", _WITH_PYTHON, ids=[f"record{i}" for i in _WITH_PYTHON])
def test_python_blocks_compile(index: int) -> None:
    output = _RECORDS[index]["output"]
    blocks = PYTHON_FENCE.findall(output)
    assert len(blocks) == output.count("```python"), "unterminated ```python fence"
    for number, source in enumerate(blocks):
        compile(source, f"record{index}-block{number}", "exec")


def test_no_duplicate_instruction_input_pairs(sample_records: list) -> None:
    counts = Counter((r["instruction"], r["input"]) for r in sample_records)
    assert [pair for pair, n in counts.items() if n > 1] == []
    # Pairs that differ only in surrounding whitespace become the same user turn.
    stripped = Counter((r["instruction"].strip(), r["input"].strip()) for r in sample_records)
    assert [pair for pair, n in stripped.items() if n > 1] == []
