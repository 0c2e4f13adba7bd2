#!/usr/bin/env python
"""Benchmark 7: generation speed of the evaluation step on HumanEval prompts (the default model, the CPU).

The same HumanEval problems (the first --problems, each in the suite's instruction wrapper, through the
chat template) are answered greedily by evaluate.generate, the step's own code, in these variants:
  batch 1        one prompt at a time with the KV cache
  batch B        for each of --batch-sizes: B prompts together, left-padded, each sequence stopping on its
                 own (the recipe's evaluation.generation_batch_size)
  no KV cache    batch 1 with use_cache=False (the first two problems only: it is slow), to show what the
                 cache saves
It reports new tokens per second (answer tokens only, up to each answer's stop token), seconds per problem,
and the ratios to batch 1.

Usage: python benchmarks/generation.py [--problems 10] [--max-new-tokens 160] [--batch-sizes 4 16]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path

from alpaca_lora import humaneval

ROOT = Path(__file__).resolve().parents[1]
# The evaluation step's own generate(), loaded from its file (step scripts are not a package).
_spec = importlib.util.spec_from_file_location("evaluate", ROOT / "scripts" / "evaluate.py")
evaluate = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(evaluate)

MODEL = ROOT / "results" / "models" / "smollm2-135m-instruct"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=str(MODEL), help="model folder (default: the embedded default)")
    parser.add_argument("--problems", type=int, default=10, help="first N HumanEval problems")
    parser.add_argument("--max-new-tokens", type=int, default=160)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[4, 16], help="batched variants")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "generation.json"))
    return parser.parse_args()


def timed(tokenizer, model, prompts: list[str], limit: int, batch: int, stops: list[int]) -> dict:
    started = time.monotonic()
    answers = evaluate.generate(tokenizer, model, prompts, limit, batch, stops)
    seconds = time.monotonic() - started
    tokens = sum(answer["new_tokens"] for answer in answers)
    return {
        "prompts": len(prompts),
        "new_tokens": tokens,
        "seconds": round(seconds, 2),
        "tokens_per_s": round(tokens / seconds, 2),
        "seconds_per_problem": round(seconds / len(prompts), 2),
        "hit_max_new_tokens": sum(answer["hit_max_new_tokens"] for answer in answers),
    }


def main() -> None:
    args = parse_args()
    tokenizer, model = evaluate.load_model(args.model, None)
    stops = evaluate.stop_token_ids(tokenizer, model)
    prompts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": humaneval.instruction(task)}],
            tokenize=False,
            add_generation_prompt=True,
        )
        for task in humaneval.select(args.problems)
    ]
    results = {
        "settings": vars(args),
        "batch 1": timed(tokenizer, model, prompts, args.max_new_tokens, 1, stops),
    }
    for batch in args.batch_sizes:
        results[f"batch {batch}"] = timed(tokenizer, model, prompts, args.max_new_tokens, batch, stops)
    model.generation_config.use_cache = False
    results["no KV cache (2 problems)"] = timed(tokenizer, model, prompts[:2], args.max_new_tokens, 1, stops)
    model.generation_config.use_cache = True
    base = results["batch 1"]["tokens_per_s"]
    for name, found in results.items():
        if name != "settings":
            found["ratio_to_batch_1"] = round(found["tokens_per_s"] / base, 2)
            print(
                f"{name:26} {found['tokens_per_s']:7.1f} new tokens/s  "
                f"{found['seconds_per_problem']:6.1f} s/problem"
            )
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
