#!/usr/bin/env python
"""Benchmark 7: data-parallel scaling of the training step, 1, 2, 4 ... processes (GPUs when present).

The model is gpu_train.py's (Phi-3.5-mini's shape, random weights, a local tokenizer; --tiny: 2 layers,
float32, on the CPU), the data Alpaca-shaped records through the pipeline's own data steps, the settings the
Phi-3.5 recipe's (LoRA r 16 all-linear, max length 2048, packing bfd). Each world size runs
scripts/train_lora.py through the launcher the train rule uses (`python -m alpaca_lora.distributed`:
torchrun here), with the same batch per process (weak scaling: the recipe's batch times the world size, as
a recipe asking for N processes would state it).

Printed per world size: tokens/s, tokens/s per process, MFU against N x the peak (gpu_train.mfu), and the
scaling efficiency, tokens/s(N) / (N x tokens/s(1)). On a CPU (no GPU, or --tiny), processes share the
machine's cores: the report has the same shape, and the efficiency says how well gloo and the cores scale.

Usage:
  python benchmarks/scaling.py --steps 20 --peak-tflops 989          # 1, 2, 4, 8 GPUs (as many as present)
  python benchmarks/scaling.py --tiny --steps 6 --processes 1 2       # CPU: 1 vs 2 gloo processes
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

from alpaca_lora import distributed
from data_steps import alpaca_shaped
from gpu_train import PHI35_RECIPE, build_model, mfu
from train_overhead import prepare, run, train_command

ROOT = Path(__file__).resolve().parents[1]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument(
        "--processes", type=int, nargs="+", help="world sizes; default 1, 2, 4 ... up to the GPUs"
    )
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak of one GPU")
    parser.add_argument(
        "--attn", default="sdpa", help="model.attn_implementation (flash_attention_2 on a GPU)"
    )
    parser.add_argument("--tiny", action="store_true", help="a tiny model, float32, on the CPU (gloo)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/scaling.json"))
    return parser.parse_args()


def world_sizes(args: argparse.Namespace, gpus: int) -> list[int]:
    if args.processes:
        return args.processes
    sizes, n = [], 1
    while n <= max(gpus, 2 if args.tiny else 1):
        sizes.append(n)
        n *= 2
    return sizes


def measure(folder: Path, data: dict, processes: int, args: argparse.Namespace) -> dict:
    """One training run with `processes` processes; its summary's tokens and time."""
    recipe_batch = 2  # the Phi-3.5 recipe's per_device_train_batch_size
    recipe = {
        "training": {
            "per_device_train_batch_size": recipe_batch * processes,
            "gradient_accumulation_steps": 1,
        },
        "distributed": {"processes_per_node": processes},
    }
    per_process = {**recipe["training"], **distributed.training_overrides(recipe)}
    per_process.pop("ddp_timeout", None)
    command = train_command(
        folder / "model",
        data,
        folder,
        recipe=PHI35_RECIPE,
        loading={"attn_implementation": args.attn},
        max_steps=args.steps,
        logging_steps=5,
        save_steps=100000,
        eval_steps=args.steps,
        bf16=not args.tiny,
        use_cpu=args.tiny,
        **per_process,
    )
    launcher = [sys.executable, "-m", "alpaca_lora.distributed", f"--processes-per-node={processes}", "--"]
    run([*launcher, *command[1:]])
    return json.loads((folder / "summary.json").read_text())


def main() -> None:
    import torch

    args = parse_args()
    gpus = 0 if args.tiny else torch.cuda.device_count()
    rows: dict[int, dict] = {}
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        parameters, shape = build_model(folder / "model", args.tiny)
        records = alpaca_shaped(args.records, seed=1)
        random.Random(0).shuffle(records)
        (folder / "alpaca.json").write_text(json.dumps(records, ensure_ascii=False))
        data = prepare(folder, folder / "model", source=folder / "alpaca.json", eval_size=16)
        for processes in world_sizes(args, gpus):
            summary = measure(folder, data, processes, args)
            tokens_per_s = summary["train_tokens"] / summary["train_runtime_s"]
            rows[processes] = {
                "tokens_per_s": tokens_per_s,
                "tokens_per_s_per_process": tokens_per_s / processes,
                **mfu(parameters, shape, tokens_per_s, args.peak_tflops * processes),
                "train_tokens": summary["train_tokens"],
                "train_runtime_s": summary["train_runtime_s"],
                "train_loss": summary["train_loss"],
            }
    base = rows[min(rows)]["tokens_per_s_per_process"]
    print(f"{'processes':>9} {'tokens/s':>10} {'per proc':>9} {'MFU(4N)':>8} {'efficiency':>10}")
    for processes, row in rows.items():
        row["scaling_efficiency"] = row["tokens_per_s_per_process"] / base
        print(
            f"{processes:9d} {row['tokens_per_s']:10.0f} {row['tokens_per_s_per_process']:9.0f} "
            f"{row['mfu_lora_4n']:8.1%} {row['scaling_efficiency']:10.1%}"
        )
    report = {
        "benchmark": "scaling",
        "device": torch.cuda.get_device_name() if gpus else "cpu (gloo)",
        "parameters": parameters,
        "steps": args.steps,
        "attn_implementation": args.attn,
        "tiny": args.tiny,
        "results": {str(k): v for k, v in rows.items()},
        "date": time.strftime("%Y-%m-%d"),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
