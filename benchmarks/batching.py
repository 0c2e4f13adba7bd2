#!/usr/bin/env python
"""Benchmark 2: training throughput and peak memory of four batching strategies on the CPU.

Runs the pipeline's training step (scripts/train_lora.py) on the bundled Alpaca-length sample with the
default model, the same settings except the batching, for a few optimizer steps each:
  no packing, random order        (packing: false, train_sampling_strategy: random)
  no packing, sorted by length    (packing: false, train_sampling_strategy: group_by_length)
  packing "wrapped"               (packing: true, packing_strategy: wrapped)
  packing "bfd" (padding-free)    (packing: true, packing_strategy: bfd)
Throughput counts non-padding tokens only (TRL's num_tokens: attention-mask sum, or the packed length for
padding-free batches) over the trainer's own train runtime. Peak memory is the highest resident set size of
the training process, sampled every 0.1 s.

Usage: python benchmarks/batching.py [--max-steps 4]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

import psutil

from train_overhead import prepare, train_command

ROOT = Path(__file__).resolve().parents[1]

STRATEGIES = {
    "no packing, random": {"packing": False, "train_sampling_strategy": "random"},
    "no packing, sorted by length": {"packing": False, "train_sampling_strategy": "group_by_length"},
    "packing wrapped": {"packing": True, "packing_strategy": "wrapped"},
    "packing bfd (padding-free)": {"packing": True, "packing_strategy": "bfd"},
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--max-steps", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--model", default=str(ROOT / "results/models/smollm2-135m-instruct"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/batching.json"))
    return parser.parse_args()


def peak_rss_run(command: list) -> tuple[float, int]:
    """Run a command; return its wall time and its peak resident set size in bytes."""
    started = time.perf_counter()
    process = subprocess.Popen(list(map(str, command)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    watched, peak = psutil.Process(process.pid), 0
    while process.poll() is None:
        try:
            peak = max(peak, watched.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.1)
    if process.returncode:
        raise RuntimeError(f"{command[1]} failed with exit code {process.returncode}")
    return time.perf_counter() - started, peak


def main() -> None:
    args = parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        data = prepare(folder, args.model)
        for name, settings in STRATEGIES.items():
            command = train_command(
                args.model,
                data,
                folder,
                max_steps=args.max_steps,
                per_device_train_batch_size=args.batch_size,
                max_length=512,
                eval_steps=args.max_steps,
                save_steps=1000,
                logging_steps=1,
                **settings,
            )
            wall, peak = peak_rss_run(command)
            summary = json.loads((folder / "summary.json").read_text())
            tokens = summary["train_tokens"]
            loop = summary["train_runtime_s"]
            results[name] = {
                "tokens": tokens,
                "train_runtime_s": loop,
                "tokens_per_s": tokens / loop,
                "peak_rss_gb": peak / 1e9,
                "wall_s": wall,
            }
            print(
                f"{name:30s} {tokens / loop:7.1f} tokens/s  peak {peak / 1e9:5.1f} GB  ({tokens} tokens)",
                flush=True,
            )
    report = {
        "benchmark": "batching",
        "max_steps": args.max_steps,
        "batch_size": args.batch_size,
        "results": results,
        "date": time.strftime("%Y-%m-%d"),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
