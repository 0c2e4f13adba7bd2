#!/usr/bin/env python
"""Benchmark 1: the pipeline's training step against a plain one-file TRL script (benchmarks/plain_sft.py).

Same model, same train/eval records, same hyper-parameters and seed; the two run alternately, each as its own
process, and the medians are compared. Both end with one evaluation on the eval split and save the adapter;
the pipeline step also writes its history, summary and (when save_steps allows) checkpoints.

Usage: python benchmarks/train_overhead.py [--runs 3] [--max-steps 8]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

import yaml

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
SAMPLE = ROOT / "data/raw/alpaca_zh_en_sample.json"
DEFAULT_RECIPE = ROOT / "config/recipes/smollm2-135m-alpaca-sample.yaml"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3, help="runs of each, alternating")
    parser.add_argument("--max-steps", type=int, default=8)
    parser.add_argument("--model", default=str(ROOT / "results/models/smollm2-135m-instruct"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/train_overhead.json"))
    return parser.parse_args()


def run(command: list) -> float:
    started = time.perf_counter()
    subprocess.run(list(map(str, command)), check=True, capture_output=True)
    return time.perf_counter() - started


def prepare(folder: Path, model: str, source: Path = SAMPLE, eval_size: int = 32) -> dict[str, Path]:
    """The pipeline's data steps, plus the same train/eval records as Alpaca files for the plain script."""
    py, f = (
        sys.executable,
        {name: folder / name for name in ("messages.jsonl", "rejects.jsonl", "train.jsonl")},
    )
    run([py, SCRIPTS / "convert_to_messages.py", "--input", source, "--output", f["messages.jsonl"],
         "--rejects", f["rejects.jsonl"], "--summary", folder / "convert.json"])  # fmt: skip
    run([py, SCRIPTS / "split_dataset.py", "--input", f["messages.jsonl"], "--train", f["train.jsonl"],
         "--eval", folder / "eval.jsonl", "--summary", folder / "split.json", "--eval-size", eval_size,
         "--seed", 42])  # fmt: skip
    records = json.loads(source.read_text(encoding="utf-8"))
    paths = {}
    for part in ("train", "eval"):
        paths[part] = folder / f"{part}.templated.jsonl"
        run([py, SCRIPTS / "apply_chat_template.py", "--model", model, "--input", folder / f"{part}.jsonl",
             "--output", paths[part]])  # fmt: skip
        indices = [
            json.loads(line)["source_index"] for line in open(folder / f"{part}.jsonl", encoding="utf-8")
        ]
        paths[f"{part}_alpaca"] = folder / f"{part}.alpaca.json"
        paths[f"{part}_alpaca"].write_text(json.dumps([records[i] for i in indices], ensure_ascii=False))
    return paths


def train_command(
    model: str | Path,
    data: dict[str, Path],
    folder: Path,
    recipe: Path = DEFAULT_RECIPE,
    loading: dict | None = None,
    **training,
) -> list:
    """The pipeline's training step as its rule runs it: a recipe's lora and training sections, some training
    settings changed (SFTConfig names), written to folder/settings.json; outputs in `folder`. `loading`: the
    model keys from_pretrained gets (attn_implementation)."""
    settings = yaml.safe_load(Path(recipe).read_text(encoding="utf-8"))
    settings = {"lora": settings["lora"], "training": {**settings["training"], **training}}
    if loading:
        settings["model"] = loading
    (folder / "settings.json").write_text(json.dumps(settings), encoding="utf-8")
    outputs = ["--output-dir", folder / "adapter", "--history", folder / "history.csv",
               "--summary", folder / "summary.json", "--checkpoint-dir", folder / "checkpoints"]  # fmt: skip
    inputs = ["--model", model, "--train", data["train"], "--eval", data["eval"]]
    return [
        sys.executable,
        SCRIPTS / "train_lora.py",
        *inputs,
        "--settings",
        folder / "settings.json",
        *outputs,
    ]


def main() -> None:
    args = parse_args()
    settings = {"max_steps": args.max_steps, "recipe": str(DEFAULT_RECIPE.relative_to(ROOT))}
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        data = prepare(folder, args.model)
        # The embedded default's settings; evaluation once at the end, no checkpoint, as plain_sft.py does.
        pipeline = train_command(
            args.model, data, folder, max_steps=args.max_steps, eval_strategy="no", save_steps=1000
        )
        plain = [
            sys.executable,
            ROOT / "benchmarks/plain_sft.py",
            "--model",
            args.model,
            "--data",
            data["train_alpaca"],
            "--eval-data",
            data["eval_alpaca"],
            "--out",
            folder / "plain",
            "--max-steps",
            args.max_steps,
            "--group-by-length",
            "--result",
            folder / "plain.json",
        ]
        rows = []
        for index in range(args.runs):
            for name, command in (("pipeline", pipeline), ("plain", plain)):
                seconds = run(command)
                if name == "pipeline":
                    summary = json.loads((folder / "summary.json").read_text())
                    tokens, loop = summary["train_tokens"], summary["train_runtime_s"]
                else:
                    result = json.loads((folder / "plain.json").read_text())
                    tokens, loop = result["tokens"], result["train_runtime_s"]
                rows.append(
                    {
                        "run": index,
                        "name": name,
                        "wall_s": seconds,
                        "tokens": tokens,
                        "tokens_per_s": tokens / loop,
                    }
                )
                print(f"run {index} {name:8s} {seconds:7.1f} s  {tokens / loop:6.1f} tokens/s", flush=True)
    summary = {}
    for name in ("pipeline", "plain"):
        mine = [row for row in rows if row["name"] == name]
        summary[name] = {
            "wall_s": median(r["wall_s"] for r in mine),
            "tokens_per_s": median(r["tokens_per_s"] for r in mine),
            "tokens": mine[0]["tokens"],
        }
    ratio = summary["pipeline"]["wall_s"] / summary["plain"]["wall_s"]
    report = {
        "benchmark": "train_overhead",
        "settings": settings,
        "runs": rows,
        "median": summary,
        "time_ratio": ratio,
        "date": time.strftime("%Y-%m-%d"),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"time ratio pipeline/plain: {ratio:.3f} -> {args.out}")


if __name__ == "__main__":
    main()
