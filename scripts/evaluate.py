#!/usr/bin/env python
"""Evaluate a model (the base model, or base + LoRA adapter) on the eval split and on probe prompts.

Loss: mean cross-entropy over the answer tokens of every eval record (the same tokens that training scores),
and perplexity = exp(loss), with the token and record counts they were computed on.
Generations, greedy, in batches of --generation-batch-size (left-padded), each prompt rendered with the chat
template's generation prompt: answers to each probe prompt (--generations, at most --max-new-tokens) and to
the first --reference-records eval records (at most --reference-max-new-tokens), written with their reference
answers (--eval-answers) for score_answers.py; with --humaneval, answers to HumanEval problems, each wrapped
in one instruction (alpaca_lora.humaneval): greedy, then n sampled ones per problem (--humaneval-answers).
The loss is also kept per record (summed loss, token count) for the report's confidence intervals.
An answer stops at the chat template's end-of-turn token (found
by rendering a conversation: the special token right after the assistant's text, e.g. <|im_end|> or
<|end|>), at EOS, or at the token limit; it is decoded without special tokens, and hit_max_new_tokens says
that it never stopped on its own. The model runs on the GPU when there is one.

Example:
  python scripts/evaluate.py --model results/models/smollm2-135m-instruct \\
      --adapter results/exp/train/adapter \\
      --eval eval.templated.jsonl --prompt "写一个Python函数计算阶乘" --max-new-tokens 256 \\
      --reference-records 16 --metrics metrics.json --generations generations.jsonl \\
      --eval-answers eval_answers.jsonl
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time

from alpaca_lora.common import (
    StepError,
    add_log_argument,
    loss_pair,
    read_jsonl,
    sha256_file,
    step,
    trusts_remote_code,
    write_json,
    write_jsonl,
)

log = logging.getLogger("evaluate")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True, help="base model folder")
    parser.add_argument("--adapter", help="LoRA adapter folder; without it the base model is evaluated")
    parser.add_argument("--eval", required=True, help="templated eval JSON Lines")
    parser.add_argument("--metrics", required=True, help="JSON metrics to write")
    parser.add_argument("--generations", required=True, help="JSON Lines of probe answers to write")
    parser.add_argument(
        "--eval-answers", help="JSON Lines of eval-record answers to write; without it none are generated"
    )
    parser.add_argument(
        "--humaneval",
        type=json.loads,
        help='HumanEval settings, JSON {"problems", "max_new_tokens", "n", "temperature", "top_p", "k"} '
        "(the recipe's evaluation.humaneval); without it no problem is answered",
    )
    parser.add_argument("--humaneval-answers", help="JSON Lines of HumanEval answers to write (maybe empty)")
    parser.add_argument("--prompt", action="append", default=[], help="probe prompt (repeatable)")
    parser.add_argument(
        "--reference-records",
        type=int,
        default=16,
        help="answer the first N eval records (default: %(default)s)",
    )
    parser.add_argument("--max-new-tokens", type=int, default=256, help="probe answers; default: %(default)s")
    parser.add_argument(
        "--reference-max-new-tokens", type=int, help="eval-record answers; default: --max-new-tokens"
    )
    parser.add_argument("--batch-size", type=int, default=8, help="eval records per forward pass (loss)")
    parser.add_argument(
        "--generation-batch-size",
        type=int,
        default=1,
        help="prompts answered together (default: %(default)s; on a CPU batching rarely pays: a batch runs "
        "until its longest answer ends)",
    )
    parser.add_argument("--max-length", type=int, default=2048, help="truncate scored sequences to this")
    parser.add_argument("--seed", type=int, default=42, help="torch seed (decoding is greedy)")
    add_log_argument(parser)
    return parser.parse_args(argv)


def load_model(model_dir: str, adapter_dir: str | None):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    trust = trusts_remote_code(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=trust)
    model = AutoModelForCausalLM.from_pretrained(model_dir, trust_remote_code=trust)
    if adapter_dir:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_dir)
    if torch.cuda.is_available():
        model.to("cuda")
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
    # Tokenized as TRL tokenizes a prompt-completion pair of text, special tokens included: a tokenizer that
    # adds a BOS token adds it here too, so the answer tokens are scored in the context training saw.
    prompt_ids = tokenizer(text=prompt)["input_ids"]
    ids = tokenizer(text=prompt + completion)["input_ids"]
    start = common_prefix_length(prompt_ids, ids)
    labels = [-100] * start + ids[start:]
    return ids[:max_length], labels[:max_length]


def answer_loss(tokenizer, model, records: list[dict], batch_size: int, max_length: int) -> dict:
    """Eval loss over every answer token, and per record its summed loss and token count (in the eval file's
    order) for the report's paired confidence intervals."""
    import torch

    examples = [scored_example(tokenizer, r, max_length) for r in records]
    order = sorted(range(len(examples)), key=lambda i: len(examples[i][0]))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    sums, tokens = [0.0] * len(examples), [0] * len(examples)
    for start in range(0, len(order), batch_size):
        chosen = order[start : start + batch_size]
        batch = [examples[i] for i in chosen]
        width = max(len(ids) for ids, _ in batch)
        input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in batch])
        labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in batch])
        mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in batch])
        with torch.no_grad():
            output = model(input_ids=input_ids.to(model.device), attention_mask=mask.to(model.device))
        logits = output.logits.float()
        shifted = labels[:, 1:].to(logits.device)
        losses = torch.nn.functional.cross_entropy(
            logits[:, :-1].transpose(1, 2), shifted, ignore_index=-100, reduction="none"
        )
        for row, index in enumerate(chosen):
            sums[index] = losses[row].sum().item()
            tokens[index] = int((shifted[row] != -100).sum())
        log.info("scored %d/%d eval records", min(start + batch_size, len(examples)), len(examples))
    total_tokens = sum(tokens)
    if total_tokens == 0:
        raise StepError("no answer tokens to score in the eval split")
    loss = sum(sums) / total_tokens
    return {
        "eval_loss": loss,
        "perplexity": math.exp(loss),
        "answer_tokens": total_tokens,
        "records": len(records),
        "per_record": [
            {"id": record.get("id"), "loss_sum": total, "tokens": count}
            for record, total, count in zip(records, sums, tokens, strict=True)
        ],
    }


def stop_token_ids(tokenizer, model) -> list[int]:
    """The end-of-turn token of the chat template, then EOS and the model's own stop tokens."""
    marker = "ANSWER-END-MARKER"
    conversation = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": marker}]
    rendered = tokenizer.apply_chat_template(conversation, tokenize=False)
    after = tokenizer(rendered.split(marker, 1)[1], add_special_tokens=False)["input_ids"]
    special = set(tokenizer.all_special_ids) | {
        token_id for token_id, token in tokenizer.added_tokens_decoder.items() if token.special
    }
    configured = model.generation_config.eos_token_id
    configured = configured if isinstance(configured, list) else [configured]
    candidates = [*[t for t in after if t in special][:1], tokenizer.eos_token_id, *configured]
    return list(dict.fromkeys(t for t in candidates if t is not None))


def generate(
    tokenizer,
    model,
    prompts: list[str],
    max_new_tokens: int,
    batch_size: int,
    stops: list[int],
    sampling: dict | None = None,
) -> list[dict]:
    """Answers to already templated prompts, each ending at the first of `stops`:
    {answer, new_tokens, hit_max_new_tokens} (hit: no stop token within max_new_tokens).

    Greedy, one answer per prompt; with `sampling` ({n, temperature, top_p}) n sampled answers per prompt,
    prompt by prompt. Batches of `batch_size` prompts, left-padded, with the KV cache (the generation config's
    use_cache, on by default); each sequence stops on its own (a finished one is padded while the rest of its
    batch goes on)."""
    import torch

    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    decoding = {"do_sample": False}
    if sampling:
        decoding = {
            "do_sample": True,
            "num_return_sequences": sampling["n"],
            "temperature": sampling["temperature"],
            "top_p": sampling["top_p"],
            "top_k": 0,  # nucleus sampling alone, as the HumanEval paper
        }
    answers = []
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start : start + batch_size]
        encoded = tokenizer(batch, add_special_tokens=False, padding=True, return_tensors="pt").to(
            model.device
        )
        started = time.monotonic()
        with torch.no_grad():
            output = model.generate(
                **encoded,
                max_new_tokens=max_new_tokens,
                eos_token_id=stops,
                pad_token_id=tokenizer.pad_token_id,
                **decoding,
            )
        new_tokens = 0
        for row in output[:, encoded["input_ids"].shape[1] :].tolist():
            stop = next((i for i, token in enumerate(row) if token in stops), None)
            kept = row if stop is None else row[: stop + 1]
            new_tokens += len(kept)
            answers.append(
                {
                    "answer": tokenizer.decode(kept, skip_special_tokens=True),
                    "new_tokens": len(kept),
                    "hit_max_new_tokens": stop is None,
                }
            )
        seconds = time.monotonic() - started
        log.info(
            "answered %d/%d prompts (%.1fs for this batch, %.1f new tokens/s)",
            min(start + batch_size, len(prompts)),
            len(prompts),
            seconds,
            new_tokens / seconds if seconds else 0.0,
        )
    return answers


def probe_answers(
    tokenizer, model, probes: list[str], args: argparse.Namespace, stops: list[int]
) -> list[dict]:
    prompts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": probe}], tokenize=False, add_generation_prompt=True
        )
        for probe in probes
    ]
    answers = generate(tokenizer, model, prompts, args.max_new_tokens, args.generation_batch_size, stops)
    return [{"prompt": probe, **answer} for probe, answer in zip(probes, answers, strict=True)]


def eval_answers(
    tokenizer, model, records: list[dict], args: argparse.Namespace, stops: list[int]
) -> list[dict]:
    """Answers to the first records of the eval split, beside the reference (the last assistant turn)."""
    chosen = records[: args.reference_records]
    prompts = [record["prompt"] for record in chosen]
    limit = args.reference_max_new_tokens or args.max_new_tokens
    answers = generate(tokenizer, model, prompts, limit, args.generation_batch_size, stops)
    return [
        {
            "id": record.get("id"),
            "prompt": record["messages"][-2]["content"],
            "reference": record["messages"][-1]["content"],
            **answer,
        }
        for record, answer in zip(chosen, answers, strict=True)
    ]


def humaneval_answers(
    tokenizer, model, settings: dict, args: argparse.Namespace, stops: list[int]
) -> list[dict]:
    """Greedy answers to the chosen HumanEval problems (sample "greedy"), then `n` sampled ones each
    (samples 0..n-1), every problem wrapped in the one instruction (alpaca_lora.humaneval.INSTRUCTION)."""
    from alpaca_lora import humaneval

    tasks = humaneval.select(settings["problems"])
    prompts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": humaneval.instruction(task)}],
            tokenize=False,
            add_generation_prompt=True,
        )
        for task in tasks
    ]
    limit, batch = settings["max_new_tokens"], args.generation_batch_size
    log.info("HumanEval: %d problems, greedy", len(tasks))
    greedy = generate(tokenizer, model, prompts, limit, batch, stops)
    answers = [{"task_id": t, "sample": "greedy", **a} for t, a in zip(tasks, greedy, strict=True)]
    if settings["n"]:
        log.info("HumanEval: %d samples per problem", settings["n"])
        sampled = generate(tokenizer, model, prompts, limit, batch, stops, sampling=settings)
        answers += [
            {"task_id": tasks[index // settings["n"]], "sample": index % settings["n"], **answer}
            for index, answer in enumerate(sampled)
        ]
    return answers


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with step("evaluate", args.log_file, libraries=True):
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
        loss_seconds = time.monotonic() - started
        started = time.monotonic()
        stops = stop_token_ids(tokenizer, model)
        generations = probe_answers(tokenizer, model, args.prompt, args, stops)
        write_jsonl(args.generations, generations)
        answers = []
        if args.eval_answers:
            answers = eval_answers(tokenizer, model, records, args, stops)
            write_jsonl(args.eval_answers, answers)
        coded = []
        if args.humaneval and args.humaneval_answers:
            coded = humaneval_answers(tokenizer, model, args.humaneval, args, stops)
        if args.humaneval_answers:
            write_jsonl(args.humaneval_answers, coded)
        metrics.update(
            model=args.model,
            adapter=args.adapter,
            which="tuned" if args.adapter else "base",
            eval_file=args.eval,
            eval_sha256=sha256_file(args.eval),
            split="eval",
            decoding={
                "strategy": "greedy",
                "max_new_tokens": args.max_new_tokens,
                "reference_max_new_tokens": args.reference_max_new_tokens or args.max_new_tokens,
                "stop_tokens": tokenizer.convert_ids_to_tokens(stops),
                "batch_size": args.generation_batch_size,
                "humaneval": args.humaneval,
            },
            probes=len(generations),
            probes_hit_max_new_tokens=sum(g["hit_max_new_tokens"] for g in generations),
            eval_answers=len(answers),
            eval_answers_hit_max_new_tokens=sum(a["hit_max_new_tokens"] for a in answers),
            humaneval_answers=len(coded),
            humaneval_new_tokens=sum(a["new_tokens"] for a in coded),
            humaneval_hit_max_new_tokens=sum(a["hit_max_new_tokens"] for a in coded),
            seconds=round(loss_seconds, 2),
            generation_seconds=round(time.monotonic() - started, 2),
        )
        write_json(args.metrics, metrics)
        log.info("Wrote %s and %s", args.metrics, args.generations)


if __name__ == "__main__":
    main()
