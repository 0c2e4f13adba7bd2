"""Small helpers shared by the step scripts: logging and error handling (`step`), JSON Lines I/O, hashing,
atomic writes, YAML with YAML 1.2 numbers.

Every step script imports this module; nothing here knows about Snakemake. Each script's main() runs inside
`with step(name, args.log_file):`, so that every step logs to its own log file, and a failure ends in one
logged line (an expected error: bad input, a missing file) or a logged traceback (a bug), never in a log that
says nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import orjson
import yaml

# One log format for every step: time, level, logger, message.
LOG_FORMAT = "%(asctime)s - %(levelname)s - %(name)s - %(message)s"
LOG_DATE_FORMAT = "%Y-%m-%d %H:%M:%S"


def setup_logging(name: str, log_file: str | None = None) -> logging.Logger:
    """Log at INFO to the console and, when given, to the step's log file.

    A step's log file starts with the SLURM job and node when the step runs inside a SLURM job, so that the
    log leads to the job (`scontrol show job`, `sacct -j`) and its SLURM log.
    """
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, mode="w", encoding="utf-8"))
    logging.basicConfig(
        level=logging.INFO,
        format=LOG_FORMAT,
        datefmt=LOG_DATE_FORMAT,
        handlers=handlers,
        force=True,
    )
    logger = logging.getLogger(name)
    if log_file and os.environ.get("SLURM_JOB_ID"):
        logger.info(
            "Running in SLURM job %s on node %s",
            os.environ["SLURM_JOB_ID"],
            os.environ.get("SLURMD_NODENAME", "?"),
        )
    return logger


class StepError(ValueError):
    """An expected failure (bad input, a setting that cannot work): logged as one line, no traceback."""


# Failures whose message says all (the file and what is wrong with it): one line in the log, exit status 1.
EXPECTED_ERRORS = (StepError, OSError, yaml.YAMLError)


def route_library_logs() -> None:
    """Send the messages of transformers (and of TRL and PEFT, which log through it) and Python warnings to
    the step's handlers: the console and the step's own log file.

    transformers' library logger has its own console handler and does not propagate to the root logger, where
    the step's log file is, unless the environment variable CI is set (transformers/utils/logging.py).
    """
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_default_handler()
    transformers_logging.enable_propagation()
    logging.captureWarnings(True)


@contextmanager
def step(name: str, log_file: str | None = None, libraries: bool = False) -> Iterator[logging.Logger]:
    """Run a step's body with logging set up; log how it failed, to the step's log file too, then exit 1.

    libraries: the step uses transformers; its messages (and TRL's, PEFT's) go to the step's log as well.

    An expected error (StepError, a missing or unreadable file, `raise SystemExit("message")`) is one
    ERROR line; anything else is a bug and is logged with its traceback. An exit status (SystemExit with a
    number, e.g. 143 after SIGTERM) passes through unchanged.
    """
    logger = setup_logging(name, log_file)
    if libraries:
        route_library_logs()
    try:
        yield logger
    except EXPECTED_ERRORS as error:
        logger.error("%s", " ".join(str(error).split()))  # one line, even for YAML's multi-line messages
        raise SystemExit(1) from None
    except SystemExit as stop:
        if isinstance(stop.code, str):
            logger.error("%s", " ".join(stop.code.split()))
            raise SystemExit(1) from None
        raise
    except Exception:
        logger.exception("%s failed unexpectedly (a bug: please report it with this log)", name)
        raise SystemExit(1) from None


def add_log_argument(parser) -> None:
    parser.add_argument("--log-file", help="also write the log to this file (the console always gets it)")


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def canonical_json(value: Any) -> str:
    """One stable text for a JSON value: sorted keys, no whitespace, real UTF-8."""
    return canonical_bytes(value).decode("utf-8")


def canonical_bytes(value: Any) -> bytes:
    """canonical_json's text, UTF-8 encoded (what a content hash reads)."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def json_line(record: Any) -> str:
    """A record as one line of JSON Lines (compact, real UTF-8); orjson is several times faster than json."""
    return orjson.dumps(record).decode("utf-8") + "\n"


def read_jsonl(path: str | Path) -> Iterator[dict]:
    """Yield the records of a JSON Lines file; a bad line names the file and line number."""
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield orjson.loads(line)
            except orjson.JSONDecodeError as error:
                raise StepError(f"{path}: line {line_number}: invalid JSON: {error}") from error


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Give a temporary path beside `path`; rename it into place only if the block succeeds.

    A step killed half-way thus never leaves a file that a later run would trust.
    """
    with atomic_paths(path) as (temporary,):
        yield temporary


@contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Like `atomic_path`, for a directory: build it aside, then move it into place."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield temporary
        os.chmod(temporary, 0o777 & ~_current_umask())
        if target.exists():
            shutil.rmtree(target)
        os.replace(temporary, target)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


@contextmanager
def atomic_paths(*paths: str | Path) -> Iterator[list[Path]]:
    """Like `atomic_path` for several files that belong together: all of them appear, or none.

    Should a rename fail half-way, the targets already renamed are removed again, so that no mix of this
    run's files and an earlier run's is ever left behind.
    """
    with ExitStack() as stack:
        temporaries = [stack.enter_context(_temporary_beside(Path(path))) for path in paths]
        yield temporaries
        # mkstemp makes a file private (0600); give them the permissions any other new file would get.
        mode = 0o666 & ~_current_umask()
        done: list[Path] = []
        try:
            for temporary, path in zip(temporaries, paths, strict=True):
                os.chmod(temporary, mode)
                os.replace(temporary, path)
                done.append(Path(path))
        except BaseException:
            for path in done:
                Path(path).unlink(missing_ok=True)
            raise


@contextmanager
def _temporary_beside(target: Path) -> Iterator[Path]:
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(handle)
    try:
        yield Path(temporary)
    finally:
        Path(temporary).unlink(missing_ok=True)


def file_identity(path: str | Path) -> tuple:
    """What makes two paths the same file: device and inode when it exists (hard and symbolic links
    included), else the absolute path with every symbolic link resolved."""
    try:
        status = os.stat(path)
    except OSError:
        return ("path", os.path.realpath(path))
    return ("inode", status.st_dev, status.st_ino)


def refuse_shared_paths(parser: argparse.ArgumentParser, files: dict[str, Any]) -> None:
    """Stop (as a usage error) when two of a step's file arguments name the same file.

    An output written over an input, or two outputs over each other, would lose data without a word.
    `files` maps each option (as the user types it) to its path, a list of paths, or None.
    """
    seen: dict[tuple, str] = {}
    for flag, value in files.items():
        for path in value if isinstance(value, list) else [value]:
            if path is None:
                continue
            identity = file_identity(path)
            if identity in seen:
                both = f"{seen[identity]} and {flag}" if seen[identity] != flag else f"{flag} (twice)"
                parser.error(f"{both} name the same file ({path}); give each file its own path")
            seen[identity] = flag


def write_jsonl(path: str | Path, records: Iterable[dict]) -> int:
    """Write records one per line, atomically; return how many were written."""
    count = 0
    with atomic_path(path) as temporary, open(temporary, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json_line(record))
            count += 1
    return count


def write_json(path: str | Path, value: Any) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(
            json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True) + "\n",
            encoding="utf-8",
        )


class YamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 floats: `1e-4` is a number (YAML 1.1 reads it as a string)."""


YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load_yaml(text: str) -> Any:
    """Parse YAML (recipes, configs, settings) with YAML 1.2 numbers."""
    return yaml.load(text, Loader=YamlLoader)


# YAML 1.2 core-schema scalars. Snakemake reads config.yaml as YAML 1.1 (1e-4 is a string) and the values of
# --config with every scalar a string (lora.r=[4, 8] gives "4" and "8"): yaml12_scalars reads them again.
_YAML12_SCALARS = [
    (re.compile(r"[-+]?[0-9]+"), int),
    (re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?"), float),
    (re.compile(r"true|True|TRUE"), lambda _: True),
    (re.compile(r"false|False|FALSE"), lambda _: False),
]


def yaml12_scalars(value: Any) -> Any:
    """A value (lists and dicts throughout) with each string that YAML 1.2 reads as a number or boolean
    turned into one: "1e-4" -> 0.0001, "8" -> 8, "true" -> True; other strings stay."""
    if isinstance(value, list):
        return [yaml12_scalars(item) for item in value]
    if isinstance(value, dict):
        return {key: yaml12_scalars(item) for key, item in value.items()}
    if isinstance(value, str):
        for pattern, convert in _YAML12_SCALARS:
            if pattern.fullmatch(value):
                return convert(value)
    return value


def read_json(path: str | Path) -> Any:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def trusts_remote_code(model_dir: str | Path) -> bool:
    """Whether the recipe lets this model folder run its own code (`trust_remote_code`).

    prepare_base_model.py records the recipe's choice in the folder's source.json; every later
    `from_pretrained` passes it on. A folder without source.json is not trusted.
    """
    source = Path(model_dir) / "source.json"
    return bool(source.is_file() and read_json(source).get("trust_remote_code") is True)


def loss_pair(record: dict, eos_token: str | None) -> tuple[str, str]:
    """The (prompt, completion) texts that training and evaluation score.

    The templated text often ends with the end-of-turn token plus a newline (ChatML: "<|im_end|>\\n").
    TRL appends the EOS token to a completion that does not end with it, which would teach the model a
    second, spurious end token; trimming the whitespace after a final EOS avoids that, and evaluation
    scores exactly the same tokens.
    """
    prompt, completion = record["prompt"], record["completion"]
    if eos_token and completion.rstrip().endswith(eos_token):
        completion = completion.rstrip()
    return prompt, completion


def module_help(doc: str | None) -> argparse.ArgumentParser:
    """`python -m alpaca_lora.<module> --help`: a library module says what it holds and who uses it."""
    return argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


if __name__ == "__main__":
    module_help(__doc__ + "\nA library for scripts/*.py and the workflow: nothing to run.").parse_args()
