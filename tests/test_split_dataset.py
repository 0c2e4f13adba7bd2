"""scripts/split_dataset.py: a deterministic, order-independent train/eval split."""

from __future__ import annotations

import hashlib
import json
import math
import random
from fractions import Fraction
from pathlib import Path

import pytest

import split_dataset
from conftest import SAMPLE_DATA, run_script


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def write_lines(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def sample_messages(tmp_path_factory) -> Path:
    """The bundled sample, converted by the pipeline's own first step."""
    folder = tmp_path_factory.mktemp("messages")
    run_script(
        "convert_to_messages.py",
        "--input",
        SAMPLE_DATA,
        "--output",
        folder / "messages.jsonl",
        "--rejects",
        folder / "rejects.jsonl",
        "--summary",
        folder / "summary.json",
    )
    return folder / "messages.jsonl"


def split_file(source: Path, folder: Path, eval_size: str, seed: int, check: bool = True):
    result = run_script(
        "split_dataset.py",
        "--input",
        source,
        "--train",
        folder / "train.jsonl",
        "--eval",
        folder / "eval.jsonl",
        "--summary",
        folder / "summary.json",
        "--eval-size",
        eval_size,
        "--seed",
        str(seed),
        check=check,
    )
    return result, folder


def ids(path: Path) -> list[str]:
    return [r["id"] for r in read_lines(path)]


def test_same_input_gives_identical_files(sample_messages: Path, tmp_path: Path) -> None:
    _, first = split_file(sample_messages, tmp_path / "a", "32", 42)
    _, second = split_file(sample_messages, tmp_path / "b", "32", 42)
    for name in ("train.jsonl", "eval.jsonl"):
        assert (first / name).read_bytes() == (second / name).read_bytes()
    total = len(read_lines(sample_messages))
    summary = json.loads((first / "summary.json").read_text(encoding="utf-8"))
    assert (summary["total"], summary["train"], summary["eval"]) == (total, total - 32, 32)


def test_split_partitions_the_input_and_keeps_order(sample_messages: Path, tmp_path: Path) -> None:
    _, folder = split_file(sample_messages, tmp_path, "0.1", 7)
    all_ids = ids(sample_messages)
    train, evaluation = ids(folder / "train.jsonl"), ids(folder / "eval.jsonl")
    assert len(evaluation) == math.ceil(len(all_ids) / 10)
    assert len(train) + len(evaluation) == len(all_ids)
    assert not set(train) & set(evaluation)
    assert set(train) | set(evaluation) == set(all_ids)
    position = {id_: i for i, id_ in enumerate(all_ids)}
    assert [position[i] for i in train] == sorted(position[i] for i in train)
    assert [position[i] for i in evaluation] == sorted(position[i] for i in evaluation)


def test_input_order_does_not_matter(sample_messages: Path, tmp_path: Path) -> None:
    records = read_lines(sample_messages)
    random.Random(3).shuffle(records)
    shuffled = write_lines(tmp_path / "shuffled.jsonl", records)
    _, a = split_file(sample_messages, tmp_path / "a", "32", 42)
    _, b = split_file(shuffled, tmp_path / "b", "32", 42)
    assert len(ids(a / "eval.jsonl")) == 32
    assert set(ids(a / "eval.jsonl")) == set(ids(b / "eval.jsonl"))


def test_different_seed_gives_different_eval(sample_messages: Path) -> None:
    records = read_lines(sample_messages)
    eval_sets = {seed: {r["id"] for r in split_dataset.split(records, 32, seed)[1]} for seed in (42, 43, 0)}
    assert all(len(s) == 32 for s in eval_sets.values())
    assert eval_sets[42] != eval_sets[43]
    assert eval_sets[42] != eval_sets[0]


@pytest.mark.parametrize(("size", "total"), [(1, 2), (5, 20), (32.0, 320), (3, 4)])
def test_eval_count_integer(size: float, total: int) -> None:
    assert split_dataset.eval_count(size, total) == int(size)


FRACTIONS = [
    (0.1, 320),
    (0.1, 25),
    (0.5, 3),
    (0.25, 10),
    (0.001, 40),
    (0.15, 101),
    (0.07, 100),  # 0.07 * 100 is 7.000000000000001 in floating point
]


@pytest.mark.parametrize(("size", "total"), FRACTIONS)
def test_eval_count_fraction_rounds_up(size: float, total: int) -> None:
    assert split_dataset.eval_count(size, total) == math.ceil(Fraction(str(size)) * total)


@pytest.mark.parametrize(
    ("size", "total"), [(10, 10), (11, 10), (0.95, 10), (0.5, 1), (0, 10), (-1, 10), (2.5, 10)]
)
def test_eval_size_out_of_range(size: float, total: int) -> None:
    with pytest.raises(ValueError, match="eval size"):
        split_dataset.eval_count(size, total)


def test_eval_size_too_large_fails_the_script(tmp_path: Path) -> None:
    records = [{"id": str(i), "messages": [{"role": "user", "content": str(i)}]} for i in range(5)]
    source = write_lines(tmp_path / "in.jsonl", records)
    result, folder = split_file(source, tmp_path / "out", "5", 1, check=False)
    assert result.returncode != 0
    assert "eval size" in result.stderr
    assert not (folder / "train.jsonl").exists() and not (folder / "eval.jsonl").exists()


def conversation(text: str) -> dict:
    messages = [{"role": "user", "content": text}, {"role": "assistant", "content": text.upper()}]
    return {"id": text, "messages": messages}


@pytest.mark.parametrize(
    ("records", "eval_size", "expected_eval"),
    [
        ([conversation("same")] * 5, 2, 2),
        ([conversation("a"), conversation("b")] * 3 + [conversation("c")], 3, 3),
        ([conversation("a")] * 4 + [conversation(str(i)) for i in range(6)], 0.5, 5),
    ],
    ids=["all-identical", "pairs", "mixed-fraction"],
)
def test_duplicates_keep_the_counts(
    tmp_path: Path, records: list[dict], eval_size: float, expected_eval: int
) -> None:
    train, evaluation = split_dataset.split(records, eval_size, 42)
    assert len(evaluation) == expected_eval
    assert len(train) + len(evaluation) == len(records)
    source = write_lines(tmp_path / "dups.jsonl", records)
    _, folder = split_file(source, tmp_path / "out", str(eval_size), 42)
    summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    assert summary["total"] == len(records) == summary["train"] + summary["eval"]
    assert len(read_lines(folder / "eval.jsonl")) == summary["eval"] == expected_eval
    assert len(read_lines(folder / "train.jsonl")) == summary["train"]


def test_the_documented_rule_pins_which_records_are_held_out(tmp_path: Path) -> None:
    """eval = the records with the smallest sha256(f"{seed}:{messages as canonical JSON}"), as documented.

    Computed here from the rule itself (hashlib and json, not the step's helpers), and pinned as ids: a change
    of the rule (largest keys, another key text) would move records between train and eval unnoticed.
    """
    records = [
        {
            "id": f"r{i}",
            "messages": [
                {"role": "user", "content": f"Question {i}?"},
                {"role": "assistant", "content": f"Answer {i}."},
            ],
        }
        for i in range(8)
    ]
    source = tmp_path / "messages.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    run_script(
        "split_dataset.py",
        "--input", source, "--train", tmp_path / "train.jsonl", "--eval", tmp_path / "eval.jsonl",
        "--summary", tmp_path / "summary.json", "--eval-size", "3", "--seed", "42",
    )  # fmt: skip
    held_out = [json.loads(line)["id"] for line in (tmp_path / "eval.jsonl").read_text().splitlines()]

    def key(record: dict) -> str:
        text = json.dumps(record["messages"], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(f"42:{text}".encode()).hexdigest()

    smallest = sorted(records, key=key)[:3]
    assert held_out == [r["id"] for r in records if r in smallest]
    assert held_out == ["r0", "r4", "r7"]
