#!/usr/bin/env python
"""Benchmark 3: the data steps on a 52K-record Alpaca-shaped file against the I/O floor.

Generates an Alpaca-shaped file (52,002 records, as in Stanford Alpaca; lengths drawn from log-normal
distributions with Alpaca's means; ~40% with an input), then times the pipeline's own scripts, each as the
rule runs it (a separate process, model loading included):
  convert   scripts/convert_to_messages.py
  split     scripts/split_dataset.py
  template  scripts/apply_chat_template.py (train and eval) with the default model's tokenizer
The floor of each step is reading and parsing its input plus writing the same number of bytes it wrote.

Usage: python benchmarks/data_steps.py [--records 52002] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
# Mean lengths in characters of the Stanford Alpaca fields (instruction ~ 60, input ~ 100 when present,
# output ~ 270), with a long right tail.
MEAN_CHARS = {"instruction": 60, "input": 100, "output": 270}
WORDS = (
    "the of and to in a is that for it as was with be by on not he this are or his from at which but have an "
    "they you were their one all we can her has there been if more when will would who so no 数据 模型 函数 "
    "计算 解释 翻译 句子 问题 答案 学习 python list value return print sort string number"
).split()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=52002)
    parser.add_argument("--repeats", type=int, default=3, help="runs per step; the median is reported")
    parser.add_argument(
        "--model",
        default=str(ROOT / "results/models/smollm2-135m-instruct"),
        help="model folder whose tokenizer templates the text",
    )
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/data_steps.json"))
    return parser.parse_args()


def text(rng: random.Random, mean_chars: int) -> str:
    target = max(8, int(rng.lognormvariate(0, 0.8) * mean_chars / 1.377))  # E[lognorm(0, .8)] = 1.377
    words = []
    while sum(map(len, words)) + len(words) < target:
        words.append(rng.choice(WORDS))
    return " ".join(words)


def alpaca_shaped(records: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    return [
        {
            "instruction": text(rng, MEAN_CHARS["instruction"]),
            "input": text(rng, MEAN_CHARS["input"]) if rng.random() < 0.4 else "",
            "output": text(rng, MEAN_CHARS["output"]),
        }
        for _ in range(records)
    ]


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - started


FLOOR_PROGRAM = """
import json, sys
source, target, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
content = open(source, encoding="utf-8").read()
json.loads(content) if source.endswith(".json") else [json.loads(line) for line in content.splitlines()]
with open(target, "wb") as handle:
    handle.write(b"x" * size)
"""


def floor_seconds(source: Path, outputs: list[Path], folder: Path) -> float:
    """A process that reads and parses the step's input, then writes as many bytes as the step wrote."""
    size = sum(path.stat().st_size for path in outputs)
    return timed([sys.executable, "-c", FLOOR_PROGRAM, str(source), str(folder / "floor.bin"), str(size)])


def main() -> None:
    args = parse_args()
    if not Path(args.model, "tokenizer.json").is_file():
        sys.exit(f"{args.model}: no model folder; run `make run` (or the prepare_base_model rule) first")
    python = sys.executable
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        raw = folder / "alpaca.json"
        raw.write_text(json.dumps(alpaca_shaped(args.records), ensure_ascii=False), encoding="utf-8")
        f = {
            name: folder / name
            for name in [
                "messages.jsonl",
                "rejects.jsonl",
                "convert.json",
                "train.jsonl",
                "eval.jsonl",
                "split.json",
                "train.templated.jsonl",
                "eval.templated.jsonl",
            ]
        }
        steps = {
            "convert": (
                [
                    python,
                    SCRIPTS / "convert_to_messages.py",
                    "--input",
                    raw,
                    "--output",
                    f["messages.jsonl"],
                    "--rejects",
                    f["rejects.jsonl"],
                    "--summary",
                    f["convert.json"],
                ],
                raw,
                [f["messages.jsonl"], f["rejects.jsonl"], f["convert.json"]],
            ),
            "split": (
                [
                    python,
                    SCRIPTS / "split_dataset.py",
                    "--input",
                    f["messages.jsonl"],
                    "--train",
                    f["train.jsonl"],
                    "--eval",
                    f["eval.jsonl"],
                    "--summary",
                    f["split.json"],
                    "--eval-size",
                    "0.1",
                    "--seed",
                    "42",
                ],
                f["messages.jsonl"],
                [f["train.jsonl"], f["eval.jsonl"], f["split.json"]],
            ),
            "template": (
                [
                    python,
                    SCRIPTS / "apply_chat_template.py",
                    "--model",
                    args.model,
                    "--input",
                    f["train.jsonl"],
                    "--output",
                    f["train.templated.jsonl"],
                ],
                f["train.jsonl"],
                [f["train.templated.jsonl"]],
            ),
        }
        results = {}
        for name, (command, source, outputs) in steps.items():
            command = list(map(str, command))
            seconds = [timed(command) for _ in range(args.repeats)]
            floors = [floor_seconds(source, outputs, folder) for _ in range(args.repeats)]
            results[name] = {
                "seconds": median(seconds),
                "floor_seconds": median(floors),
                "ratio": median(seconds) / median(floors),
                "runs": seconds,
                "bytes_in": source.stat().st_size,
                "bytes_out": sum(p.stat().st_size for p in outputs),
            }
            print(
                f"{name:9s} {median(seconds):7.2f} s  floor {median(floors):6.2f} s  "
                f"ratio {results[name]['ratio']:5.2f}",
                flush=True,
            )
        total = sum(r["seconds"] for r in results.values())
        floor = sum(r["floor_seconds"] for r in results.values())
    report = {
        "benchmark": "data_steps",
        "records": args.records,
        "steps": results,
        "total_seconds": total,
        "total_floor_seconds": floor,
        "total_ratio": total / floor,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "date": time.strftime("%Y-%m-%d"),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"total     {total:7.2f} s  floor {floor:6.2f} s  ratio {total / floor:5.2f}  -> {args.out}")


if __name__ == "__main__":
    main()
