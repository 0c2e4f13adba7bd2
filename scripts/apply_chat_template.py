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
import logging
import os
from multiprocessing import get_context

import orjson

from alpaca_lora.common import (
    StepError,
    add_log_argument,
    atomic_path,
    json_line,
    refuse_shared_paths,
    step,
    trusts_remote_code,
)

log = logging.getLogger("apply_chat_template")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True, help="model folder whose tokenizer has the chat template")
    parser.add_argument("--input", required=True, help="messages JSON Lines")
    parser.add_argument("--output", required=True, help="templated JSON Lines to write")
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count(),
        help="processes that render in parallel; the output order stays the input order (default: all cores)",
    )
    add_log_argument(parser)
    args = parser.parse_args(argv)
    refuse_shared_paths(
        parser,
        {"--model": args.model, "--input": args.input, "--output": args.output, "--log-file": args.log_file},
    )
    return args


def render(tokenizer, record: dict) -> dict:
    messages = record.get("messages") or []
    if not messages or messages[-1]["role"] != "assistant":
        raise StepError(f"record {record.get('id')}: the last message must be the assistant's")
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    if not text.startswith(prompt):
        raise StepError(
            f"record {record.get('id')}: the chat template renders the prompt differently on its own "
            "than inside the whole conversation; cannot separate the answer for answer-only loss"
        )
    return {**record, "text": text, "prompt": prompt, "completion": text[len(prompt) :]}


# Records per task: large enough to amortise the hand-over between processes.
CHUNK_RECORDS = 2000
_tokenizer = None


def load_tokenizer(model: str) -> None:
    global _tokenizer
    from transformers import AutoTokenizer

    _tokenizer = AutoTokenizer.from_pretrained(model, trust_remote_code=trusts_remote_code(model))


def render_lines(lines: list[str]) -> str:
    """Render a chunk of JSON Lines; parsing and serialising happen in the worker too."""
    return "".join(json_line(render(_tokenizer, orjson.loads(line))) for line in lines if line.strip())


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with step("apply_chat_template", args.log_file, libraries=True):
        with open(args.input, encoding="utf-8") as handle:
            lines = handle.readlines()
        chunks = [lines[start : start + CHUNK_RECORDS] for start in range(0, len(lines), CHUNK_RECORDS)]
        workers = max(1, min(args.workers, len(chunks)))
        load_tokenizer(args.model)
        with atomic_path(args.output) as temporary, open(temporary, "w", encoding="utf-8") as out:
            if workers == 1:
                out.writelines(map(render_lines, chunks))
            else:
                # Forked workers share the loaded tokenizer; imap keeps the input order (repeatable output).
                with get_context("fork").Pool(workers) as pool:
                    for done, chunk in enumerate(pool.imap(render_lines, chunks), start=1):
                        out.write(chunk)
                        log.info("templated %d/%d chunks", done, len(chunks))
        log.info(
            "Templated %d records into %s with %d worker(s)",
            sum(1 for line in lines if line.strip()),
            args.output,
            workers,
        )


if __name__ == "__main__":
    main()
