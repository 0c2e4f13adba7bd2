"""scripts/convert_to_messages.py: formats, the Alpaca rule, ids, the bad-input contract, cleaning."""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

import convert_to_messages as c2m
from alpaca_lora.common import read_jsonl
from conftest import HUB_COMMIT, SAMPLE_DATA, run_script

GOOD = {"instruction": "Say hi", "input": "", "output": "Hi!"}
BAD_INPUTS = Path(__file__).parent / "bad_inputs"
CONTRACT = yaml.safe_load((BAD_INPUTS / "contract.yaml").read_text(encoding="utf-8"))


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
    """The records of a JSON Lines file: lines end at "\\n" only (texts may hold U+2028 and the like)."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line]


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
    assert c2m.convert(records).ids == ids


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
        how = f"detected: 2 of 2 records have '{c2m.MESSAGES_KEY[fmt]}'" if chosen == "auto" else "configured"
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
    alpaca = [{**GOOD, "id": "a-1", "category": "greeting", "tags": []}]
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
    assert a_line["extra"] == {"id": "a-1", "category": "greeting", "tags": []}
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


def make_huge_record(path: Path) -> None:
    huge = {"instruction": "Repeat the letter x ten million times.", "input": "", "output": "x" * 10_000_000}
    write_json(path, [GOOD, huge, {**GOOD, "output": "Hello!"}])


def make_deep(path: Path) -> None:
    """Arrays nested 100,000 levels deep in the second record: too deep for any JSON reader."""
    deep = "[" * 100_000 + "]" * 100_000
    records = [json.dumps(GOOD), f'{{"instruction": "x", "output": "y", "tree": {deep}}}', json.dumps(GOOD)]
    if path.suffix == ".jsonl":
        path.write_text("\n".join(records) + "\n", encoding="utf-8")
    else:
        path.write_text("[\n" + ",\n".join(records) + "\n]\n", encoding="utf-8")


def make_larger_than_memory(path: Path) -> None:
    with open(path, "wb") as handle:  # sparse: takes no disk space
        handle.truncate(2 * psutil.virtual_memory().total)


def make_parquet(path: Path) -> None:
    rows = {
        "alpaca_nulls.parquet": [
            {"instruction": "Name a colour.", "input": None, "output": "Blue.", "at": datetime(2024, 5, 1)},
            {"instruction": "Say hi", "input": "", "output": "Hi!", "at": datetime(2024, 5, 2)},
        ],
        "messages.parquet": [
            {
                "messages": [
                    {"role": "user", "content": "Hi", "tool_calls": None},
                    {"role": "assistant", "content": "Hello", "tool_calls": None},
                ]
            },
            {
                "messages": [
                    {"role": "user", "content": "Bye", "tool_calls": None},
                    {"role": "assistant", "content": "Ciao", "tool_calls": None},
                ]
            },
        ],
        "nan.parquet": [
            {**GOOD, "score": 0.5},
            {**GOOD, "output": "Hello", "score": float("nan")},
        ],
    }[path.name]
    pq.write_table(pa.Table.from_pylist(rows), path)


MADE = {  # cases the test writes: too big for git, or not regular files
    "huge_record.json": make_huge_record,
    "deep_nesting_unreadable.jsonl": make_deep,
    "deep_nesting_unreadable.json": make_deep,
    "folder.json": Path.mkdir,
    "missing.json": lambda path: None,
    "fifo.json": os.mkfifo,
    "device.json": lambda path: path.symlink_to("/dev/zero"),
    "larger_than_memory.json": make_larger_than_memory,
    "alpaca_nulls.parquet": make_parquet,
    "messages.parquet": make_parquet,
    "nan.parquet": make_parquet,
}


def corpus_file(name: str, entry: dict, folder: Path) -> Path:
    if name in MADE:
        MADE[name](folder / name)
        return folder / name
    return BAD_INPUTS / entry.get("file", name)


def test_the_corpus_and_its_contract_match() -> None:
    files = {p.name for p in BAD_INPUTS.iterdir() if p.name != "contract.yaml"}
    made = {name for name, entry in CONTRACT.items() if entry.get("made_by_test")}
    assert made == set(MADE)
    assert files == {entry.get("file", name) for name, entry in CONTRACT.items() if name not in made}
    assert len(CONTRACT) >= 60
    for name, entry in CONTRACT.items():
        assert sum(outcome in entry for outcome in ("fatal", "ok", "refused")) == 1, name
        assert "recoverable" not in entry or "fatal" in entry, name


def check_result(paths: dict[str, Path], expected: dict, entry: dict) -> None:
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
    for key, value in entry.get("summary", {}).items():
        assert summary[key] == value, key
    if "first_messages" in entry:
        assert kept[0]["messages"] == entry["first_messages"]


def case_paths(entry: dict, source: Path, folder: Path) -> dict[str, Path]:
    """The output paths of a case, some of them pointed at the input or at a place that cannot be written."""
    paths = outputs(folder)
    for role, target in entry.get("paths", {}).items():
        if target in ("input", *paths):
            paths[role] = source if target == "input" else paths[target]
        elif target == "a_folder":
            paths[role] = folder / "a folder"
            paths[role].mkdir(parents=True)
        elif target == "under_a_file":
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "a file").write_text("x")
            paths[role] = folder / "a file" / "rejects.jsonl"
        else:
            folder.mkdir(parents=True, exist_ok=True)
            paths[role] = folder / f"{target}.json"
            link = os.link if target == "hard_link_to_input" else os.symlink
            link(source.resolve(), paths[role])
    return paths


def run_case(source: Path, paths: dict[str, Path], *flags: str):
    arguments = ["--input", source] + [
        word for role, path in paths.items() for word in (f"--{role.replace('_', '-')}", path)
    ]
    return run_script("convert_to_messages.py", *arguments, *flags, check=False, timeout=120)


@pytest.mark.parametrize("name", sorted(CONTRACT))
def test_bad_input_contract(name: str, tmp_path: Path) -> None:
    """Each case ends as its contract says: no traceback, no hang, all outputs or none, counts that add up."""
    entry = CONTRACT[name]
    source = corpus_file(name, entry, tmp_path)
    before = source.read_bytes() if source.is_file() and source.stat().st_size < 10**8 else None
    flags = [str(flag) for flag in entry.get("flags", [])]
    paths = case_paths(entry, source, tmp_path / "strict")
    result = run_case(source, paths, *flags)
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    written = [path for role, path in outputs(tmp_path / "strict").items() if path.exists()]
    if "ok" in entry:
        assert result.returncode == 0, result.stderr[-2000:]
        check_result(paths, entry["ok"], entry)
        return
    assert not written, "a failed run leaves no output"
    if before is not None:
        assert source.read_bytes() == before, "the input is unchanged"
    if "refused" in entry:
        assert result.returncode == 2
        for part in entry["refused"]:
            assert part in result.stderr, f"{part!r} not in {result.stderr!r}"
        return
    assert result.returncode == 1
    message = last_line(result)
    assert " - ERROR - " in message
    assert str(paths.get(entry.get("names"), source)) in message
    for part in entry["fatal"]:
        assert part in message, f"{part!r} not in {message!r}"
    paths = case_paths(entry, source, tmp_path / "tolerant")
    tolerant = run_case(source, paths, *flags, "--max-rejected-fraction", "1")
    if "recoverable" not in entry:
        assert tolerant.returncode != 0, "a problem with the whole file stays fatal"
        return
    assert tolerant.returncode == 0, tolerant.stderr[-2000:]
    check_result(paths, entry["recoverable"], entry)


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
    check_result(
        paths, {"kept": 3, "rejected": [[1, "output", "missing"]]}, {"summary": {"rejected_invalid": 1}}
    )


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
    assert (len(exact.ids), len(near.ids)) == (4, 2)


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


# ---- reading back, several sources, Hugging Face datasets ---------------------------------------------


def test_output_reads_back_as_input(tmp_path: Path) -> None:
    """The step's own output, with U+2028 and friends in its texts, converts again to the same messages."""
    source = BAD_INPUTS / "line_separators.jsonl"
    _, first = convert_file(source, tmp_path / "first", "--max-rejected-fraction", "0.5")
    _, again = convert_file(first["output"], tmp_path / "again", "--format", "messages")
    assert [r["messages"] for r in read_lines(first["output"])] == [
        r["messages"] for r in read_lines(again["output"])
    ]
    assert [r["messages"] for r in read_jsonl(first["output"])] == [
        r["messages"] for r in read_lines(again["output"])
    ]


def convert_sources(folder: Path, sources: list[dict], *flags: str, check: bool = True):
    paths = outputs(folder)
    words = [word for source in sources for word in ("--source", json.dumps(source))]
    result = run_script(
        "convert_to_messages.py",
        *words,
        *[w for role, path in paths.items() for w in (f"--{role}", path)],
        *flags,
        check=check,
    )
    return result, paths


@pytest.fixture
def three_sources(tmp_path: Path) -> list[dict]:
    alpaca = [{"instruction": f"Task {i}", "input": "", "output": f"Answer {i}"} for i in range(10)]
    write_json(tmp_path / "a.json", alpaca)
    rows = [("Question", "Reply")] + [(f"Q{i}", f"R{i}") for i in range(5)] + [("Task 3", "Answer 3")]
    (tmp_path / "b.csv").write_text("".join(f"{q},{r}\n" for q, r in rows), encoding="utf-8")
    chats = [
        {"messages": [{"role": "user", "content": f"Hi {i}"}, {"role": "assistant", "content": f"Yo {i}"}]}
        for i in range(8)
    ]
    pq.write_table(pa.Table.from_pylist(chats), tmp_path / "c.parquet")
    return [
        {"path": str(tmp_path / "a.json")},
        {"path": str(tmp_path / "b.csv"), "columns": {"instruction": "Question", "output": "Reply"}},
        {"path": str(tmp_path / "c.parquet"), "format": "messages", "sample": 0.5},
    ]


def test_several_sources_mixed(tmp_path: Path, three_sources: list[dict]) -> None:
    _, paths = convert_sources(tmp_path / "one", three_sources, "--drop-duplicates", "exact", "--seed", "3")
    kept, rejects = read_lines(paths["output"]), read_lines(paths["rejects"])
    summary = json.loads(paths["summary"].read_text(encoding="utf-8"))
    assert [s["read"] for s in summary["sources"]] == [10, 6, 8]
    assert [s["kept"] for s in summary["sources"]] == [10, 5, 4]
    assert [s["sampled_out"] for s in summary["sources"]] == [0, 0, 4]
    assert [s["format"] for s in summary["sources"]] == ["alpaca", "alpaca", "messages"]
    assert summary["sources"][1]["mapping"]["columns"]["instruction"] == "Question"
    assert (summary["read"], summary["kept"], summary["rejected"], summary["sampled_out"]) == (24, 19, 1, 4)
    assert summary["read"] == summary["kept"] + summary["rejected"] + summary["sampled_out"]
    assert rejects == [
        {
            "source": 1,
            "source_index": 5,
            "line": 7,
            "kind": "duplicate",
            "field": "<record>",
            "reason": "exact duplicate of record 3 of source 0",
            "record": {"Question": "Task 3", "Reply": "Answer 3"},
        }
    ]
    assert [r["source"] for r in kept] == [0] * 10 + [1] * 5 + [2] * 4
    sampled = [r["source_index"] for r in kept if r["source"] == 2]
    assert sampled == sorted(sampled), "a sample keeps the source's order"
    _, again = convert_sources(tmp_path / "again", three_sources, "--drop-duplicates", "exact", "--seed", "3")
    assert again["output"].read_bytes() == paths["output"].read_bytes()
    others = set()
    for seed in range(4, 9):
        _, other = convert_sources(tmp_path / f"seed{seed}", three_sources, "--seed", str(seed))
        others.add(tuple(r["source_index"] for r in read_lines(other["output"]) if r["source"] == 2))
    assert len(others | {tuple(sampled)}) > 1, "the seed chooses the sample"


def test_a_bad_source_names_itself(tmp_path: Path, three_sources: list[dict]) -> None:
    three_sources[1]["columns"] = {}
    result, paths = convert_sources(tmp_path, three_sources, check=False)
    assert result.returncode == 1
    assert f"{three_sources[1]['path']}: cannot tell the format" in last_line(result)
    assert not any(path.exists() for path in paths.values())


def hub_source(revision: str = HUB_COMMIT, split: str = "train", repo_id: str = "tester/tiny-alpaca") -> dict:
    return {"hub": {"repo_id": repo_id, "revision": revision, "split": split}}


@pytest.mark.parametrize("revision", [HUB_COMMIT, "main"])
def test_hub_dataset_from_the_cache(tmp_path: Path, hub_cache: Path, revision: str) -> None:
    result, paths = convert_sources(tmp_path, [hub_source(revision)])
    summary = json.loads(paths["summary"].read_text(encoding="utf-8"))
    (source,) = summary["sources"]
    assert source["resolved_commit"] == HUB_COMMIT == summary["input_sha256"]
    assert source["hub"] == hub_source(revision)["hub"]
    assert (summary["read"], summary["kept"]) == (5, 5)
    assert summary["input"] == f"hf://datasets/tester/tiny-alpaca@{revision}:train"
    kept = read_lines(paths["output"])
    assert kept[0]["messages"][0] == {"role": "user", "content": "Q0"}
    assert kept[0]["extra"] == {"n": 0}
    assert f"revision {revision} is commit {HUB_COMMIT}" in result.stderr


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (hub_source("f" * 40), f"the datasets cache holds commit {HUB_COMMIT}, not the pinned revision"),
        (
            hub_source(repo_id="tester/elsewhere"),
            "HF_HUB_OFFLINE is set) and it is not in the datasets cache",
        ),
        (hub_source(split="test"), 'Unknown split "test"'),
    ],
)
def test_hub_dataset_errors(tmp_path: Path, hub_cache: Path, source: dict, message: str) -> None:
    result, paths = convert_sources(tmp_path, [source], check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert message in last_line(result)
    assert not any(path.exists() for path in paths.values())


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({"path": "a.json", "sample": "half"}, "a sample share above 0 and at most 1"),
        ({"path": "a.json", "sample": 1.5}, "a sample share above 0 and at most 1"),
        ({"hub": "org/set"}, "a hub with repo_id, revision and split"),
        ({"path": "a.json", "hub": {"repo_id": "o/s", "revision": "r", "split": "train"}}, "exactly one of"),
        ({"path": "a.json", "roles": {"user": [1]}}, "roles must map a chat role to role names"),
        ({"path": "a.json", "columns": ["prompt"]}, "columns and roles that are objects"),
        ({"path": "a.json", "weight": 2}, "only path or hub"),
    ],
)
def test_a_malformed_source_is_a_usage_error(tmp_path: Path, source: dict, message: str) -> None:
    result, paths = convert_sources(tmp_path, [source], check=False)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
    assert not any(path.exists() for path in paths.values())
