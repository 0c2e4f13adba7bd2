"""scripts/alpaca_to_messages.py: the recipe's conversion rule, ids, validation and error reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import alpaca_to_messages as a2m
from conftest import SAMPLE_DATA, run_script

GOOD = {"instruction": "Say hi", "input": "", "output": "Hi!"}


def outputs(folder: Path) -> dict[str, Path]:
    return {
        "output": folder / "messages.jsonl",
        "rejects": folder / "rejects.jsonl",
        "summary": folder / "summary.json",
    }


def convert_file(source: Path, folder: Path, *extra: str, check: bool = True):
    paths = outputs(folder)
    result = run_script(
        "alpaca_to_messages.py",
        "--input",
        source,
        "--output",
        paths["output"],
        "--rejects",
        paths["rejects"],
        "--summary",
        paths["summary"],
        *extra,
        check=check,
    )
    return result, paths


def write_alpaca(path: Path, records: object) -> Path:
    path.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    return path


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


RULE_CASES = [
    # (record, expected user content)
    ({"instruction": "Translate", "input": "hello", "output": "你好"}, "Translate\nhello"),
    ({"instruction": "Translate", "input": "", "output": "x"}, "Translate"),
    ({"instruction": "Translate", "input": "  \n\t", "output": "x"}, "Translate"),
    ({"instruction": "Translate", "output": "x"}, "Translate"),
    ({"instruction": "翻译", "input": "\n two words ", "output": "x"}, "翻译\n\n two words "),
]


def test_conversion_rule_script(tmp_path: Path) -> None:
    source = write_alpaca(tmp_path / "in.json", [record for record, _ in RULE_CASES])
    _, paths = convert_file(source, tmp_path / "out")
    lines = read_lines(paths["output"])
    assert [line["source_index"] for line in lines] == list(range(len(RULE_CASES)))
    for line, (record, user) in zip(lines, RULE_CASES, strict=True):
        assert line["messages"] == [
            {"role": "user", "content": user},
            {"role": "assistant", "content": record["output"]},
        ]
    summary = json.loads(paths["summary"].read_text(encoding="utf-8"))
    assert (summary["read"], summary["kept"], summary["rejected"]) == (5, 5, 0)
    assert summary["kept_with_input"] == 2


@pytest.mark.parametrize(("record", "user"), RULE_CASES)
def test_to_messages(record: dict, user: str) -> None:
    assert a2m.to_messages(record) == [
        {"role": "user", "content": user},
        {"role": "assistant", "content": record["output"]},
    ]


def test_ids_are_stable(tmp_path: Path) -> None:
    records = [
        {"instruction": f"Task {i}", "input": "x" if i % 2 else "", "output": f"Answer {i}"} for i in range(6)
    ]
    first = read_lines(convert_file(write_alpaca(tmp_path / "a.json", records), tmp_path / "a")[1]["output"])
    again = read_lines(convert_file(write_alpaca(tmp_path / "b.json", records), tmp_path / "b")[1]["output"])
    reordered = read_lines(
        convert_file(write_alpaca(tmp_path / "c.json", records[::-1]), tmp_path / "c")[1]["output"]
    )
    ids = [line["id"] for line in first]
    assert ids == [line["id"] for line in again]
    assert len(set(ids)) == len(ids)
    # An id depends on the conversation, not on its position in the file.
    assert {tuple(map(json.dumps, r["messages"])): r["id"] for r in first} == {
        tuple(map(json.dumps, r["messages"])): r["id"] for r in reordered
    }
    direct, _ = a2m.convert(records, tmp_path / "a.json")
    assert [r["id"] for r in direct] == ids


RECORD_ERRORS = [
    # (bad record at index 2, field the error must name)
    ({"instruction": "x", "input": ""}, "output"),
    ({"instruction": 5, "input": "", "output": "y"}, "instruction"),
    ({"instruction": " \n\t ", "input": "", "output": "y"}, "instruction"),
    ({"instruction": "x", "input": 3, "output": "y"}, "input"),
    ({"instruction": "x", "input": "", "output": ""}, "output"),
]


@pytest.mark.parametrize(("bad", "field"), RECORD_ERRORS)
def test_bad_record_is_fatal_by_default(tmp_path: Path, bad: dict, field: str) -> None:
    source = write_alpaca(tmp_path / "bad.json", [GOOD, GOOD, bad, GOOD])
    result, paths = convert_file(source, tmp_path / "out", check=False)
    assert result.returncode != 0
    message = result.stderr.strip().splitlines()[-1]
    assert str(source) in message
    assert "record 2" in message
    assert repr(field) in message or f"field {field}" in message
    assert not any(path.exists() for path in paths.values())


def test_record_not_an_object_is_fatal(tmp_path: Path) -> None:
    source = write_alpaca(tmp_path / "bad.json", [GOOD, GOOD, ["Say hi", "", "Hi!"]])
    result, paths = convert_file(source, tmp_path / "out", check=False)
    assert result.returncode != 0
    message = result.stderr.strip().splitlines()[-1]
    assert str(source) in message and "record 2" in message and "object" in message
    assert not any(path.exists() for path in paths.values())


def malformed_json() -> tuple[bytes, str]:
    lines = [
        "[",
        '  {"instruction": "a", "input": "", "output": "b"},',
        '  {"instruction": "c" "output": "d"}',
        "]",
    ]
    column = lines[2].index('"output"') + 1
    return "\n".join(lines).encode(), f"line 3, column {column}"


def non_utf8() -> tuple[bytes, str]:
    raw = '[{"instruction": "café", "input": "", "output": "ok"}]'.encode("latin-1")
    position = raw.index("é".encode("latin-1"))
    return raw, f"byte {position}"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (json.dumps({"instruction": "x", "output": "y"}).encode(), "list"),
        malformed_json(),
        non_utf8(),
    ],
    ids=["not-a-list", "malformed-json", "not-utf8"],
)
def test_unusable_file_is_fatal(tmp_path: Path, raw: bytes, expected: str) -> None:
    source = tmp_path / "broken.json"
    source.write_bytes(raw)
    result, paths = convert_file(source, tmp_path / "out", check=False)
    assert result.returncode != 0
    message = result.stderr.strip().splitlines()[-1]
    assert str(source) in message
    assert expected in message
    assert not any(path.exists() for path in paths.values())
    with pytest.raises(a2m.InputError, match=expected):
        a2m.load_alpaca(source)


@pytest.mark.parametrize(("fraction", "ok"), [("0.5", True), ("0.25", True), ("0.2", False)])
def test_max_rejected_fraction(tmp_path: Path, fraction: str, ok: bool) -> None:
    bad = {"instruction": "x", "input": ""}
    records = [GOOD, bad, {"instruction": "Q", "input": "ctx", "output": "A"}, {**GOOD, "output": "Hello"}]
    source = write_alpaca(tmp_path / "in.json", records)
    result, paths = convert_file(source, tmp_path / "out", "--max-rejected-fraction", fraction, check=False)
    if not ok:
        assert result.returncode != 0
        assert "record 1" in result.stderr.strip().splitlines()[-1]
        assert not any(path.exists() for path in paths.values())
        return
    assert result.returncode == 0, result.stderr
    rejects = read_lines(paths["rejects"])
    assert len(rejects) == 1
    assert rejects[0]["source_index"] == 1
    assert rejects[0]["field"] == "output"
    assert isinstance(rejects[0]["reason"], str) and rejects[0]["reason"]
    assert [line["source_index"] for line in read_lines(paths["output"])] == [0, 2, 3]
    summary = json.loads(paths["summary"].read_text(encoding="utf-8"))
    assert summary["read"] == 4 == summary["kept"] + summary["rejected"]
    assert summary["rejected"] == 1


def test_bundled_sample_converts_cleanly(tmp_path: Path, sample_records: list) -> None:
    _, paths = convert_file(SAMPLE_DATA, tmp_path)
    summary = json.loads(paths["summary"].read_text(encoding="utf-8"))
    assert summary["rejected"] == 0
    assert summary["read"] == summary["kept"] == len(sample_records)
    assert summary["kept_with_input"] == sum(1 for r in sample_records if r["input"].strip())
    assert paths["rejects"].read_text(encoding="utf-8") == ""
    lines = read_lines(paths["output"])
    assert len({line["id"] for line in lines}) == len(lines)
