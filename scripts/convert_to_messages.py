#!/usr/bin/env python
"""Convert instruction data (Alpaca, Alpaca JSON Lines, ShareGPT, OpenAI-style messages) to messages JSONL.

The contract, written once in docs/data-formats.md: the formats (--format; `auto` detects it and logs what it
found), the output record ({"id", "source_index", "messages", "extra"}), what stops the run (problems with the
whole file) and what sends one record to --rejects (problems with that record; fatal unless their share stays
within --max-rejected-fraction), and the cleaning that runs only when asked for (--trim-whitespace,
--placeholder-inputs, --drop-duplicates, --max-record-chars), each counted in --summary. Always: read = kept +
rejected.

Example:
  python scripts/convert_to_messages.py --input data/raw/alpaca_zh_en_sample.json \\
      --output results/data/sample/messages.jsonl --rejects results/data/sample/rejects.jsonl \\
      --summary results/data/sample/convert_summary.json --format auto --trim-whitespace
"""

from __future__ import annotations

import argparse
import codecs
import json
import logging
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from alpaca_lora.common import (
    StepError,
    add_log_argument,
    canonical_json,
    sha256_file,
    sha256_text,
    step,
    write_json,
    write_jsonl,
)

log = logging.getLogger("convert_to_messages")

FORMATS = ("alpaca", "alpaca_jsonl", "sharegpt", "messages")
ALPACA_FIELDS = ("instruction", "input", "output")
# Per conversation format: the list's key, a turn's role and text keys, and role name -> chat role.
CONVERSATION_KEYS = {
    "sharegpt": ("conversations", "from", "value", {"system": "system", "human": "user", "gpt": "assistant"}),
    "messages": ("messages", "role", "content", {role: role for role in ("system", "user", "assistant")}),
}
# Keys whose presence in a record marks its format.
FORMAT_MARKERS = {
    "alpaca": ("instruction", "output"),
    "sharegpt": ("conversations",),
    "messages": ("messages",),
}
DUPLICATE_MODES = ("none", "exact", "near")
JSON_TYPES = {dict: "object", list: "array", str: "string", int: "number", float: "number", bool: "boolean"}


class InputError(StepError):
    """Input that cannot be used at all, or too many bad records: the step stops."""


@dataclass(frozen=True)
class UnparsedLine:
    """A line of a JSON Lines file that is not JSON: a bad record, not a bad file."""

    text: str
    error: str


@dataclass(frozen=True)
class Options:
    trim_whitespace: bool = False
    placeholder_inputs: tuple[str, ...] = ()
    drop_duplicates: str = "none"
    max_record_chars: int = 0  # 0: no limit


@dataclass
class Conversion:
    kept: list[dict] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)
    # Per kept record: what a normalisation changed (trimmed, placeholder_input_emptied), with_input.
    notes: Counter = field(default_factory=Counter)


@dataclass
class Loaded:
    records: list
    container: str  # "json" (a JSON list) or "jsonl"
    lines: list[int] | None = None  # line number of each record in JSON Lines
    utf8_bom: bool = False


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--input", required=True, help="data file (see the formats above)")
    parser.add_argument("--output", required=True, help="messages JSON Lines to write")
    parser.add_argument("--rejects", required=True, help="JSON Lines of rejected records with reasons")
    parser.add_argument("--summary", required=True, help="JSON summary: read, kept, rejected, hashes")
    parser.add_argument("--format", default="auto", choices=["auto", *FORMATS], help="default: %(default)s")
    parser.add_argument(
        "--max-rejected-fraction",
        type=float,
        default=0.0,
        help="largest share of bad records tolerated (they go to --rejects); 0 = any bad record "
        "is fatal (default: %(default)s)",
    )
    parser.add_argument(
        "--trim-whitespace",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="strip leading and trailing whitespace of every text (default: off)",
    )
    parser.add_argument(
        "--placeholder-inputs",
        action="append",
        default=[],
        metavar="TEXT",
        help="an Alpaca input that means 'no input', e.g. 'No input' (repeatable; default: none)",
    )
    parser.add_argument("--drop-duplicates", default="none", choices=DUPLICATE_MODES)
    parser.add_argument(
        "--max-record-chars",
        type=int,
        default=0,
        help="reject records whose texts add up to more characters than this; 0 = no limit",
    )
    add_log_argument(parser)
    return parser.parse_args(argv)


def json_type(value: object) -> str:
    return "null" if value is None else JSON_TYPES.get(type(value), type(value).__name__)


# ---- reading the file --------------------------------------------------------------------------------


def read_text(path: Path) -> tuple[str, bool]:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise InputError(
            f"{path}: not UTF-8 text (byte {error.start}, line {line}): {error.reason}; "
            "re-encode the file as UTF-8"
        ) from error
    if not text.strip():
        raise InputError(f"{path}: the file is empty")
    return text, raw.startswith(codecs.BOM_UTF8)


def parse_lines(text: str) -> tuple[list, list[int]]:
    records, lines = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            records.append(UnparsedLine(line, f"invalid JSON at column {error.colno}: {error.msg}"))
        lines.append(number)
    return records, lines


def load_records(path: Path, fmt: str = "auto") -> Loaded:
    """Read a JSON list or JSON Lines file; the configured format decides which containers are accepted."""
    text, bom = read_text(path)
    if bom:
        log.info("%s starts with a UTF-8 byte order mark; reading it as UTF-8 without it", path)
    try:
        whole = json.loads(text)
    except json.JSONDecodeError as error:
        if text.lstrip().startswith("["):
            truncated = not text.rstrip().endswith("]")
            raise InputError(
                f"{path}: invalid JSON at line {error.lineno}, column {error.colno}: {error.msg}"
                + (" (the file ends before its list does: truncated?)" if truncated else "")
            ) from error
        whole = None
    if isinstance(whole, list):
        loaded = Loaded(whole, "json", utf8_bom=bom)
    elif isinstance(whole, dict) and len(text.strip().splitlines()) > 1:
        raise InputError(f"{path}: one JSON object, not a list of records nor JSON Lines (one record a line)")
    elif whole is not None and not isinstance(whole, dict):
        raise InputError(f"{path}: expected a JSON list of records or JSON Lines, found a {json_type(whole)}")
    else:
        records, lines = parse_lines(text)
        loaded = Loaded(records, "jsonl", lines, bom)
    expected = {"alpaca": "json", "alpaca_jsonl": "jsonl"}.get(fmt)
    if expected and loaded.container != expected:
        found = "JSON Lines" if loaded.container == "jsonl" else "a JSON list"
        other = "alpaca_jsonl" if fmt == "alpaca" else "alpaca"
        raise InputError(
            f"{path}: data.format is {fmt!r}, which expects "
            f"{'a JSON list' if expected == 'json' else 'JSON Lines'}, but the file is {found}; "
            f"set data.format to {other!r} or 'auto'"
        )
    if not loaded.records:
        raise InputError(f"{path}: no records")
    return loaded


def family(fmt: str) -> str:
    return "alpaca" if fmt.startswith("alpaca") else fmt


def looks_like(record: object) -> list[str]:
    """The format families whose marker keys this record has."""
    if not isinstance(record, dict):
        return []
    return [name for name, keys in FORMAT_MARKERS.items() if any(key in record for key in keys)]


def resolve_format(path: Path, loaded: Loaded, fmt: str) -> tuple[str, str]:
    """Return (format, how it was chosen): the configured one, or the one most records look like.

    A file whose records mostly look like another format than the configured one is fatal.
    """
    votes = Counter(name for record in loaded.records for name in looks_like(record))
    if not votes:
        first = next(((i, r) for i, r in enumerate(loaded.records) if isinstance(r, dict)), None)
        if first is None:
            raise InputError(f"{path}: no record is a JSON object")
        raise InputError(
            f"{path}: cannot tell the format: no record has the keys of a supported one (record {first[0]} "
            f"has: {', '.join(sorted(first[1])) or 'none'}); set data.format to one of {', '.join(FORMATS)}"
        )
    ranked = votes.most_common()
    best, count = ranked[0]
    evidence = f"{count} of {len(loaded.records)} records have {' or '.join(map(repr, FORMAT_MARKERS[best]))}"
    if fmt != "auto":
        if votes[family(fmt)] < count:
            raise InputError(
                f"{path}: data.format is {fmt!r}, but the records look like {best!r} ({evidence}); "
                f"set data.format to {best!r} or 'auto'"
            )
        return fmt, "configured"
    if len(ranked) > 1 and ranked[1][1] == count:
        raise InputError(
            f"{path}: cannot tell the format: as many records look like {best!r} as like {ranked[1][0]!r}; "
            "set data.format"
        )
    if best == "alpaca" and loaded.container == "jsonl":
        best = "alpaca_jsonl"
    return best, f"detected: {evidence}"


# ---- one record --------------------------------------------------------------------------------------


class RecordProblem(Exception):
    def __init__(self, field_name: str, reason: str):
        super().__init__(f"field {field_name!r}: {reason}")
        self.field = field_name
        self.reason = reason


def text_field(container: dict, key: str, name: str, required: bool = True) -> str:
    if key not in container:
        if required:
            raise RecordProblem(name, "missing")
        return ""
    value = container[key]
    if not isinstance(value, str):
        raise RecordProblem(name, f"expected a string, found {json_type(value)}")
    if required and not value.strip():
        raise RecordProblem(name, "empty or whitespace only")
    return value


def to_messages(record: dict) -> list[dict]:
    """The recipe's conversion rule, exactly."""
    user = record["instruction"]
    extra = record.get("input", "")
    if extra.strip():
        user = user + "\n" + extra
    return [{"role": "user", "content": user}, {"role": "assistant", "content": record["output"]}]


def alpaca_messages(record: dict, options: Options, notes: set[str]) -> tuple[list[dict], dict]:
    fields = {name: text_field(record, name, name, required=name != "input") for name in ALPACA_FIELDS}
    if options.trim_whitespace:
        trimmed = {name: value.strip() for name, value in fields.items()}
        if trimmed != fields:
            notes.add("trimmed")
        fields = trimmed
    placeholders = {p.strip().casefold() for p in options.placeholder_inputs}
    if fields["input"].strip() and fields["input"].strip().casefold() in placeholders:
        notes.add("placeholder_input_emptied")
        fields["input"] = ""
    if fields["input"].strip():
        notes.add("with_input")
    extra = {key: value for key, value in record.items() if key not in ALPACA_FIELDS}
    return to_messages(fields), extra


def conversation_messages(
    record: dict, fmt: str, options: Options, notes: set[str]
) -> tuple[list[dict], dict]:
    list_key, role_key, text_key, roles = CONVERSATION_KEYS[fmt]
    turns = record.get(list_key)
    if list_key not in record:
        raise RecordProblem(list_key, "missing")
    if not isinstance(turns, list):
        raise RecordProblem(list_key, f"expected an array of turns, found {json_type(turns)}")
    if not turns:
        raise RecordProblem(list_key, "no turns")
    messages, extra = [], {key: value for key, value in record.items() if key != list_key}
    for position, turn in enumerate(turns):
        where = f"{list_key}[{position}]"
        if not isinstance(turn, dict):
            raise RecordProblem(where, f"expected an object, found {json_type(turn)}")
        name = text_field(turn, role_key, f"{where}.{role_key}")
        if name not in roles:
            raise RecordProblem(
                f"{where}.{role_key}", f"unknown role {name!r}; expected one of {', '.join(roles)}"
            )
        role = roles[name]
        # After an optional first system turn: user, assistant, user, ... alternating.
        offset = 1 if messages[:1] and messages[0]["role"] == "system" else 0
        expected = (
            ("system", "user") if position == 0 else [("user",), ("assistant",)][(position - offset) % 2]
        )
        if role not in expected:
            raise RecordProblem(
                f"{where}.{role_key}",
                f"expected the {' or '.join(expected)} role here, found {name!r} ({role}): after an "
                "optional first system turn, user and assistant turns must alternate",
            )
        messages.append({"role": role, "content": text_field(turn, text_key, f"{where}.{text_key}")})
        aside = {key: value for key, value in turn.items() if key not in (role_key, text_key)}
        if aside:
            extra[where] = aside
    if messages[-1]["role"] != "assistant":
        raise RecordProblem(
            f"{list_key}[{len(turns) - 1}].{role_key}", "the conversation must end with an assistant turn"
        )
    if options.trim_whitespace:
        trimmed = [{**message, "content": message["content"].strip()} for message in messages]
        if trimmed != messages:
            notes.add("trimmed")
        messages = trimmed
    return messages, extra


def check_length(record: dict, fmt: str, limit: int) -> None:
    """Reject a record whose texts add up to more than `limit` characters, naming its longest field."""
    if not limit:
        return
    if family(fmt) == "alpaca":
        sizes = {name: len(record.get(name) or "") for name in ALPACA_FIELDS}
    else:
        list_key, _, text_key, _ = CONVERSATION_KEYS[fmt]
        sizes = {f"{list_key}[{i}].{text_key}": len(t[text_key]) for i, t in enumerate(record[list_key])}
    total = sum(sizes.values())
    if total > limit:
        longest = max(sizes, key=sizes.get)
        raise RecordProblem(
            longest, f"{total:,} characters in the record, more than max_record_chars {limit:,}"
        )


def record_messages(record: object, fmt: str, options: Options, notes: set[str]):
    """(messages, extra) of one record; raises RecordProblem naming the field when it is unusable."""
    if isinstance(record, UnparsedLine):
        raise RecordProblem("<record>", record.error)
    if not isinstance(record, dict):
        raise RecordProblem("<record>", f"expected an object, found {json_type(record)}")
    if family(fmt) == "alpaca":
        messages, extra = alpaca_messages(record, options, notes)
    else:
        messages, extra = conversation_messages(record, fmt, options, notes)
    check_length(record, fmt, options.max_record_chars)
    return messages, extra


def near_duplicate_key(messages: list[dict]) -> str:
    """The same text up to Unicode compatibility forms, case, whitespace and punctuation."""

    def fold(text: str) -> str:
        text = unicodedata.normalize("NFKC", text).casefold()
        return "".join(c for c in text if not c.isspace() and not unicodedata.category(c).startswith("P"))

    return canonical_json([[m["role"], fold(m["content"])] for m in messages])


def convert(
    records: list, fmt: str = "alpaca", options: Options | None = None, lines: list[int] | None = None
) -> Conversion:
    options = options or Options()
    result = Conversion()
    first_seen: dict[str, int] = {}
    for index, record in enumerate(records):
        where = {"source_index": index} | ({"line": lines[index]} if lines else {})
        original = record.text if isinstance(record, UnparsedLine) else record
        notes: set[str] = set()
        try:
            messages, extra = record_messages(record, fmt, options, notes)
        except RecordProblem as problem:
            result.rejected.append(
                where
                | {"kind": "invalid", "field": problem.field, "reason": problem.reason, "record": original}
            )
            continue
        if options.drop_duplicates != "none":
            key = (
                canonical_json(messages)
                if options.drop_duplicates == "exact"
                else near_duplicate_key(messages)
            )
            if key in first_seen:
                reason = f"{options.drop_duplicates} duplicate of record {first_seen[key]}"
                result.rejected.append(
                    where | {"kind": "duplicate", "field": "<record>", "reason": reason, "record": original}
                )
                continue
            first_seen[key] = index
        kept = {"id": sha256_text(canonical_json(messages))[:16], "source_index": index, "messages": messages}
        if extra:
            kept["extra"] = extra
        result.kept.append(kept)
        result.notes.update(notes)
    return result


# ---- the step ----------------------------------------------------------------------------------------


def describe(source: Path, reject: dict) -> str:
    line = f" (line {reject['line']})" if "line" in reject else ""
    return f"{source}: record {reject['source_index']}{line}: field {reject['field']!r}: {reject['reason']}"


def check_rejected_share(source: Path, result: Conversion, read: int, limit: float) -> None:
    invalid = [r for r in result.rejected if r["kind"] == "invalid"]
    if invalid and len(invalid) / read > limit:
        raise InputError(
            f"{describe(source, invalid[0])} ({len(invalid)} of {read} records are bad, more than the "
            f"{limit:.0%} allowed by max_rejected_fraction)"
        )
    if not result.kept:
        raise InputError(f"{source}: no usable record among {read}")


def summarise(args: argparse.Namespace, loaded: Loaded, fmt: str, chosen: str, result: Conversion) -> dict:
    rejected_by = Counter(r["kind"] for r in result.rejected)
    return {
        "input": args.input,
        "input_sha256": sha256_file(args.input),
        "format": fmt,
        "format_chosen": chosen,
        "utf8_bom": loaded.utf8_bom,
        "read": len(loaded.records),
        "kept": len(result.kept),
        "rejected": len(result.rejected),
        "rejected_invalid": rejected_by["invalid"],
        "rejected_duplicate": rejected_by["duplicate"],
        "rejected_by_field": dict(sorted(Counter(r["field"] for r in result.rejected).items())),
        "normalisations": {
            "trim_whitespace": args.trim_whitespace,
            "placeholder_inputs": args.placeholder_inputs,
            "drop_duplicates": args.drop_duplicates,
            "max_record_chars": args.max_record_chars,
        },
        "trimmed": result.notes["trimmed"],
        "placeholder_inputs_emptied": result.notes["placeholder_input_emptied"],
        "kept_with_input": result.notes["with_input"],
        "kept_multi_turn": sum(1 for r in result.kept if sum(m["role"] == "user" for m in r["messages"]) > 1),
        "kept_with_system": sum(1 for r in result.kept if r["messages"][0]["role"] == "system"),
        "kept_with_extra": sum(1 for r in result.kept if "extra" in r),
        "output_sha256": sha256_file(args.output),
        "rejects_sha256": sha256_file(args.rejects),
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with step("convert_to_messages", args.log_file):
        convert_file(args)


def convert_file(args: argparse.Namespace) -> None:
    source = Path(args.input)
    loaded = load_records(source, args.format)
    fmt, chosen = resolve_format(source, loaded, args.format)
    log.info("%s: %d records, format %s (%s)", source, len(loaded.records), fmt, chosen)
    options = Options(
        trim_whitespace=args.trim_whitespace,
        placeholder_inputs=tuple(args.placeholder_inputs),
        drop_duplicates=args.drop_duplicates,
        max_record_chars=args.max_record_chars,
    )
    result = convert(loaded.records, fmt, options, loaded.lines)
    for reject in result.rejected[:20]:
        log.warning("%s", describe(source, reject))
    if len(result.rejected) > 20:
        log.warning("... and %d more rejected records: see %s", len(result.rejected) - 20, args.rejects)
    check_rejected_share(source, result, len(loaded.records), args.max_rejected_fraction)
    write_jsonl(args.output, result.kept)
    write_jsonl(args.rejects, result.rejected)
    summary = summarise(args, loaded, fmt, chosen, result)
    write_json(args.summary, summary)
    log.info(
        "Read %d records, kept %d, rejected %d (%d invalid, %d duplicates); trimmed %d, "
        "placeholder inputs emptied %d",
        summary["read"],
        summary["kept"],
        summary["rejected"],
        summary["rejected_invalid"],
        summary["rejected_duplicate"],
        summary["trimmed"],
        summary["placeholder_inputs_emptied"],
    )


if __name__ == "__main__":
    main()
