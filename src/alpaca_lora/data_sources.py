"""Reading instruction data into records: JSON, JSON Lines, CSV, Parquet and pinned Hugging Face datasets.

What a reader returns is plain JSON-like data plus where each record came from (its line), never a
traceback: a problem with the whole source raises InputError naming the source and the place; a problem
with one record stays in the records, for the conversion to reject with its reason: a line that is not JSON
(UnparsedLine), a value JSON readers cannot hold (NotJson: NaN, numbers beyond 64 bits) or an object that
repeats a key (DuplicateKeys). docs/data-formats.md states the contract.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import re
import stat
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from alpaca_lora.common import StepError, sha256_file

log = logging.getLogger(__name__)

JSON_TYPES = {dict: "object", list: "array", str: "string", int: "number", float: "number", bool: "boolean"}
INT_RANGE = (-(2**63), 2**64 - 1)  # what JSON readers with 64-bit integers (orjson, Arrow) hold exactly
# Peak memory of a conversion is 6 (52K Alpaca records) to 18 (100K two-turn chats) times the size of the
# JSON it reads; data that would need more than the free memory even at 5 times is refused before reading.
MEMORY_PER_INPUT_BYTE = 5


class InputError(StepError):
    """Input that cannot be used at all, or too many bad records: the step stops."""


class NotJson:
    """A value JSON readers cannot hold (NaN, a huge number): kept as written, rejected with the reason."""

    __slots__ = ("literal", "reason")

    def __init__(self, literal: str, reason: str):
        self.literal = literal
        self.reason = reason


class DuplicateKeys(dict):
    """An object that names a key more than once; JSON readers silently keep only the last value."""

    repeated: tuple[str, ...] = ()


@dataclass(frozen=True)
class UnparsedLine:
    """A line of JSON Lines that is not JSON, or a CSV row that does not fit the header: a bad record.

    `text` is the record as read: the line, or the row's cells.
    """

    text: str | list[str]
    error: str


@dataclass(frozen=True)
class Source:
    path: str | None = None
    hub: dict | None = None  # repo_id, revision, split, and optionally subset
    format: str = "auto"
    columns: dict = field(default_factory=dict)
    roles: dict = field(default_factory=dict)
    sample: float = 1.0

    @property
    def label(self) -> str:
        if self.path is not None:
            return self.path
        subset = f"/{self.hub['subset']}" if self.hub.get("subset") else ""
        return f"hf://datasets/{self.hub['repo_id']}{subset}@{self.hub['revision']}:{self.hub['split']}"


@dataclass
class Loaded:
    records: list
    container: str  # json (a JSON list), jsonl, csv, tsv, parquet, hub
    lines: list[int] | None = None  # line of each record (JSON Lines, CSV)
    utf8_bom: bool = False
    check_values: bool = False  # some value may not be plain JSON: look at every record closely
    identity: dict = field(default_factory=dict)  # sha256 of the file, or the dataset's resolved commit


def json_type(value: object) -> str:
    return "null" if value is None else JSON_TYPES.get(type(value), type(value).__name__)


# ---- reading a source: checks before reading -------------------------------------------------------------


def human_bytes(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1024
    raise AssertionError


def check_memory(label: str, size: int) -> None:
    """Refuse, before reading, data whose conversion would need more memory than the machine has free."""
    import psutil

    needed, available = size * MEMORY_PER_INPUT_BYTE, psutil.virtual_memory().available
    if needed > available:
        raise InputError(
            f"{label}: {human_bytes(size)} of data needs at least {human_bytes(needed)} of memory to "
            f"convert, and {human_bytes(available)} is free; split it into smaller files (data.sources) or "
            "convert it on a machine with more memory"
        )


FILE_KINDS = {
    stat.S_ISDIR: "a folder",
    stat.S_ISFIFO: "a named pipe (FIFO)",
    stat.S_ISCHR: "a character device",
    stat.S_ISBLK: "a block device",
    stat.S_ISSOCK: "a socket",
}


def read_file_bytes(path: Path) -> bytes:
    """The whole file, after checking that it is a regular file that fits in memory (never blocks)."""
    try:
        status = path.stat()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as error:
        raise InputError(f"{path}: cannot read it: {error.strerror}") from None
    for is_kind, kind in FILE_KINDS.items():
        if is_kind(status.st_mode):
            raise InputError(f"{path}: {kind}, not a data file")
    check_memory(str(path), status.st_size)
    try:
        return path.read_bytes()
    except OSError as error:
        raise InputError(f"{path}: cannot read it: {error.strerror}") from None


def position(text: str, index: int) -> str:
    line = text.count("\n", 0, index) + 1
    return f"line {line}, column {index - text.rfind(chr(10), 0, index)}"


def decode(path: Path, raw: bytes) -> tuple[str, bool, bool]:
    """(text, utf8_bom, cut): the file as UTF-8 text; cut = it ends inside a multi-byte character."""
    if raw.startswith(b"PAR1"):
        raise InputError(f"{path}: a Parquet file; give it the extension .parquet")
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")) or raw.startswith(b"\x00\x00\xfe\xff"):
        width = "UTF-32" if raw.startswith((b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")) else "UTF-16"
        raise InputError(f"{path}: {width} text (it starts with a byte order mark); re-encode it as UTF-8")
    if raw.count(b"\x00") > len(raw) // 4:
        order = "little-endian" if raw[1::2].count(0) > raw[0::2].count(0) else "big-endian"
        raise InputError(
            f"{path}: looks like UTF-16 or UTF-32 text ({order}, no byte order mark: many bytes are 0); "
            "re-encode it as UTF-8"
        )
    bom = raw.startswith(b"\xef\xbb\xbf")
    body = raw[3:] if bom else raw
    try:
        return body.decode("utf-8"), bom, False
    except UnicodeDecodeError as error:
        if error.end == len(body) and error.reason == "unexpected end of data":
            return body[: error.start].decode("utf-8"), bom, True
        line = body[: error.start].count(b"\n") + 1
        raise InputError(
            f"{path}: not UTF-8 text (byte {error.start + 3 * bom}, line {line}): {error.reason}; "
            "re-encode the file as UTF-8"
        ) from None


# ---- reading JSON and JSON Lines -------------------------------------------------------------------------


class Decoder:
    """Python's JSON reader, told to keep what strict JSON cannot hold (NaN, numbers beyond 64 bits,
    repeated keys) as marked values, so that they become bad records instead of silent changes."""

    def __init__(self) -> None:
        self.marked = 0
        self.decoder = json.JSONDecoder(
            object_pairs_hook=self.object,
            parse_int=self.integer,
            parse_float=self.number,
            parse_constant=self.constant,
        )

    def object(self, pairs: list[tuple[str, object]]) -> dict:
        value = dict(pairs)
        if len(value) == len(pairs):
            return value
        self.marked += 1
        marked = DuplicateKeys(pairs)
        counts = Counter(key for key, _ in pairs)
        marked.repeated = tuple(key for key, count in counts.items() if count > 1)
        return marked

    def mark(self, literal: str, reason: str) -> NotJson:
        self.marked += 1
        return NotJson(literal, reason)

    def integer(self, literal: str) -> int | NotJson:
        # Python reads integers of any size, but only up to 4300 digits, and other readers only 64 bits.
        if len(literal) <= 20 and INT_RANGE[0] <= (value := int(literal)) <= INT_RANGE[1]:
            return value
        return self.mark(literal, f"the integer {shorten(literal)} does not fit in 64 bits")

    def number(self, literal: str) -> float | NotJson:
        value = float(literal)
        if math.isfinite(value):
            return value
        return self.mark(literal, f"the number {shorten(literal)} is too large for a 64-bit float")

    def constant(self, literal: str) -> NotJson:
        return self.mark(literal, f"{literal} is not a JSON number")

    def loads(self, text: str) -> object:
        return self.decoder.decode(text)


def shorten(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else f"{text[:20]}...{text[-10:]} ({len(text):,} characters)"


def load_json(path: Path) -> Loaded:
    """Read a JSON list of records or JSON Lines (one record a line, lines split at "\\n" only)."""
    raw = read_file_bytes(path)
    identity = {"sha256": hashlib.sha256(raw).hexdigest()}
    text, bom, cut = decode(path, raw)
    del raw
    if bom:
        log.info("%s starts with a UTF-8 byte order mark; reading it as UTF-8 without it", path)
    if not text.strip():
        raise InputError(f"{path}: the file is empty")
    decoder = Decoder()
    whole = None if cut else parse_whole(text, decoder)
    if isinstance(whole, list):
        loaded = Loaded(whole, "json", utf8_bom=bom, identity=identity)
    elif isinstance(whole, dict) and text.strip().count("\n") == 0:
        loaded = Loaded([whole], "jsonl", [text[: text.index("{")].count("\n") + 1], bom, identity=identity)
    elif whole is not None:
        if isinstance(whole, dict):
            raise InputError(
                f"{path}: one JSON object, not a list of records nor JSON Lines (one record a line)"
            )
        raise InputError(f"{path}: expected a JSON list of records or JSON Lines, found a {json_type(whole)}")
    elif is_json_lines(text, decoder):
        records, lines = parse_lines(text, decoder, cut)
        loaded = Loaded(records, "jsonl", lines, bom, identity=identity)
    else:
        raise InputError(diagnose_document(path, text, cut))
    loaded.check_values = decoder.marked > 0
    return loaded


def parse_whole(text: str, decoder: Decoder) -> object | None:
    try:
        return decoder.loads(text)
    except (json.JSONDecodeError, RecursionError):  # diagnosed later, line by line or record by record
        return None


def line_value(line: str, decoder: Decoder) -> object:
    """One line of JSON Lines as a value, or an UnparsedLine saying why it is not one."""
    try:
        return decoder.loads(line)
    except json.JSONDecodeError as error:
        stripped = line.lstrip()
        if stripped.startswith(("//", "#", "/*")):
            return UnparsedLine(line, "a comment line: JSON Lines has no comments")
        if error.msg == "Extra data":
            return UnparsedLine(line, f"more than one JSON value on the line (column {error.colno})")
        return UnparsedLine(line, f"invalid JSON at column {error.colno}: {error.msg}")
    except RecursionError:
        return UnparsedLine(line, "values nested too deeply to read (hundreds of levels)")


def is_json_lines(text: str, decoder: Decoder) -> bool:
    """Whether a text that is not one JSON value is JSON Lines, from its first lines.

    A file opening with a list is JSON Lines only if that first line is complete and another line is a value
    too (else it is a broken JSON list); other files are JSON Lines unless they open an object that spans
    lines (a broken or pretty-printed object) and no line of the first ten is an object by itself.
    """
    lines = [line for line in text.split("\n", 20)[:20] if line.strip()][:10]
    values = [line_value(line, decoder) for line in lines]
    complete = [not isinstance(value, UnparsedLine) for value in values]
    first = text.lstrip()[:1]
    if first == "[":
        return complete[0] and any(complete[1:])
    return first != "{" or any(isinstance(value, dict) for value in values)


def parse_lines(text: str, decoder: Decoder, cut: bool) -> tuple[list, list[int]]:
    records, lines = [], []
    split = text.split("\n")
    for number, line in enumerate(split, start=1):
        if not line.strip():
            continue
        records.append(line_value(line, decoder))
        lines.append(number)
    if cut:
        last = records[-1].text if isinstance(records[-1], UnparsedLine) else split[lines[-1] - 1]
        records[-1] = UnparsedLine(last, "the line ends inside a multi-byte UTF-8 character: file truncated?")
    return records, lines


def diagnose_document(path: Path, text: str, cut: bool) -> str:
    """Why a text that is not JSON Lines is not one JSON value: read it value by value to say where."""
    if cut:
        return f"{path}: the file ends inside a multi-byte UTF-8 character: truncated?"
    decoder, at = json.JSONDecoder(), len(text) - len(text.lstrip())
    opening = text[at] == "["
    at = skip_space(text, at + 1) if opening else at
    index = 0
    while True:
        try:
            _, end = decoder.raw_decode(text, at)
        except json.JSONDecodeError as error:
            return f"{path}: {json_error(text, error.pos, error.msg, opening, index)}"
        except RecursionError:
            return f"{path}: record {index} ({position(text, at)}) is nested too deeply to read"
        at = skip_space(text, end)
        if not opening:
            return f"{path}: {trailing(text, at, 'the first JSON value')}"
        if text.startswith("]", at):
            return f"{path}: {trailing(text, skip_space(text, at + 1), 'the list')}"
        if not text.startswith(",", at):
            return f"{path}: {json_error(text, at, 'expected , or ] after a record', opening, index)}"
        at, index = skip_space(text, at + 1), index + 1


def skip_space(text: str, at: int) -> int:
    while at < len(text) and text[at] in " \t\r\n":
        at += 1
    return at


def json_error(text: str, at: int, message: str, opening: bool, index: int) -> str:
    where = f"record {index}: " if opening else ""
    if text.startswith(("//", "#", "/*"), at):
        return f"{where}a comment at {position(text, at)}: JSON has no comments; remove it"
    ends_early = at >= len(text.rstrip()) or message.startswith("Unterminated string")
    if ends_early or (opening and not text.rstrip().endswith("]")):
        container = "its list" if opening else "its JSON value"
        truncated = f"the file ends before {container} does: truncated?"
        return f"{where}invalid JSON at {position(text, at)}: {message} ({truncated})"
    comma = " (a comma after the last item?)" if message == "Expecting value" and text[at] in "]}" else ""
    return f"{where}invalid JSON at {position(text, at)}: {message}{comma}"


def trailing(text: str, at: int, what: str) -> str:
    if at >= len(text):
        return f"nothing is wrong with {what}"  # not reached: a text that parses is never diagnosed
    comment = " (a comment: JSON has no comments)" if text.startswith(("//", "#", "/*"), at) else ""
    snippet = text[at : at + 30].split("\n")[0]
    return f"{what} ends before the file does: {snippet!r}{comment} follows at {position(text, at)}"


# ---- reading CSV, Parquet and Hugging Face datasets ----------------------------------------------------


def load_csv(path: Path, delimiter: str) -> Loaded:
    """Every cell a string; the header names the keys. A row with more or fewer cells is a bad record."""
    raw = read_file_bytes(path)
    identity = {"sha256": hashlib.sha256(raw).hexdigest()}
    text, bom, cut = decode(path, raw)
    if cut:
        raise InputError(f"{path}: the file ends inside a multi-byte UTF-8 character: truncated?")
    csv.field_size_limit(sys.maxsize)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader, None)
        if not header or not any(name.strip() for name in header):
            raise InputError(f"{path}: no header row")
        repeated = [name for name, count in Counter(header).items() if count > 1]
        if repeated or "" in header:
            problem = f"the header names {repeated[0]!r} twice" if repeated else "a column has no name"
            raise InputError(f"{path}: {problem}")
        records, lines = [], []
        start = reader.line_num + 1
        for row in reader:
            if row:
                records.append(row_record(header, row))
                lines.append(start)
            start = reader.line_num + 1
    except csv.Error as error:
        raise InputError(f"{path}: line {reader.line_num}: not CSV: {error}") from None
    return Loaded(records, "csv" if delimiter == "," else "tsv", lines, bom, identity=identity)


def row_record(header: list[str], row: list[str]) -> dict | UnparsedLine:
    if len(row) != len(header):
        return UnparsedLine(
            row, f"the row has {len(row)} cells and the header {len(header)}: a missing quote?"
        )
    return dict(zip(header, row, strict=True))


def load_parquet(path: Path) -> Loaded:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not path.is_file():
        read_file_bytes(path)  # names what the path is instead
    try:
        parquet = pq.ParquetFile(path)
        check_memory(
            str(path),
            sum(parquet.metadata.row_group(i).total_byte_size for i in range(parquet.num_row_groups)),
        )
        table = parquet.read()
    except (pa.ArrowException, OSError) as error:
        raise InputError(f"{path}: not a readable Parquet file: {error}") from None
    identity = {"sha256": sha256_file(path)}
    return Loaded(arrow_records(table), "parquet", check_values=True, identity=identity)


def load_hub(source: Source) -> Loaded:
    """A split of a Hugging Face dataset at a pinned revision, through `datasets` (its cache when offline)."""
    import datasets

    hub, label = source.hub, source.label
    datasets.utils.logging.set_verbosity_error()
    try:
        builder = datasets.load_dataset_builder(hub["repo_id"], hub.get("subset"), revision=hub["revision"])
    except (ConnectionError, FileNotFoundError, datasets.exceptions.DatasetNotFoundError) as error:
        offline = " (offline: HF_HUB_OFFLINE is set)" if datasets.config.HF_HUB_OFFLINE else ""
        raise InputError(
            f"{label}: cannot load the dataset{offline} and it is not in the datasets cache "
            f"({datasets.config.HF_DATASETS_CACHE}): {error}; load it once with network access"
        ) from None
    except (
        Exception
    ) as error:  # the Hub and its client can fail in many ways; each is named, none a traceback
        raise InputError(f"{label}: cannot load the dataset: {type(error).__name__}: {error}") from None
    commit = builder.hash
    if re.fullmatch("[0-9a-f]{40}", hub["revision"]) and commit != hub["revision"]:
        raise InputError(
            f"{label}: the datasets cache holds commit {commit}, not the pinned revision; load the pinned "
            "revision once with network access"
        )
    try:
        builder.download_and_prepare()
        dataset = builder.as_dataset(split=hub["split"])
    except Exception as error:  # an unknown split, a download that fails, a cache that is incomplete
        raise InputError(f"{label}: {type(error).__name__}: {error}") from None
    check_memory(label, dataset.data.nbytes)
    log.info("%s: revision %s is commit %s", label, hub["revision"], commit)
    identity = {"resolved_commit": commit}
    return Loaded(arrow_records(dataset.with_format("arrow")[:]), "hub", check_values=True, identity=identity)


def arrow_records(table) -> list[dict]:
    """Rows as JSON-like dicts: dates and decimals as text, a null field as an absent key (Arrow gives
    every row every field of a struct), and values JSON cannot hold marked as such."""
    import pyarrow as pa

    for index, column in enumerate(table.schema):
        if pa.types.is_temporal(column.type) or pa.types.is_decimal(column.type):
            table = table.set_column(index, column.name, table.column(index).cast(pa.string()))
    return [plain(row) for row in table.to_pylist()]


def plain(value: object) -> object:
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [plain(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return NotJson(str(value), f"{value} is not a JSON number")
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return NotJson(repr(value)[:80], f"a {type(value).__name__} value is not JSON")


def load_source(source: Source) -> Loaded:
    if source.hub is not None:
        return load_hub(source)
    path = Path(source.path)
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return load_parquet(path)
    if suffix in (".csv", ".tsv"):
        return load_csv(path, "," if suffix == ".csv" else "\t")
    return load_json(path)


if __name__ == "__main__":
    from alpaca_lora.common import module_help

    module_help(__doc__ + "\nA library for scripts/convert_to_messages.py: nothing to run.").parse_args()
