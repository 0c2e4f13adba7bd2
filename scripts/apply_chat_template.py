#!/usr/bin/env python
"""Render messages JSON Lines with a model's own chat template.

Each output line keeps the input record (id, messages) and adds:
  text        tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
  prompt      the template applied to every turn before the last assistant turn, with the generation prompt
  completion  the rest of `text`: the last assistant turn as the template renders it
              (text = prompt + completion)

Training and evaluation score the completion (the answer) unless told to score the whole text.

Example:
  python scripts/apply_chat_template.py --model results/models/smollm2-135m-instruct \\
      --input train.jsonl --output train.templated.jsonl
"""

from __future__ import annotations

import argparse

from common import add_log_argument, read_jsonl, setup_logging, trusts_remote_code, write_jsonl

log = setup_logging("apply_chat_template")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True, help="model folder whose tokenizer has the chat template")
    parser.add_argument("--input", required=True, help="messages JSON Lines")
    parser.add_argument("--output", required=True, help="templated JSON Lines to write")
    add_log_argument(parser)
    return parser.parse_args(argv)


def render(tokenizer, record: dict) -> dict:
    messages = record.get("messages") or []
    if not messages or messages[-1]["role"] != "assistant":
        raise ValueError(f"record {record.get('id')}: the last message must be the assistant's")
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    if not text.startswith(prompt):
        raise ValueError(
            f"record {record.get('id')}: the chat template renders the prompt differently on its own "
            "than inside the whole conversation; cannot separate the answer for answer-only loss"
        )
    return {**record, "text": text, "prompt": prompt, "completion": text[len(prompt) :]}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    setup_logging("apply_chat_template", args.log_file)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.model, trust_remote_code=trusts_remote_code(args.model))
    count = write_jsonl(args.output, (render(tokenizer, record) for record in read_jsonl(args.input)))
    log.info("Templated %d records into %s", count, args.output)


if __name__ == "__main__":
    main()
