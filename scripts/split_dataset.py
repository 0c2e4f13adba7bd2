#!/usr/bin/env python
"""Split messages JSON Lines into train and eval, deterministically.

Each record gets the key sha256(seed + its canonical messages JSON); the records with the smallest keys go to
eval. A record therefore lands in the same split whatever the order of the input file, and a different seed
gives a different, equally reproducible split. Both outputs keep the input's order.

--eval-size is a count (an integer >= 1) or a fraction of the records (a number below 1).

Example:
  python scripts/split_dataset.py --input messages.jsonl --train train.jsonl --eval eval.jsonl \\
      --eval-size 0.1 --seed 42 --summary split_summary.json
"""

from __future__ import annotations

import argparse
import logging
import math

from alpaca_lora.common import (
    StepError,
    add_log_argument,
    canonical_json,
    read_jsonl,
    refuse_shared_paths,
    sha256_file,
    sha256_text,
    step,
    write_json,
    write_jsonl,
)

log = logging.getLogger("split_dataset")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--input", required=True, help="messages JSON Lines")
    parser.add_argument("--train", required=True, help="train split to write")
    parser.add_argument("--eval", required=True, help="eval split to write")
    parser.add_argument("--summary", required=True, help="JSON summary to write")
    parser.add_argument("--eval-size", type=float, required=True, help="count (>= 1) or fraction (< 1)")
    parser.add_argument("--seed", type=int, required=True, help="seed mixed into the record keys")
    add_log_argument(parser)
    args = parser.parse_args(argv)
    refuse_shared_paths(
        parser,
        {
            "--input": args.input,
            "--train": args.train,
            "--eval": args.eval,
            "--summary": args.summary,
            "--log-file": args.log_file,
        },
    )
    return args


def eval_count(eval_size: float, total: int) -> int:
    if eval_size <= 0:
        raise StepError(f"eval size must be positive, got {eval_size}")
    if eval_size >= 1 and eval_size != int(eval_size):
        raise StepError(f"eval size {eval_size} is neither a fraction below 1 nor a whole count")
    # Rounding first keeps float noise (0.07 * 100 = 7.000000000000001) from adding a record.
    count = math.ceil(round(eval_size * total, 9)) if eval_size < 1 else int(eval_size)
    if count >= total:
        raise StepError(f"eval size {eval_size:g} leaves no training record out of {total}")
    return count


def split_key(record: dict, seed: int) -> str:
    return sha256_text(f"{seed}:{canonical_json(record['messages'])}")


def split(records: list[dict], eval_size: float, seed: int) -> tuple[list[dict], list[dict]]:
    n_eval = eval_count(eval_size, len(records))
    # Ties (exact duplicate conversations) fall back to the input position, keeping the split total.
    ranked = sorted(range(len(records)), key=lambda i: (split_key(records[i], seed), i))
    eval_positions = set(ranked[:n_eval])
    train = [r for i, r in enumerate(records) if i not in eval_positions]
    evaluation = [r for i, r in enumerate(records) if i in eval_positions]
    return train, evaluation


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with step("split_dataset", args.log_file):
        records = list(read_jsonl(args.input))
        train, evaluation = split(records, args.eval_size, args.seed)
        write_jsonl(args.train, train)
        write_jsonl(args.eval, evaluation)
        write_json(
            args.summary,
            {
                "input": args.input,
                "input_sha256": sha256_file(args.input),
                "seed": args.seed,
                "eval_size": args.eval_size,
                "total": len(records),
                "train": len(train),
                "eval": len(evaluation),
                "train_sha256": sha256_file(args.train),
                "eval_sha256": sha256_file(args.eval),
            },
        )
        log.info(
            "Split %d records into %d train and %d eval (seed %d)",
            len(records),
            len(train),
            len(evaluation),
            args.seed,
        )


if __name__ == "__main__":
    main()
