#!/usr/bin/env python
"""Benchmark 5 (needs a GPU): tokens/s and model FLOPs utilisation of the pipeline's training step on a
Phi-3.5-mini-sized model, with and without packing.

Builds a model with random weights from the real Phi-3.5-mini-instruct configuration (3.8B parameters, bf16)
and a locally trained tokenizer with the Phi-3.5 chat format (no Hub access needed), templates Alpaca-length
records with the pipeline's own scripts, then runs scripts/train_lora.py with the recipe's settings
(LoRA r 16, alpha 32, all-linear, bf16, max length 2048, batch 2) for a fixed number of steps, once with
packing (bfd) and once without.

MFU = achieved FLOP/s / peak FLOP/s. Per trained token the model does a forward pass (2N FLOPs for N weights)
and a backward pass to the activations (2N; the frozen base weights need no weight gradients), so LoRA
training costs about 4N FLOPs per token, plus attention (12 * layers * hidden * sequence length per token).
The classic 6N (full fine-tuning) figure is printed too, for comparison with published numbers.

Usage (one 10-minute call on one GPU):
  python benchmarks/gpu_train.py --steps 20 --peak-tflops 989
  python benchmarks/gpu_train.py --tiny --steps 2   # CPU smoke test of the script itself
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

from alpaca_lora.testing import build_tokenizer
from data_steps import alpaca_shaped
from train_overhead import prepare, run, train_command

ROOT = Path(__file__).resolve().parents[1]
PHI35_RECIPE = ROOT / "config/recipes/phi35-mini-alpaca-recipe.yaml"

# microsoft/Phi-3.5-mini-instruct config.json (the values that set the compute).
PHI35_MINI = {
    "vocab_size": 32064,
    "hidden_size": 3072,
    "intermediate_size": 8192,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "max_position_embeddings": 131072,
    "original_max_position_embeddings": 4096,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": False,
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument(
        "--peak-tflops", type=float, default=989.0, help="dense bf16 peak of the GPU (H100/H200 SXM)"
    )
    parser.add_argument(
        "--tiny", action="store_true", help="a tiny model and float32, to test the script on CPU"
    )
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/gpu_train.json"))
    return parser.parse_args()


def build_model(folder: Path, tiny: bool) -> tuple[int, dict]:
    import torch
    from transformers import Phi3Config, Phi3ForCausalLM

    corpus = [r["instruction"] + " " + r["output"] for r in alpaca_shaped(2000)]
    tokenizer = build_tokenizer(corpus, "phi3")
    shape = dict(PHI35_MINI)
    if tiny:
        shape.update(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=4,
        )
    config = Phi3Config(**shape, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = Phi3ForCausalLM(config).to(torch.float32 if tiny else torch.bfloat16)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return sum(p.numel() for p in model.parameters()), shape


def mfu(parameters: int, shape: dict, tokens_per_s: float, peak_tflops: float) -> dict[str, float]:
    """MFU of LoRA training (4N + attention FLOPs per token, mean context ~ 1024) and the 6N figure."""
    attention = 12 * shape["num_hidden_layers"] * shape["hidden_size"] * 2048 / 2
    return {
        "mfu_lora_4n": (4 * parameters + attention) * tokens_per_s / (peak_tflops * 1e12),
        "mfu_6n": 6 * parameters * tokens_per_s / (peak_tflops * 1e12),
    }


def main() -> None:
    args = parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        parameters, shape = build_model(folder / "model", args.tiny)
        records = alpaca_shaped(args.records, seed=1)
        random.Random(0).shuffle(records)
        (folder / "alpaca.json").write_text(json.dumps(records, ensure_ascii=False))
        data = prepare(folder, folder / "model", source=folder / "alpaca.json", eval_size=16)
        for name, packing in (("packing bfd", {"packing": True}), ("no packing", {"packing": False})):
            run(
                train_command(
                    folder / "model",
                    data,
                    folder,
                    recipe=PHI35_RECIPE,
                    max_steps=args.steps,
                    logging_steps=5,
                    save_steps=100000,
                    eval_steps=args.steps,
                    bf16=not args.tiny,
                    **packing,
                )
            )
            summary = json.loads((folder / "summary.json").read_text())
            tokens_per_s = summary["train_tokens"] / summary["train_runtime_s"]
            results[name] = {
                "tokens_per_s": tokens_per_s,
                **mfu(parameters, shape, tokens_per_s, args.peak_tflops),
                "train_tokens": summary["train_tokens"],
                "train_runtime_s": summary["train_runtime_s"],
            }
            print(
                f"{name:12s} {tokens_per_s:9.0f} tokens/s  MFU(4N+attn) {results[name]['mfu_lora_4n']:.1%}"
                f"  MFU(6N) {results[name]['mfu_6n']:.1%}",
                flush=True,
            )
    import torch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    report = {
        "benchmark": "gpu_train",
        "device": device,
        "parameters": parameters,
        "steps": args.steps,
        "peak_tflops": args.peak_tflops,
        "tiny": args.tiny,
        "results": results,
        "date": time.strftime("%Y-%m-%d"),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
