#!/usr/bin/env python
"""Convert Alpaca JSON (a list of {instruction, input, output}) to chat "messages" JSON Lines.

The rule is the recipe's: the user turn is `instruction`, plus "\\n" + `input` when `input.strip()` is
non-empty; the assistant turn is `output`. Each output line is
  {"id": <sha256 of the messages, 16 hex>, "source_index": <index in the input list>, "messages": [...]}

Every record is validated. A bad record names the file, the record index and the field. By default any bad
record stops the step; with --max-rejected-fraction above 0 bad records go to --rejects with their reasons
instead, as long as their share stays at or below that fraction. Always: read = kept + rejected.

Example:
  python scripts/alpaca_to_messages.py --input data/raw/alpaca_zh_en_sample.json \\
      --output results/data/sample/messages.jsonl --rejects results/data/sample/rejects.jsonl \\
      --summary results/data/sample/convert_summary.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import (
    add_log_argument,
    canonical_json,
    setup_logging,
    sha256_file,
    sha256_text,
    write_json,
    write_jsonl,
)

log = setup_logging("alpaca_to_messages")

REQUIRED_TEXT_FIELDS = ("instruction", "output")


class InputError(ValueError):
    """Input that cannot be used at all (not a record-level problem)."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--input", required=True, help="Alpaca JSON file (a JSON list of records)")
    parser.add_argument("--output", required=True, help="messages JSON Lines to write")
    parser.add_argument("--rejects", required=True, help="JSON Lines of rejected records with reasons")
    parser.add_argument("--summary", required=True, help="JSON summary: read, kept, rejected, hashes")
    parser.add_argument(
        "--max-rejected-fraction",
        type=float,
        default=0.0,
        help="largest share of bad records tolerated (they go to --rejects); 0 = any bad record "
        "is fatal (default: %(default)s)",
    )
    add_log_argument(parser)
    return parser.parse_args(argv)


def load_alpaca(path: Path) -> list:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise InputError(f"{path}: not UTF-8 text (byte {error.start}): {error.reason}") from error
    try:
        records = json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(
            f"{path}: invalid JSON at line {error.lineno}, column {error.colno}: {error.msg}"
        ) from error
    if not isinstance(records, list):
        raise InputError(f"{path}: expected a JSON list of Alpaca records, found {type(records).__name__}")
    return records


def record_problem(record: object) -> tuple[str, str] | None:
    """Return (field, reason) for the first problem of a record, or None when it is usable."""
    if not isinstance(record, dict):
        return "<record>", f"expected an object, found {type(record).__name__}"
    for field in REQUIRED_TEXT_FIELDS:
        if field not in record:
            return field, "missing"
        if not isinstance(record[field], str):
            return field, f"expected a string, found {type(record[field]).__name__}"
        if not record[field].strip():
            return field, "empty or whitespace only"
    if "input" in record and not isinstance(record["input"], str):
        return "input", f"expected a string, found {type(record['input']).__name__}"
    return None


def to_messages(record: dict) -> list[dict]:
    """The recipe's conversion rule, exactly."""
    user = record["instruction"]
    extra = record.get("input", "")
    if extra.strip():
        user = user + "\n" + extra
    return [{"role": "user", "content": user}, {"role": "assistant", "content": record["output"]}]


def convert(records: list, source: Path) -> tuple[list[dict], list[dict]]:
    kept, rejected = [], []
    for index, record in enumerate(records):
        problem = record_problem(record)
        if problem:
            field, reason = problem
            rejected.append({"source_index": index, "field": field, "reason": reason, "record": record})
            continue
        messages = to_messages(record)
        kept.append(
            {
                "id": sha256_text(canonical_json(messages))[:16],
                "source_index": index,
                "messages": messages,
            }
        )
    return kept, rejected


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    setup_logging("alpaca_to_messages", args.log_file)
    source = Path(args.input)
    records = load_alpaca(source)
    kept, rejected = convert(records, source)
    for reject in rejected[:20]:
        log.warning(
            "%s: record %d: field %r: %s",
            source,
            reject["source_index"],
            reject["field"],
            reject["reason"],
        )
    share = len(rejected) / len(records) if records else 0.0
    if not kept:
        raise InputError(f"{source}: no usable record among {len(records)}")
    if share > args.max_rejected_fraction:
        first = rejected[0]
        raise InputError(
            f"{source}: record {first['source_index']}: field {first['field']!r}: {first['reason']} "
            f"({len(rejected)} of {len(records)} records are bad, more than the "
            f"{args.max_rejected_fraction:.0%} allowed by max_rejected_fraction)"
        )
    write_jsonl(args.output, kept)
    write_jsonl(args.rejects, rejected)
    summary = {
        "input": str(source),
        "input_sha256": sha256_file(source),
        "read": len(records),
        "kept": len(kept),
        "rejected": len(rejected),
        "kept_with_input": sum(1 for r in kept if records[r["source_index"]].get("input", "").strip()),
        "output_sha256": sha256_file(args.output),
    }
    write_json(args.summary, summary)
    log.info("Read %d records, kept %d, rejected %d", summary["read"], summary["kept"], summary["rejected"])


if __name__ == "__main__":
    main()
