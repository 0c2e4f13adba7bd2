"""scripts/convert_to_messages.py: formats, the Alpaca rule, ids, the bad-input contract, cleaning."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

import convert_to_messages as c2m
from conftest import SAMPLE_DATA, run_script

GOOD = {"instruction": "Say hi", "input": "", "output": "Hi!"}
BAD_INPUTS = Path(__file__).parent / "bad_inputs"
CONTRACT = yaml.safe_load((BAD_INPUTS / "contract.yaml").read_text(encoding="utf-8"))
GENERATED = {"huge_record.json"}  # written by the test: 10 MB does not belong in git


def outputs(folder: Path) -> dict[str, Path]:
    return {
        "output": folder / "messages.jsonl",
        "rejects": folder / "rejects.jsonl",
        "summary": folder / "summary.json",
    }


def convert_file(source: Path, folder: Path, *extra: str, check: bool = True):
    paths = outputs(folder)
    result = run_script(
        "convert_to_messages.py",
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


def write_json(path: Path, records: object) -> Path:
    path.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    return path


def write_lines(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def last_line(result) -> str:
    return result.stderr.strip().splitlines()[-1]


# ---- the recipe's Alpaca rule ------------------------------------------------------------------------

RULE_CASES = [
    # (record, expected user content)
    ({"instruction": "Translate", "input": "hello", "output": "你好"}, "Translate\nhello"),
    ({"instruction": "Translate", "input": "", "output": "x"}, "Translate"),
    ({"instruction": "Translate", "input": "  \n\t", "output": "x"}, "Translate"),
    ({"instruction": "Translate", "output": "x"}, "Translate"),
    ({"instruction": "翻译", "input": "\n two words ", "output": "x"}, "翻译\n\n two words "),
]


def test_conversion_rule_script(tmp_path: Path) -> None:
    source = write_json(tmp_path / "in.json", [record for record, _ in RULE_CASES])
    _, paths = convert_file(source, tmp_path / "out")
    lines = read_lines(paths["output"])
    assert [line["source_index"] for line in lines] == list(range(len(RULE_CASES)))
    for line, (record, user) in zip(lines, RULE_CASES, strict=True):
        assert line["messages"] == [
            {"role": "user", "content": user},
            {"role": "assistant", "content": record["output"]},
        ]
        assert "extra" not in line
    summary = json.loads(paths["summary"].read_text(encoding="utf-8"))
    assert (summary["read"], summary["kept"], summary["rejected"]) == (5, 5, 0)
    assert summary["kept_with_input"] == 2
    assert summary["format"] == "alpaca" and summary["format_chosen"].startswith("detected")


@pytest.mark.parametrize(("record", "user"), RULE_CASES)
def test_to_messages(record: dict, user: str) -> None:
    assert c2m.to_messages(record) == [
        {"role": "user", "content": user},
        {"role": "assistant", "content": record["output"]},
    ]


def test_ids_are_stable(tmp_path: Path) -> None:
    records = [
        {"instruction": f"Task {i}", "input": "x" if i % 2 else "", "output": f"Answer {i}"} for i in range(6)
    ]
    first = read_lines(convert_file(write_json(tmp_path / "a.json", records), tmp_path / "a")[1]["output"])
    again = read_lines(convert_file(write_json(tmp_path / "b.json", records), tmp_path / "b")[1]["output"])
    reordered = read_lines(
        convert_file(write_json(tmp_path / "c.json", records[::-1]), tmp_path / "c")[1]["output"]
    )
    ids = [line["id"] for line in first]
    assert ids == [line["id"] for line in again]
    assert len(set(ids)) == len(ids)
    # An id depends on the conversation, not on its position in the file.
    assert {tuple(map(json.dumps, r["messages"])): r["id"] for r in first} == {
        tuple(map(json.dumps, r["messages"])): r["id"] for r in reordered
    }
    assert [r["id"] for r in c2m.convert(records).kept] == ids


def test_bundled_sample_converts_cleanly(tmp_path: Path, sample_records: list) -> None:
    recipe = yaml.safe_load(
        (SAMPLE_DATA.parents[2] / "config/recipes/smollm2-135m-alpaca-sample.yaml").read_text(
            encoding="utf-8"
        )
    )
    flags = ["--trim-whitespace", "--drop-duplicates", recipe["data"]["drop_duplicates"]]
    for placeholder in recipe["data"]["placeholder_inputs"]:
        flags += ["--placeholder-inputs", placeholder]
    _, paths = convert_file(SAMPLE_DATA, tmp_path, *flags)
    summary = json.loads(paths["summary"].read_text(encoding="utf-8"))
    assert summary["rejected"] == 0
    assert summary["read"] == summary["kept"] == len(sample_records)
    assert summary["kept_with_input"] == sum(1 for r in sample_records if r["input"].strip())
    assert summary["trimmed"] == summary["placeholder_inputs_emptied"] == 0, "the sample needs no cleaning"
    assert paths["rejects"].read_text(encoding="utf-8") == ""
    lines = read_lines(paths["output"])
    assert len({line["id"] for line in lines}) == len(lines)


# ---- formats -----------------------------------------------------------------------------------------

CONVERSATION = [
    {"role": "system", "content": "Answer briefly."},
    {"role": "user", "content": "What is 2 + 2?"},
    {"role": "assistant", "content": "4"},
    {"role": "user", "content": "And times 3?"},
    {"role": "assistant", "content": "12"},
]
SHAREGPT_ROLES = {"system": "system", "user": "human", "assistant": "gpt"}


def as_sharegpt(messages: list[dict]) -> dict:
    return {"conversations": [{"from": SHAREGPT_ROLES[m["role"]], "value": m["content"]} for m in messages]}


@pytest.mark.parametrize("container", ["json", "jsonl"])
@pytest.mark.parametrize("fmt", ["sharegpt", "messages"])
def test_multi_turn_formats_stay_multi_turn(tmp_path: Path, fmt: str, container: str) -> None:
    single = CONVERSATION[1:3]
    records = [{"messages": CONVERSATION}, {"messages": single}]
    if fmt == "sharegpt":
        records = [as_sharegpt(r["messages"]) for r in records]
    writer = write_json if container == "json" else write_lines
    source = writer(tmp_path / f"chat.{container}", records)
    for chosen in ("auto", fmt):
        result, paths = convert_file(source, tmp_path / chosen, "--format", chosen)
        lines = read_lines(paths["output"])
        assert [line["messages"] for line in lines] == [CONVERSATION, single]
        summary = json.loads(paths["summary"].read_text(encoding="utf-8"))
        assert summary["format"] == fmt
        assert (summary["kept_multi_turn"], summary["kept_with_system"]) == (1, 1)
        how = (
            f"detected: 2 of 2 records have '{c2m.FORMAT_MARKERS[fmt][0]}'"
            if chosen == "auto"
            else "configured"
        )
        assert f"format {fmt} ({how}" in result.stderr


def test_the_same_content_gives_the_same_messages_in_every_format(tmp_path: Path) -> None:
    alpaca = [{"instruction": "Translate", "input": "hello", "output": "你好"}, GOOD]
    messages = [{"messages": c2m.to_messages(r)} for r in alpaca]
    files = {
        "alpaca": write_json(tmp_path / "a.json", alpaca),
        "alpaca_jsonl": write_lines(tmp_path / "a.jsonl", alpaca),
        "sharegpt": write_json(tmp_path / "s.json", [as_sharegpt(r["messages"]) for r in messages]),
        "messages": write_lines(tmp_path / "m.jsonl", messages),
    }
    results = {}
    for fmt, source in files.items():
        result, paths = convert_file(source, tmp_path / fmt)
        assert f"format {fmt} (detected" in result.stderr, result.stderr
        results[fmt] = paths["output"].read_bytes()
    assert len(set(results.values())) == 1, "ids and messages do not depend on the file format"


def test_extra_keys_are_kept_aside(tmp_path: Path) -> None:
    alpaca = [{**GOOD, "id": "a-1", "category": "greeting", "history": []}]
    sharegpt = [
        {
            "id": "s-1",
            "conversations": [
                {"from": "human", "value": "Hi", "weight": 0},
                {"from": "gpt", "value": "Hello", "weight": 1},
            ],
        }
    ]
    _, a = convert_file(write_json(tmp_path / "a.json", alpaca), tmp_path / "a")
    _, s = convert_file(write_json(tmp_path / "s.json", sharegpt), tmp_path / "s")
    (a_line,) = read_lines(a["output"])
    (s_line,) = read_lines(s["output"])
    assert a_line["extra"] == {"id": "a-1", "category": "greeting", "history": []}
    assert s_line["extra"] == {
        "id": "s-1",
        "conversations[0]": {"weight": 0},
        "conversations[1]": {"weight": 1},
    }
    assert s_line["messages"] == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
    ]
    assert json.loads(s["summary"].read_text())["kept_with_extra"] == 1


# ---- the bad-input corpus and its contract ---------------------------------------------------------


def corpus_file(name: str, folder: Path) -> Path:
    if name == "huge_record.json":
        huge = {
            "instruction": "Repeat the letter x ten million times.",
            "input": "",
            "output": "x" * 10_000_000,
        }
        return write_json(folder / name, [GOOD, huge, {**GOOD, "output": "Hello!"}])
    return BAD_INPUTS / name


def test_the_corpus_and_its_contract_match() -> None:
    files = {p.name for p in BAD_INPUTS.iterdir() if p.name != "contract.yaml"} | GENERATED
    assert files == set(CONTRACT)
    assert len(files) >= 15
    for name, entry in CONTRACT.items():
        assert ("fatal" in entry) != ("ok" in entry), f"{name}: exactly one of fatal / ok"
        assert "recoverable" not in entry or "fatal" in entry, name


def check_result(paths: dict[str, Path], expected: dict, summary_keys: dict) -> None:
    summary = json.loads(paths["summary"].read_text(encoding="utf-8"))
    rejects = read_lines(paths["rejects"])
    kept = read_lines(paths["output"])
    assert summary["read"] == summary["kept"] + summary["rejected"]
    assert (summary["kept"], summary["rejected"]) == (len(kept), len(rejects))
    assert summary["rejected"] == summary["rejected_invalid"] + summary["rejected_duplicate"]
    assert len(kept) == expected["kept"]
    assert len(rejects) == len(expected["rejected"])
    for reject, (index, field, reason) in zip(rejects, expected["rejected"], strict=True):
        assert (reject["source_index"], reject["field"]) == (index, field)
        assert reason in reject["reason"]
        assert "record" in reject
    assert sorted(r["source_index"] for r in kept + rejects) == list(range(summary["read"]))
    for key, value in summary_keys.items():
        assert summary[key] == value, key


@pytest.mark.parametrize("name", sorted(CONTRACT))
def test_bad_input_contract(name: str, tmp_path: Path) -> None:
    entry = CONTRACT[name]
    source = corpus_file(name, tmp_path)
    flags = [str(flag) for flag in entry.get("flags", [])]
    result, paths = convert_file(source, tmp_path / "strict", *flags, check=False)
    if "ok" in entry:
        assert result.returncode == 0, result.stderr[-2000:]
        check_result(paths, entry["ok"], entry.get("summary", {}))
        return
    assert result.returncode != 0
    message = last_line(result)
    assert " - ERROR - " in message and "Traceback" not in result.stderr
    assert str(source) in message
    for part in entry["fatal"]:
        assert part in message, f"{part!r} not in {message!r}"
    assert not any(path.exists() for path in paths.values()), "a failed run leaves no output"
    tolerant, paths = convert_file(
        source, tmp_path / "tolerant", *flags, "--max-rejected-fraction", "1", check=False
    )
    if "recoverable" not in entry:
        assert tolerant.returncode != 0, "a problem with the whole file stays fatal"
        return
    assert tolerant.returncode == 0, tolerant.stderr[-2000:]
    check_result(paths, entry["recoverable"], entry.get("summary", {}))


@pytest.mark.parametrize(("fraction", "ok"), [("0.5", True), ("0.25", True), ("0.2", False)])
def test_max_rejected_fraction(tmp_path: Path, fraction: str, ok: bool) -> None:
    bad = {"instruction": "x", "input": ""}
    records = [GOOD, bad, {"instruction": "Q", "input": "ctx", "output": "A"}, {**GOOD, "output": "Hello"}]
    source = write_json(tmp_path / "in.json", records)
    result, paths = convert_file(source, tmp_path / "out", "--max-rejected-fraction", fraction, check=False)
    if not ok:
        assert result.returncode != 0
        assert "record 1" in last_line(result) and "25%" not in last_line(result)
        assert not any(path.exists() for path in paths.values())
        return
    assert result.returncode == 0, result.stderr
    check_result(paths, {"kept": 3, "rejected": [[1, "output", "missing"]]}, {"rejected_invalid": 1})


def test_duplicates_do_not_count_against_the_tolerance(tmp_path: Path) -> None:
    source = write_json(tmp_path / "in.json", [GOOD] * 5)
    result, paths = convert_file(source, tmp_path / "out", "--drop-duplicates", "exact")
    assert result.returncode == 0
    check_result(paths, {"kept": 1, "rejected": [[i, "<record>", "duplicate"] for i in range(1, 5)]}, {})


def test_cleaning_is_off_unless_asked_for(tmp_path: Path) -> None:
    """Without the flags the recipe's rule applies as written: a placeholder input is appended, text kept."""
    records = [{"instruction": " Name a colour. ", "input": "No input", "output": "Blue."}] * 2
    _, paths = convert_file(write_json(tmp_path / "in.json", records), tmp_path / "out")
    lines = read_lines(paths["output"])
    assert [line["messages"][0]["content"] for line in lines] == [" Name a colour. \nNo input"] * 2
    summary = json.loads(paths["summary"].read_text())
    assert (summary["trimmed"], summary["placeholder_inputs_emptied"], summary["rejected"]) == (0, 0, 0)
    assert summary["normalisations"] == {
        "trim_whitespace": False,
        "placeholder_inputs": [],
        "drop_duplicates": "none",
        "max_record_chars": 0,
    }


def test_near_duplicates_are_not_exact_duplicates() -> None:
    records = json.loads((BAD_INPUTS / "near_duplicates.json").read_text(encoding="utf-8"))
    exact = c2m.convert(records, options=c2m.Options(drop_duplicates="exact"))
    near = c2m.convert(records, options=c2m.Options(drop_duplicates="near"))
    assert (len(exact.kept), len(near.kept)) == (4, 2)


def test_detection_goes_by_most_records(tmp_path: Path) -> None:
    loaded = c2m.Loaded([{"output": "no instruction"}, GOOD, GOOD, {"conversations": []}], "json")
    assert c2m.resolve_format(tmp_path, loaded, "auto") == (
        "alpaca",
        "detected: 3 of 4 records have 'instruction' or 'output'",
    )
    tie = c2m.Loaded([GOOD, {"messages": []}], "jsonl", [1, 2])
    with pytest.raises(c2m.InputError, match="as many records look like"):
        c2m.resolve_format(tmp_path, tie, "auto")
    assert c2m.resolve_format(tmp_path, tie, "messages") == ("messages", "configured")
