#!/usr/bin/env python
"""Convert instruction data to chat "messages" JSON Lines: the pipeline's data step.

Reads Alpaca records (with optional system prompt and history), ShareGPT conversations and OpenAI-style
messages from JSON, JSON Lines, Parquet or CSV files or a pinned Hugging Face dataset; maps keys and role
names (--columns, --roles); checks every record; and writes, all three or none:
  --output   one line per kept record: {"id", "source_index", ["source",] "messages", ["extra"]}
  --rejects  one line per rejected record: where it is, the field, the reason, and the record itself
  --summary  counts (read = kept + rejected + sampled_out), hashes, and the mapping used per source
The formats, the key and role mapping, which problems stop the step and which reject one record, and every
option: docs/data-formats.md.

Examples:
  python scripts/convert_to_messages.py --input data/raw/alpaca_zh_en_sample.json \\
      --output results/data/sample/messages.jsonl --rejects results/data/sample/rejects.jsonl \\
      --summary results/data/sample/convert_summary.json --trim-whitespace
  python scripts/convert_to_messages.py --output m.jsonl --rejects r.jsonl --summary s.json \\
      --source '{"path": "a.parquet", "columns": {"instruction": "prompt", "output": "response"}}' \\
      --source '{"path": "chats.jsonl", "format": "sharegpt", "sample": 0.25}' --seed 1
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import orjson

from alpaca_lora.common import (
    add_log_argument,
    atomic_paths,
    canonical_bytes,
    canonical_json,
    refuse_shared_paths,
    sha256_text,
    step,
)
from alpaca_lora.data_sources import (
    INT_RANGE,
    DuplicateKeys,
    InputError,
    Loaded,
    NotJson,
    Source,
    UnparsedLine,
    json_type,
    load_source,
)

log = logging.getLogger("convert_to_messages")

FORMATS = ("alpaca", "alpaca_jsonl", "sharegpt", "messages")
DUPLICATE_MODES = ("none", "exact", "near")
CHAT_ROLES = ("system", "user", "assistant")
# Role names and turn keys of tool use (OpenAI, LLaMA-Factory, Llama 3): refused with a clear reason.
TOOL_ROLES = frozenset({"tool", "function", "function_call", "observation", "ipython", "tool_call"})
TOOL_KEYS = frozenset({"tool_calls", "function_call", "tool_call_id"})
DEFAULT_ROLES = {"user": ("user", "human"), "assistant": ("assistant", "gpt"), "system": ("system",)}
COLUMN_KEYS = ("instruction", "input", "output", "system", "history", "messages", "role", "content")
# The list of turns is "conversations" in ShareGPT and "messages" in OpenAI-style data; either format reads
# a turn's role from "from" or "role" and its text from "value" or "content" unless --columns says which.
MESSAGES_KEY = {"sharegpt": "conversations", "messages": "messages"}
MAX_DEPTH = 100  # nesting levels of a kept value; deeper values are bad records
PROGRESS_EVERY = 200_000  # records between two progress lines in the log
SURROGATE = re.compile("[\ud800-\udfff]")


class RecordProblem(Exception):
    def __init__(self, field_name: str, reason: str):
        super().__init__(f"field {field_name!r}: {reason}")
        self.field = field_name
        self.reason = reason


@dataclass(frozen=True)
class Mapping:
    """Which keys of a record hold what, and which role names mean which chat role."""

    instruction: str = "instruction"
    input: str = "input"
    output: str = "output"
    system: str = "system"
    history: str = "history"
    messages: str = "conversations"
    role: tuple[str, ...] = ("from", "role")
    content: tuple[str, ...] = ("value", "content")
    roles: dict = field(default_factory=lambda: names_to_roles(DEFAULT_ROLES))

    @cached_property
    def alpaca_keys(self) -> frozenset[str]:
        return frozenset((self.instruction, self.input, self.output, self.system, self.history))

    def describe(self, fmt: str) -> dict:
        keys = ("instruction", "input", "output", "system", "history")
        if family(fmt) != "alpaca":
            keys = ("system", "messages", "role", "content")
        columns = {key: getattr(self, key) for key in keys}
        roles = {role: sorted(n for n, r in self.roles.items() if r == role) for role in CHAT_ROLES}
        return {"columns": columns, "roles": roles}


@dataclass(frozen=True)
class Options:
    trim_whitespace: bool = False
    placeholder_inputs: tuple[str, ...] = ()
    drop_duplicates: str = "none"
    max_record_chars: int = 0  # 0: no limit

    @cached_property
    def placeholders(self) -> frozenset[str]:
        return frozenset(p.strip().casefold() for p in self.placeholder_inputs)


# What a kept record has or what a normalisation changed in it, as bits of a number per kept record.
NOTES = {
    "trimmed": 1,
    "placeholder_input_emptied": 2,
    "with_input": 4,
    "multi_turn": 8,
    "with_system": 16,
    "with_extra": 32,
}


@dataclass
class Conversion:
    ids: list[str] = field(default_factory=list)  # of the kept records
    output: bytearray = field(default_factory=bytearray)  # the kept records' output lines, in order
    ends: list[int] = field(default_factory=list)  # where each kept record's line ends in output
    notes: list[int] = field(default_factory=list)  # per kept record: NOTES bits
    rejected: list[dict] = field(default_factory=list)
    sampled_out: int = 0

    def line(self, index: int) -> bytes:
        return self.output[self.ends[index - 1] if index else 0 : self.ends[index]]

    @property
    def kept(self) -> list[dict]:
        """The kept records as written (read back from their lines)."""
        return [orjson.loads(self.line(index)) for index in range(len(self.ids))]


# ---- arguments ---------------------------------------------------------------------------------------


def fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:  # also refuses nan
        raise argparse.ArgumentTypeError(f"{text} is not a fraction between 0 and 1")
    return value


def non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative")
    return value


def json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not JSON ({error})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--input", help="one local data file: JSON, JSON Lines, Parquet (.parquet), CSV (.csv)"
    )
    parser.add_argument(
        "--source",
        action="append",
        type=json_object,
        default=[],
        metavar="JSON",
        help='a data source instead of --input (repeatable): {"path": FILE} or {"hub": {"repo_id", '
        '"revision", "split", "subset"}}, with optional "format", "columns", "roles", "sample"',
    )
    parser.add_argument("--output", required=True, help="messages JSON Lines to write")
    parser.add_argument("--rejects", required=True, help="JSON Lines of rejected records with reasons")
    parser.add_argument("--summary", required=True, help="JSON summary: read, kept, rejected, hashes")
    parser.add_argument(
        "--format", default="auto", choices=["auto", *FORMATS], help="of every source (default: %(default)s)"
    )
    parser.add_argument(
        "--columns", type=json_object, default={}, metavar="JSON", help="key mapping of every source"
    )
    parser.add_argument(
        "--roles", type=json_object, default={}, metavar="JSON", help="role names of every source"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the sources' sampling (default: 0)")
    parser.add_argument(
        "--max-rejected-fraction",
        type=fraction,
        default=0.0,
        help="largest share of bad records of a source tolerated (they go to --rejects); 0 = any bad record "
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
        type=non_negative,
        default=0,
        help="reject records whose texts add up to more characters than this; 0 = no limit",
    )
    add_log_argument(parser)
    args = parser.parse_args(argv)
    if (args.input is None) == (not args.source):
        parser.error("give either --input or one or more --source")
    try:
        args.sources = sources_from(args)
    except ValueError as error:
        parser.error(str(error))
    inputs = [source.path for source in args.sources if source.path is not None]
    refuse_shared_paths(
        parser,
        {
            "--input" if args.input else "--source": inputs,
            "--output": args.output,
            "--rejects": args.rejects,
            "--summary": args.summary,
            "--log-file": args.log_file,
        },
    )
    return args


def sources_from(args: argparse.Namespace) -> list[Source]:
    """The sources, each with the data-wide format, columns and roles unless it sets its own."""
    given = [{"path": args.input}] if args.input is not None else args.source
    sources = []
    for settings in given:
        check_source(settings)
        source = Source(**{"format": args.format, "columns": args.columns, "roles": args.roles, **settings})
        mapping_for(source, "alpaca")  # checks columns and roles
        sources.append(source)
    return sources


def check_source(settings: dict) -> None:
    """What the recipe schema checks, for a standalone run: raise ValueError saying what is wrong."""
    hub, sample = settings.get("hub", {}), settings.get("sample", 1)
    problems = [
        set(settings) - {"path", "hub", "format", "columns", "roles", "sample"}
        and "only path or hub, format, columns, roles and sample",
        ("path" in settings) == ("hub" in settings) and "exactly one of path and hub",
        not isinstance(settings.get("path", ""), str) and "a path that is a string",
        not (isinstance(hub, dict) and {"repo_id", "revision", "split"} <= set(hub) or "hub" not in settings)
        and "a hub with repo_id, revision and split",
        settings.get("format", "auto") not in ("auto", *FORMATS) and f"a format: auto or one of {FORMATS}",
        not (isinstance(sample, int | float) and not isinstance(sample, bool) and 0 < sample <= 1)
        and "a sample share above 0 and at most 1",
        not all(isinstance(settings.get(key, {}), dict) for key in ("columns", "roles"))
        and "columns and roles that are objects",
    ]
    wanted = [problem for problem in problems if problem]
    if wanted:
        raise ValueError(f"a source needs {'; '.join(wanted)}: {json.dumps(settings)}")


def names_to_roles(roles: dict) -> dict[str, str]:
    table: dict[str, str] = {}
    for role, names in roles.items():
        for name in [names] if isinstance(names, str) else names:
            if table.setdefault(name, role) != role:
                raise ValueError(f"role name {name!r} is given for both {table[name]} and {role}")
    return table


def mapping_for(source: Source, fmt: str) -> Mapping:
    """The format's own key and role names, with those the source maps replacing them."""
    columns = dict(source.columns)
    unknown = set(columns) - set(COLUMN_KEYS) or set(source.roles) - set(CHAT_ROLES)
    if unknown:
        raise ValueError(f"{source.label}: unknown column or role {sorted(unknown)}; known: {COLUMN_KEYS}")
    if not all(isinstance(v, str) and v for v in columns.values()):
        raise ValueError(f"{source.label}: every column must be a non-empty key name: {columns}")
    names = [n for v in source.roles.values() for n in ([v] if isinstance(v, str) else v)]
    if not isinstance(source.roles, dict) or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"{source.label}: roles must map a chat role to role names: {source.roles}")
    for key in ("role", "content"):
        if key in columns:
            columns[key] = (columns[key],)
    columns.setdefault("messages", MESSAGES_KEY.get(fmt, "conversations"))
    return Mapping(**columns, roles=names_to_roles({**DEFAULT_ROLES, **source.roles}))


def family(fmt: str) -> str:
    return "alpaca" if fmt.startswith("alpaca") else fmt


def check_container(label: str, loaded: Loaded, fmt: str) -> None:
    """alpaca means a JSON list and alpaca_jsonl JSON Lines (for JSON files; other files are tables)."""
    expected = {"alpaca": "json", "alpaca_jsonl": "jsonl"}.get(fmt)
    if expected and loaded.container in ("json", "jsonl") and loaded.container != expected:
        found = "JSON Lines" if loaded.container == "jsonl" else "a JSON list"
        other = "alpaca_jsonl" if fmt == "alpaca" else "alpaca"
        raise InputError(
            f"{label}: data.format is {fmt!r}, which expects "
            f"{'a JSON list' if expected == 'json' else 'JSON Lines'}, but the file is {found}; "
            f"set data.format to {other!r} or 'auto'"
        )
    if not loaded.records:
        raise InputError(f"{label}: no records")


# ---- the format -------------------------------------------------------------------------------------------


def format_markers(source: Source) -> dict[str, tuple[str, ...]]:
    """Keys whose presence in a record marks each format (after the source's column mapping)."""
    alpaca = mapping_for(source, "alpaca")
    markers = {"alpaca": (alpaca.instruction, alpaca.output)}
    for fmt in ("sharegpt", "messages"):
        key = (mapping_for(source, fmt).messages,)
        if key not in markers.values():
            markers[fmt] = key
    return markers


def resolve_format(label: str, loaded: Loaded, fmt: str, source: Source | None = None) -> tuple[str, str]:
    """Return (format, how it was chosen): the configured one, or the one most records look like.

    A file whose records mostly look like another format than the configured one is fatal.
    """
    markers = format_markers(source or Source(path=label))
    votes = Counter(
        name
        for record in loaded.records
        if isinstance(record, dict)
        for name, keys in markers.items()
        if any(key in record for key in keys)
    )
    if not votes:
        first = next(((i, r) for i, r in enumerate(loaded.records) if isinstance(r, dict)), None)
        if first is None:
            raise InputError(f"{label}: no record is a JSON object")
        raise InputError(
            f"{label}: cannot tell the format: no record has the keys of a supported one (record {first[0]} "
            f"has: {', '.join(sorted(first[1])) or 'none'}); set data.format to one of {', '.join(FORMATS)}"
            " and, for other key names, data.columns"
        )
    ranked = votes.most_common()
    best, count = ranked[0]
    evidence = f"{count} of {len(loaded.records)} records have {' or '.join(map(repr, markers[best]))}"
    if fmt != "auto":
        if votes[family(fmt)] < count and family(fmt) in markers:
            raise InputError(
                f"{label}: data.format is {fmt!r}, but the records look like {best!r} ({evidence}); "
                f"set data.format to {best!r} or 'auto'"
            )
        return fmt, "configured"
    if len(ranked) > 1 and ranked[1][1] == count:
        raise InputError(
            f"{label}: cannot tell the format: as many records look like {best!r} as like {ranked[1][0]!r}; "
            "set data.format"
        )
    if best == "alpaca" and loaded.container == "jsonl":
        best = "alpaca_jsonl"
    return best, f"detected: {evidence}"


# ---- one record -------------------------------------------------------------------------------------------


def is_blank(text: str) -> bool:
    """Nothing a reader would see: only whitespace, zero-width, control or format characters."""
    stripped = text.strip()
    if not stripped or stripped[0].isalnum():
        return not stripped
    return all(unicodedata.category(c)[0] in "CZ" for c in stripped)


def text_field(container: dict, key: str, name: str, required: bool = True) -> str:
    if key not in container:
        if required:
            raise RecordProblem(name, "missing")
        return ""
    value = container[key]
    if not isinstance(value, str):
        raise RecordProblem(name, f"expected a string, found {json_type(value)}")
    if required and is_blank(value):
        invisible = "" if not value.strip() else " (only zero-width, control or format characters)"
        raise RecordProblem(name, f"empty or whitespace only{invisible}")
    return value


def to_messages(record: dict) -> list[dict]:
    """The recipe's conversion rule, exactly."""
    user = record["instruction"]
    extra = record.get("input", "")
    if extra.strip():
        user = user + "\n" + extra
    return [{"role": "user", "content": user}, {"role": "assistant", "content": record["output"]}]


@dataclass
class Turns:
    """A record's messages so far, with the field each text comes from (to name it in a reason)."""

    messages: list[dict] = field(default_factory=list)
    fields: list[str] = field(default_factory=list)

    def add(self, role: str, content: str, where: str) -> None:
        self.messages.append({"role": role, "content": content})
        self.fields.append(where)


def alpaca_messages(record: dict, m: Mapping, options: Options, notes: set[str]) -> tuple[Turns, dict]:
    fields = {
        "instruction": text_field(record, m.instruction, m.instruction),
        "input": text_field(record, m.input, m.input, required=False),
        "output": text_field(record, m.output, m.output),
    }
    turns = Turns()
    if m.system in record:
        system = text_field(record, m.system, m.system, required=False)
        if system.strip():
            turns.add("system", system, m.system)
    if m.history in record:
        history_turns(record, m.history, turns)
    if options.trim_whitespace:
        trimmed = {name: value.strip() for name, value in fields.items()}
        earlier = [{**message, "content": message["content"].strip()} for message in turns.messages]
        if trimmed != fields or earlier != turns.messages:
            notes.add("trimmed")
        fields, turns.messages = trimmed, earlier
    given = fields["input"].strip()
    if given and options.placeholder_inputs and given.casefold() in options.placeholders:
        notes.add("placeholder_input_emptied")
        fields["input"] = given = ""
    if given:
        notes.add("with_input")
    turns.messages += to_messages(fields)
    turns.fields += [m.instruction, m.output]
    used = m.alpaca_keys
    return turns, {} if record.keys() <= used else {k: v for k, v in record.items() if k not in used}


def history_turns(record: dict, key: str, turns: Turns) -> None:
    """LLaMA-Factory's history: earlier [instruction, answer] pairs, oldest first."""
    history = record.get(key, [])
    if not isinstance(history, list):
        raise RecordProblem(
            key, f"expected an array of [instruction, answer] pairs, found {json_type(history)}"
        )
    for index, pair in enumerate(history):
        if not isinstance(pair, list) or len(pair) != 2:
            raise RecordProblem(
                f"{key}[{index}]", f"expected an [instruction, answer] pair, found {pair!r:.60}"
            )
        for part, role in enumerate(("user", "assistant")):
            where = f"{key}[{index}][{part}]"
            turns.add(role, text_field({"text": pair[part]}, "text", where), where)


def content_text(value: object, where: str, extra: dict) -> str:
    """A turn's text: a string, or OpenAI's list of {"type": "text", "text": ...} parts joined by newlines."""
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise RecordProblem(where, f"expected a string or a list of text parts, found {json_type(value)}")
    texts = []
    for index, part in enumerate(value):
        if not isinstance(part, dict):
            raise RecordProblem(
                f"{where}[{index}]", f"expected a content part object, found {json_type(part)}"
            )
        if part.get("type") != "text":
            kind = f"of type {part['type']!r}" if "type" in part else "without a type"
            raise RecordProblem(f"{where}[{index}].type", f"a content part {kind}: only text is supported")
        texts.append(text_field(part, "text", f"{where}[{index}].text", required=False))
        if set(part) - {"type", "text"}:
            extra[f"{where}[{index}]"] = {k: v for k, v in part.items() if k not in ("type", "text")}
    return "\n".join(texts)


def first_key(turn: dict, keys: tuple[str, ...], where: str) -> str:
    for key in keys:
        if key in turn:
            return key
    nor = f" (nor {', '.join(map(repr, keys[1:]))})" if keys[1:] else ""
    raise RecordProblem(f"{where}.{keys[0]}", f"missing{nor}")


def check_role(turns: Turns, role: str, name: str, where: str) -> None:
    """After an optional first system turn, user and assistant turns alternate."""
    count = len(turns.messages)
    offset = 1 if turns.messages[:1] and turns.messages[0]["role"] == "system" else 0
    expected = ("system", "user") if count == 0 else [("user",), ("assistant",)][(count - offset) % 2]
    if role not in expected:
        raise RecordProblem(
            where,
            f"expected the {' or '.join(expected)} role here, found {name!r} ({role}): after an optional "
            "first system turn, user and assistant turns must alternate",
        )


def add_turn(turns: Turns, turn: object, where: str, m: Mapping, extra: dict) -> None:
    """Check one turn and add it; its other keys go to extra[where]."""
    if not isinstance(turn, dict):
        raise RecordProblem(where, f"expected an object, found {json_type(turn)}")
    role_key = first_key(turn, m.role, where)
    name = text_field(turn, role_key, f"{where}.{role_key}")
    tool_key = next((k for k in sorted(TOOL_KEYS & turn.keys()) if turn[k] not in (None, [], {}, "")), None)
    if tool_key or (name in TOOL_ROLES and name not in m.roles):
        what = f"key {tool_key!r}" if tool_key else f"role {name!r}"
        raise RecordProblem(
            f"{where}.{tool_key or role_key}", f"a tool or function-call turn ({what}): not supported yet"
        )
    if name not in m.roles:
        raise RecordProblem(
            f"{where}.{role_key}",
            f"unknown role {name!r}; expected one of {', '.join(sorted(m.roles))} (data.roles maps others)",
        )
    check_role(turns, m.roles[name], name, f"{where}.{role_key}")
    content_key = first_key(turn, m.content, where)
    content = content_text(turn[content_key], f"{where}.{content_key}", extra)
    text_field({"text": content}, "text", f"{where}.{content_key}")
    turns.add(m.roles[name], content, f"{where}.{content_key}")
    if len(turn) > 2:
        extra[where] = {key: value for key, value in turn.items() if key not in (role_key, content_key)}


def role_of(turn: object, m: Mapping) -> str | None:
    """The chat role a turn names, if it names a known one."""
    key = next((key for key in m.role if key in turn), None) if isinstance(turn, dict) else None
    name = turn.get(key) if key else None
    return m.roles.get(name) if isinstance(name, str) else None


def conversation_messages(record: dict, m: Mapping, options: Options, notes: set[str]) -> tuple[Turns, dict]:
    key = m.messages
    if key not in record:
        raise RecordProblem(key, "missing")
    listed = record[key]
    if not isinstance(listed, list):
        raise RecordProblem(key, f"expected an array of turns, found {json_type(listed)}")
    if not listed:
        raise RecordProblem(key, "no turns")
    turns, extra = Turns(), {k: value for k, value in record.items() if k not in (key, m.system)}
    system = text_field(record, m.system, m.system, required=False)
    if system.strip():
        turns.add("system", system, m.system)
    if system.strip() and role_of(listed[0], m) == "system":
        raise RecordProblem(m.system, f"a system prompt both here and in {key}[0]: which one is meant?")
    for index, turn in enumerate(listed):
        add_turn(turns, turn, f"{key}[{index}]", m, extra)
    if turns.messages[-1]["role"] != "assistant":
        last = len(listed) - 1
        where = f"{key}[{last}].{first_key(listed[last], m.role, key)}"
        raise RecordProblem(where, "the conversation must end with an assistant turn")
    if options.trim_whitespace:
        trimmed = [{**message, "content": message["content"].strip()} for message in turns.messages]
        if trimmed != turns.messages:
            notes.add("trimmed")
        turns.messages = trimmed
    return turns, extra


def check_length(turns: Turns, limit: int) -> None:
    """Reject a record whose texts add up to more than `limit` characters, naming its longest field."""
    sizes = [len(message["content"]) for message in turns.messages]
    total = sum(sizes)
    if limit and total > limit:
        longest = turns.fields[sizes.index(max(sizes))]
        raise RecordProblem(
            longest, f"{total:,} characters in the record, more than max_record_chars {limit:,}"
        )


def value_problem(value: object, path: str, depth: int = 0) -> tuple[str, str] | None:
    """The first part of a value that the output cannot hold as it is: (where, why), or None."""
    if isinstance(value, str):
        if not value.isascii() and SURROGATE.search(value):
            return path, "a lone surrogate (\\ud800-\\udfff escape without its pair) is not text"
        return None
    if isinstance(value, NotJson):
        return path, value.reason
    if isinstance(value, bool | float) or value is None:
        return None
    if isinstance(value, int):
        return None if INT_RANGE[0] <= value <= INT_RANGE[1] else (path, "an integer beyond 64 bits")
    if depth >= MAX_DEPTH:  # named by the key that holds it: the full path would be as deep
        return re.match(r"[^.\[]*", path)[0], f"nested more than {MAX_DEPTH} levels deep"
    if isinstance(value, DuplicateKeys):
        key = value.repeated[0]
        return f"{path}.{key}" if path else key, f"the key {key!r} appears more than once in one object"
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, item in items:
        where = f"{path}[{key}]" if isinstance(value, list) else (f"{path}.{key}" if path else str(key))
        problem = value_problem(item, where, depth + 1)
        if problem:
            return problem
    return None


def record_messages(record: object, fmt: str, m: Mapping, options: Options, notes: set[str]) -> tuple:
    """(messages, extra) of one record; raises RecordProblem naming the field when it is unusable."""
    if isinstance(record, UnparsedLine):
        raise RecordProblem("<record>", record.error)
    if not isinstance(record, dict):
        raise RecordProblem("<record>", f"expected an object, found {json_type(record)}")
    if family(fmt) == "alpaca":
        turns, extra = alpaca_messages(record, m, options, notes)
    else:
        turns, extra = conversation_messages(record, m, options, notes)
    check_length(turns, options.max_record_chars)
    problem = value_problem(extra, "")
    if problem:
        raise RecordProblem(*problem)
    return turns.messages, extra


def near_duplicate_key(messages: list[dict]) -> str:
    """The same text up to Unicode compatibility forms, case, whitespace and punctuation."""

    def fold(text: str) -> str:
        text = unicodedata.normalize("NFKC", text).casefold()
        return "".join(c for c in text if not c.isspace() and not unicodedata.category(c).startswith("P"))

    return canonical_json([[m["role"], fold(m["content"])] for m in messages])


@dataclass
class Context:
    """What a conversion needs besides the records: where they come from and how to read them."""

    fmt: str = "alpaca"
    mapping: Mapping = field(default_factory=Mapping)
    options: Options = field(default_factory=Options)
    lines: list[int] | None = None
    check_values: bool = True  # look for values the output cannot hold before converting
    source: int | None = None  # the source's position, when there are several
    first_seen: dict = field(default_factory=dict)  # duplicate key -> where its first record is


def convert(
    records: list,
    fmt: str = "alpaca",
    options: Options | None = None,
    lines: list[int] | None = None,
    context: Context | None = None,
) -> Conversion:
    context = context or Context(fmt, mapping_for(Source(path="-"), fmt), options or Options(), lines)
    result = Conversion()
    for index, record in enumerate(records):
        if index and not index % PROGRESS_EVERY:
            log.info("converted %d of %d records", index, len(records))
        convert_one(index, record, context, result)
    return result


def convert_one(index: int, record: object, context: Context, result: Conversion) -> None:
    where = {"source": context.source} if context.source is not None else {}
    where["source_index"] = index
    notes: set[str] = set()
    try:
        problem = value_problem(record, "") if context.check_values else None
        if problem:
            raise RecordProblem(*problem)
        messages, extra = record_messages(record, context.fmt, context.mapping, context.options, notes)
        kept = {
            "id": hashlib.sha256(canonical_bytes(messages)).hexdigest()[:16],
            **where,
            "messages": messages,
        }
        if extra:
            kept["extra"] = extra
        line = orjson.dumps(kept)
    except RecordProblem as problem:
        result.rejected.append(reject(record, where, context, "invalid", problem.field, problem.reason))
        return
    except orjson.JSONEncodeError as error:  # a value the checks above did not foresee
        problem = value_problem(record, "") or ("<record>", f"cannot be written as JSON: {error}")
        result.rejected.append(reject(record, where, context, "invalid", *problem))
        return
    if duplicate_of(kept, index, context, result, record):
        return
    result.ids.append(kept["id"])
    result.output += line
    result.output += b"\n"
    result.ends.append(len(result.output))
    bits = sum(NOTES[note] for note in notes) + (NOTES["with_extra"] if extra else 0)
    if len(messages) > 2:
        system = messages[0]["role"] == "system"
        bits += NOTES["with_system"] * system + NOTES["multi_turn"] * (len(messages) - system > 2)
    result.notes.append(bits)


def reject(record: object, where: dict, context: Context, kind: str, field_name: str, reason: str) -> dict:
    line = {"line": context.lines[where["source_index"]]} if context.lines else {}
    original = record.text if isinstance(record, UnparsedLine) else record
    return where | line | {"kind": kind, "field": field_name, "reason": reason, "record": original}


def duplicate_of(kept: dict, index: int, context: Context, result: Conversion, record: object) -> bool:
    """Whether the record repeats an earlier one (of any source); a repeat goes to the rejects."""
    mode = context.options.drop_duplicates
    if mode == "none":
        return False
    key = canonical_json(kept["messages"]) if mode == "exact" else near_duplicate_key(kept["messages"])
    first = context.first_seen.setdefault(key, (context.source, index))
    if first == (context.source, index):
        return False
    of = f"record {first[1]}" + (f" of source {first[0]}" if first[0] is not None else "")
    where = {k: kept[k] for k in ("source", "source_index") if k in kept}
    result.rejected.append(
        reject(record, where, context, "duplicate", "<record>", f"{mode} duplicate of {of}")
    )
    return True


def sample(result: Conversion, ratio: float, seed: int) -> None:
    """Keep `ratio` of the kept records: those whose sha256(seed, id) ranks lowest, in their order."""
    if ratio >= 1:
        return
    count = round(ratio * len(result.ids))
    ranked = sorted(range(len(result.ids)), key=lambda i: (sha256_text(f"{seed}:{result.ids[i]}"), i))
    chosen = sorted(ranked[:count])
    output, ends = bytearray(), []
    for index in chosen:
        output += result.line(index)
        ends.append(len(output))
    result.sampled_out = len(result.ids) - count
    result.ids = [result.ids[i] for i in chosen]
    result.notes = [result.notes[i] for i in chosen]
    result.output, result.ends = output, ends


# ---- the step ---------------------------------------------------------------------------------------------


@dataclass
class Converted:
    """One source, read and converted."""

    source: Source
    loaded: Loaded
    fmt: str
    chosen: str
    mapping: Mapping
    result: Conversion


def describe(label: str, entry: dict) -> str:
    line = f" (line {entry['line']})" if "line" in entry else ""
    return f"{label}: record {entry['source_index']}{line}: field {entry['field']!r}: {entry['reason']}"


def check_rejected_share(label: str, result: Conversion, read: int, limit: float) -> None:
    invalid = [r for r in result.rejected if r["kind"] == "invalid"]
    if invalid and len(invalid) / read > limit:
        raise InputError(
            f"{describe(label, invalid[0])} ({len(invalid)} of {read} records are bad, more than the "
            f"{limit:.0%} allowed by max_rejected_fraction)"
        )
    if not result.ids and not result.sampled_out:
        raise InputError(f"{label}: no usable record among {read}")


def convert_source(
    position: int | None, source: Source, args: argparse.Namespace, first_seen: dict
) -> Converted:
    label = source.label
    loaded = load_source(source)
    check_container(label, loaded, source.format)
    fmt, chosen = resolve_format(label, loaded, source.format, source)
    mapping = mapping_for(source, fmt)
    described = mapping.describe(fmt)
    log.info("%s: %d records, format %s (%s)", label, len(loaded.records), fmt, chosen)
    log.info("%s: keys %s; role names %s", label, described["columns"], described["roles"])
    options = Options(
        trim_whitespace=args.trim_whitespace,
        placeholder_inputs=tuple(args.placeholder_inputs),
        drop_duplicates=args.drop_duplicates,
        max_record_chars=args.max_record_chars,
    )
    context = Context(fmt, mapping, options, loaded.lines, loaded.check_values, position, first_seen)
    result = convert(loaded.records, context=context)
    for entry in result.rejected[:20]:
        log.warning("%s", describe(label, entry))
    if len(result.rejected) > 20:
        log.warning("... and %d more rejected records: see %s", len(result.rejected) - 20, args.rejects)
    check_rejected_share(label, result, len(loaded.records), args.max_rejected_fraction)
    sample(result, source.sample, args.seed)
    if result.sampled_out:
        log.info(
            "%s: sample %g keeps %d of %d records",
            label,
            source.sample,
            len(result.ids),
            len(result.ids) + result.sampled_out,
        )
    return Converted(source, loaded, fmt, chosen, mapping, result)


def counts(result: Conversion) -> dict:
    rejected_by = Counter(r["kind"] for r in result.rejected)
    notes = Counter(result.notes)
    noted = {name: sum(n for bits, n in notes.items() if bits & bit) for name, bit in NOTES.items()}
    return {
        "kept": len(result.ids),
        "rejected": len(result.rejected),
        "rejected_invalid": rejected_by["invalid"],
        "rejected_duplicate": rejected_by["duplicate"],
        "sampled_out": result.sampled_out,
        "rejected_by_field": dict(sorted(Counter(r["field"] for r in result.rejected).items())),
        "trimmed": noted["trimmed"],
        "placeholder_inputs_emptied": noted["placeholder_input_emptied"],
        "kept_with_input": noted["with_input"],
        "kept_multi_turn": noted["multi_turn"],
        "kept_with_system": noted["with_system"],
        "kept_with_extra": noted["with_extra"],
    }


def source_summary(item: Converted) -> dict:
    source, loaded = item.source, item.loaded
    where = {"path": source.path} if source.path is not None else {"hub": source.hub}
    return {
        "input": source.label,
        **where,
        **loaded.identity,
        "container": loaded.container,
        "format": item.fmt,
        "format_chosen": item.chosen,
        "mapping": item.mapping.describe(item.fmt),
        "sample": source.sample,
        "utf8_bom": loaded.utf8_bom,
        "read": len(loaded.records),
        **counts(item.result),
    }


def summarise(args: argparse.Namespace, converted: list[Converted], hashes: dict) -> dict:
    """The totals over all sources; with one source, also its format and identity at the top level."""
    sources = [source_summary(item) for item in converted]
    total = Conversion(
        ids=[i for item in converted for i in item.result.ids],
        notes=[n for item in converted for n in item.result.notes],
        rejected=[r for item in converted for r in item.result.rejected],
        sampled_out=sum(item.result.sampled_out for item in converted),
    )
    identities = [{k: s[k] for k in ("sha256", "resolved_commit") if k in s} for s in sources]
    one = sources[0] if len(sources) == 1 else None
    return {
        "input": " + ".join(s["input"] for s in sources),
        "input_sha256": one.get("sha256", one.get("resolved_commit"))
        if one
        else sha256_text(canonical_json(identities)),
        "format": one["format"] if one else "+".join(s["format"] for s in sources),
        "format_chosen": one["format_chosen"] if one else "per source",
        "utf8_bom": any(s["utf8_bom"] for s in sources),
        "read": sum(s["read"] for s in sources),
        **counts(total),
        "normalisations": {
            "trim_whitespace": args.trim_whitespace,
            "placeholder_inputs": args.placeholder_inputs,
            "drop_duplicates": args.drop_duplicates,
            "max_record_chars": args.max_record_chars,
        },
        "seed": args.seed,
        "sources": sources,
        **hashes,
    }


def reject_line(entry: dict) -> bytes:
    """A rejected record as a line; values JSON cannot hold are written as the text they were read from."""
    try:
        return orjson.dumps(entry)
    except orjson.JSONEncodeError:
        text = json.dumps(
            entry, ensure_ascii=True, separators=(",", ":"), default=lambda value: value.literal
        )
        return text.encode("utf-8")


def write_outputs(args: argparse.Namespace, converted: list[Converted]) -> dict:
    """Write messages, rejects and summary together (all or none); return the summary."""
    paths = (args.output, args.rejects, args.summary)
    try:
        with atomic_paths(*paths) as (output, rejects, summary_path):
            hashes = {
                "output_sha256": write_lines(output, (c.result.output for c in converted), b""),
                "rejects_sha256": write_lines(
                    rejects, (reject_line(r) for c in converted for r in c.result.rejected), b"\n"
                ),
            }
            summary = summarise(args, converted, hashes)
            text = json.dumps(summary, ensure_ascii=False, indent=2, sort_keys=True) + "\n"
            summary_path.write_text(text, encoding="utf-8")
    except OSError as error:  # the file named is one of ours or its temporary twin beside it
        name = Path(str(error.filename)).name
        where = next(
            (path for path in paths if name.startswith((Path(path).name, f".{Path(path).name}."))), None
        )
        raise InputError(f"{where or error.filename}: cannot write: {error.strerror or error}") from None
    return summary


def write_lines(path: Path, chunks, end: bytes) -> str:
    """Write each chunk followed by `end`; return the file's sha256."""
    digest = hashlib.sha256()
    with open(path, "wb") as handle:
        for chunk in chunks:
            for part in (chunk, end):
                digest.update(part)
                handle.write(part)
    return digest.hexdigest()


def check_writable(*paths: str) -> None:
    """Refuse, before any work, outputs that cannot be written: the error names the path and why."""
    for path in map(Path, paths):
        if path.is_dir():
            raise InputError(f"{path}: is a folder; give a file path for the output")
        parent = next(p for p in path.absolute().parents if p.exists())
        if not parent.is_dir():
            raise InputError(f"{path}: cannot write: {parent} is a file, not a folder")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise InputError(f"{path}: cannot write: no permission to write in {parent}")


def convert_all(args: argparse.Namespace) -> None:
    check_writable(args.output, args.rejects, args.summary)
    first_seen: dict = {}
    several = len(args.sources) > 1
    converted = [
        convert_source(position if several else None, source, args, first_seen)
        for position, source in enumerate(args.sources)
    ]
    summary = write_outputs(args, converted)
    log.info(
        "Read %d records, kept %d, rejected %d (%d invalid, %d duplicates), sampled out %d; trimmed %d, "
        "placeholder inputs emptied %d",
        summary["read"],
        summary["kept"],
        summary["rejected"],
        summary["rejected_invalid"],
        summary["rejected_duplicate"],
        summary["sampled_out"],
        summary["trimmed"],
        summary["placeholder_inputs_emptied"],
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with step("convert_to_messages", args.log_file):
        convert_all(args)


if __name__ == "__main__":
    main()
