#!/usr/bin/env python
"""Evaluate a model (the base model, or base + LoRA adapter) on the eval split and on probe prompts.

Loss: mean cross-entropy over the answer tokens of every eval record (the same tokens that training scores),
and perplexity = exp(loss), with the token and record counts they were computed on.
Generations: greedy answers to each probe prompt, rendered with the chat template's generation prompt,
stopping at the end-of-turn token or --max-new-tokens, decoded without special tokens.

Example:
  python scripts/evaluate.py --model results/models/smollm2-135m-instruct \\
      --adapter results/exp/train/adapter \\
      --eval eval.templated.jsonl --prompt "写一个Python函数计算阶乘" --max-new-tokens 256 \\
      --metrics metrics.json --generations generations.jsonl
"""

from __future__ import annotations

import argparse
import math
import time

from common import (
    add_log_argument,
    loss_pair,
    read_jsonl,
    setup_logging,
    sha256_file,
    trusts_remote_code,
    write_json,
    write_jsonl,
)

log = setup_logging("evaluate")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True, help="base model folder")
    parser.add_argument("--adapter", help="LoRA adapter folder; without it the base model is evaluated")
    parser.add_argument("--eval", required=True, help="templated eval JSON Lines")
    parser.add_argument("--metrics", required=True, help="JSON metrics to write")
    parser.add_argument("--generations", required=True, help="JSON Lines of probe answers to write")
    parser.add_argument("--prompt", action="append", default=[], help="probe prompt (repeatable)")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="default: %(default)s")
    parser.add_argument("--batch-size", type=int, default=8, help="eval records per forward pass")
    parser.add_argument("--max-length", type=int, default=2048, help="truncate scored sequences to this")
    parser.add_argument("--seed", type=int, default=42, help="torch seed (decoding is greedy)")
    add_log_argument(parser)
    return parser.parse_args(argv)


def load_model(model_dir: str, adapter_dir: str | None):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    trust = trusts_remote_code(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=trust)
    model = AutoModelForCausalLM.from_pretrained(model_dir, trust_remote_code=trust)
    if adapter_dir:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_dir)
    model.eval()
    return tokenizer, model


def common_prefix_length(a: list[int], b: list[int]) -> int:
    length = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        length += 1
    return length


def scored_example(tokenizer, record: dict, max_length: int) -> tuple[list[int], list[int]]:
    """Token ids and labels (-100 on the prompt) the way TRL's completion-only loss builds them."""
    prompt, completion = loss_pair(record, tokenizer.eos_token)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    ids = tokenizer(prompt + completion, add_special_tokens=False)["input_ids"]
    start = common_prefix_length(prompt_ids, ids)
    labels = [-100] * start + ids[start:]
    return ids[:max_length], labels[:max_length]


def answer_loss(tokenizer, model, records: list[dict], batch_size: int, max_length: int) -> dict:
    import torch

    examples = sorted((scored_example(tokenizer, r, max_length) for r in records), key=lambda e: len(e[0]))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    total_loss, total_tokens = 0.0, 0
    for start in range(0, len(examples), batch_size):
        batch = examples[start : start + batch_size]
        width = max(len(ids) for ids, _ in batch)
        input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in batch])
        labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in batch])
        mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in batch])
        with torch.no_grad():
            logits = model(input_ids=input_ids, attention_mask=mask).logits.float()
        shifted = labels[:, 1:]
        total_loss += torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.size(-1)),
            shifted.reshape(-1),
            ignore_index=-100,
            reduction="sum",
        ).item()
        total_tokens += int((shifted != -100).sum())
        log.info("scored %d/%d eval records", min(start + batch_size, len(examples)), len(examples))
    if total_tokens == 0:
        raise ValueError("no answer tokens to score in the eval split")
    loss = total_loss / total_tokens
    return {
        "eval_loss": loss,
        "perplexity": math.exp(loss),
        "answer_tokens": total_tokens,
        "records": len(records),
    }


def generate(tokenizer, model, prompts: list[str], max_new_tokens: int) -> list[dict]:
    import torch

    answers = []
    for index, prompt in enumerate(prompts, start=1):
        messages = [{"role": "user", "content": prompt}]
        encoded = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        started = time.monotonic()
        with torch.no_grad():
            output = model.generate(
                **encoded,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
            )
        new_tokens = output[0, encoded["input_ids"].shape[1] :]
        answer = tokenizer.decode(new_tokens, skip_special_tokens=True)
        seconds = time.monotonic() - started
        log.info("probe %d/%d: %d new tokens in %.1fs", index, len(prompts), len(new_tokens), seconds)
        answers.append(
            {
                "prompt": prompt,
                "answer": answer,
                "new_tokens": int(len(new_tokens)),
                "hit_max_new_tokens": bool(len(new_tokens) >= max_new_tokens),
            }
        )
    return answers


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    setup_logging("evaluate", args.log_file)
    import torch

    torch.manual_seed(args.seed)
    which = "tuned (base + adapter)" if args.adapter else "base"
    log.info("Evaluating the %s model", which)
    tokenizer, model = load_model(args.model, args.adapter)
    records = list(read_jsonl(args.eval))
    started = time.monotonic()
    metrics = answer_loss(tokenizer, model, records, args.batch_size, args.max_length)
    log.info(
        "eval loss %.4f, perplexity %.2f over %d answer tokens",
        metrics["eval_loss"],
        metrics["perplexity"],
        metrics["answer_tokens"],
    )
    generations = generate(tokenizer, model, args.prompt, args.max_new_tokens)
    write_jsonl(args.generations, generations)
    metrics.update(
        model=args.model,
        adapter=args.adapter,
        which="tuned" if args.adapter else "base",
        eval_file=args.eval,
        eval_sha256=sha256_file(args.eval),
        split="eval",
        decoding={"strategy": "greedy", "max_new_tokens": args.max_new_tokens},
        probes=len(generations),
        probes_hit_max_new_tokens=sum(g["hit_max_new_tokens"] for g in generations),
        seconds=round(time.monotonic() - started, 2),
    )
    write_json(args.metrics, metrics)
    log.info("Wrote %s and %s", args.metrics, args.generations)


if __name__ == "__main__":
    main()
