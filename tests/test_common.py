"""alpaca_lora.common: loss_pair, atomic writes, JSON Lines reading, the shared-path check."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from alpaca_lora.common import (
    atomic_directory,
    atomic_path,
    atomic_paths,
    loss_pair,
    read_jsonl,
    refuse_shared_paths,
    write_json,
    write_jsonl,
)
from conftest import run_script

PROMPT = "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


@pytest.mark.parametrize(
    ("completion", "eos", "expected"),
    [
        ("Hello<|im_end|>\n", "<|im_end|>", "Hello<|im_end|>"),
        ("Hello<|im_end|> \n\t\n", "<|im_end|>", "Hello<|im_end|>"),
        ("  Hello \n<|im_end|>\n", "<|im_end|>", "  Hello \n<|im_end|>"),
        ("Hello<|im_end|>", "<|im_end|>", "Hello<|im_end|>"),
        ("Hello\n", "<|im_end|>", "Hello\n"),
        ("Hello<|im_end|> and more\n", "<|im_end|>", "Hello<|im_end|> and more\n"),
        ("Hello<|end|>\n<|endoftext|>", "<|endoftext|>", "Hello<|end|>\n<|endoftext|>"),
        ("Hello<|end|>\n", "<|endoftext|>", "Hello<|end|>\n"),
        ("Hello<|im_end|>\n", None, "Hello<|im_end|>\n"),
        ("Hello<|im_end|>\n", "", "Hello<|im_end|>\n"),
    ],
)
def test_loss_pair(completion: str, eos: str | None, expected: str) -> None:
    prompt, trimmed = loss_pair({"prompt": PROMPT, "completion": completion, "text": "ignored"}, eos)
    assert prompt == PROMPT
    assert trimmed == expected


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_atomic_path_success(tmp_path: Path) -> None:
    target = tmp_path / "out" / "file.txt"
    with atomic_path(target) as temporary:
        temporary.write_text("done", encoding="utf-8")
        assert not target.exists()
    assert target.read_text(encoding="utf-8") == "done"
    assert listing(target.parent) == ["file.txt"]


@pytest.mark.parametrize("existing", [None, "old"])
def test_atomic_path_failure_leaves_nothing(tmp_path: Path, existing: str | None) -> None:
    target = tmp_path / "file.txt"
    if existing is not None:
        target.write_text(existing, encoding="utf-8")
    with pytest.raises(RuntimeError), atomic_path(target) as temporary:
        temporary.write_text("half", encoding="utf-8")
        raise RuntimeError("killed")
    if existing is None:
        assert listing(tmp_path) == []
    else:
        assert listing(tmp_path) == ["file.txt"]
        assert target.read_text(encoding="utf-8") == existing


@pytest.mark.parametrize("existing", [False, True])
def test_atomic_directory(tmp_path: Path, existing: bool) -> None:
    target = tmp_path / "model"
    if existing:
        target.mkdir()
        (target / "old.bin").write_text("old", encoding="utf-8")
    with pytest.raises(RuntimeError), atomic_directory(target) as temporary:
        (temporary / "new.bin").write_text("half", encoding="utf-8")
        raise RuntimeError("killed")
    assert listing(tmp_path) == (["model"] if existing else [])
    if existing:
        assert listing(target) == ["old.bin"]
    with atomic_directory(target) as temporary:
        (temporary / "new.bin").write_text("new", encoding="utf-8")
    assert listing(tmp_path) == ["model"]
    assert listing(target) == ["new.bin"]


def test_atomic_paths_all_or_none(tmp_path: Path) -> None:
    targets = [tmp_path / "out" / name for name in ("a.jsonl", "b.jsonl", "c.json")]
    targets[2].parent.mkdir()
    targets[2].write_text("from an earlier run", encoding="utf-8")
    with pytest.raises(RuntimeError), atomic_paths(*targets) as temporaries:
        for temporary in temporaries:
            temporary.write_text("half", encoding="utf-8")
        raise RuntimeError("killed")
    assert listing(tmp_path / "out") == ["c.json"], "a failed block changes nothing"
    with atomic_paths(*targets) as temporaries:
        for temporary, target in zip(temporaries, targets, strict=True):
            temporary.write_text(target.name, encoding="utf-8")
    assert [target.read_text(encoding="utf-8") for target in targets] == ["a.jsonl", "b.jsonl", "c.json"]
    assert listing(tmp_path / "out") == ["a.jsonl", "b.jsonl", "c.json"]


def test_atomic_paths_undo_a_half_done_rename(tmp_path: Path) -> None:
    """If the second rename fails (its target became a folder), the first file does not stay alone."""
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    with pytest.raises(OSError), atomic_paths(first, second) as temporaries:
        for temporary in temporaries:
            temporary.write_text("new", encoding="utf-8")
        second.mkdir()
        (second / "keep").write_text("x", encoding="utf-8")
    assert listing(tmp_path) == ["b.jsonl"]


def paths_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="step")
    parser.exit = lambda status=0, message=None: (_ for _ in ()).throw(SystemExit(message))
    return parser


@pytest.mark.parametrize(
    "how", ["same string", "relative", "symbolic link", "hard link", "missing, same string"]
)
def test_refuse_shared_paths(tmp_path: Path, how: str, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "in.jsonl"
    if not how.startswith("missing"):
        source.write_text("{}\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    other = {
        "same string": source,
        "relative": Path("in.jsonl"),
        "symbolic link": tmp_path / "link.jsonl",
        "hard link": tmp_path / "hard.jsonl",
        "missing, same string": source,
    }[how]
    if how == "symbolic link":
        other.symlink_to(source)
    if how == "hard link":
        os.link(source, other)
    refuse_shared_paths(
        paths_parser(), {"--input": [source], "--output": tmp_path / "out.jsonl", "--log": None}
    )
    with pytest.raises(SystemExit, match="--input and --output name the same file"):
        refuse_shared_paths(paths_parser(), {"--input": [source], "--output": other})
    with pytest.raises(SystemExit, match=r"--input \(twice\) name the same file"):
        refuse_shared_paths(paths_parser(), {"--input": [source, other]})


STEPS_WITH_FILES = {  # every step script that checks its file arguments, given two that are the same
    "convert_to_messages.py": [
        "--input",
        "{in}",
        "--output",
        "{out}",
        "--rejects",
        "{out}",
        "--summary",
        "s.json",
    ],
    "split_dataset.py": [
        "--input",
        "{in}",
        "--train",
        "{in}",
        "--eval",
        "e",
        "--summary",
        "s",
        "--eval-size",
        "1",
        "--seed",
        "1",
    ],
    "apply_chat_template.py": ["--model", "m", "--input", "{in}", "--output", "{out}", "--log-file", "{in}"],
    "prepare_base_model.py": ["--kind", "local", "--path", "{in}", "--out", "{in}"],
}


@pytest.mark.parametrize("script", sorted(STEPS_WITH_FILES))
def test_steps_refuse_shared_paths(script: str, tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text('{"id": "x"}\n', encoding="utf-8")
    words = [w.format(**{"in": source, "out": tmp_path / "out.jsonl"}) for w in STEPS_WITH_FILES[script]]
    result = run_script(script, *words, check=False)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "name the same file" in result.stderr and "Traceback" not in result.stderr
    assert source.read_text(encoding="utf-8") == '{"id": "x"}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]


def test_write_jsonl_failure_leaves_nothing(tmp_path: Path) -> None:
    def records() -> Iterator[dict]:
        yield {"a": 1}
        raise RuntimeError("generator failed")

    with pytest.raises(RuntimeError):
        write_jsonl(tmp_path / "out.jsonl", records())
    assert listing(tmp_path) == []
    assert write_jsonl(tmp_path / "out.jsonl", iter([{"a": "é"}, {"b": 2}])) == 2
    assert (tmp_path / "out.jsonl").read_text(encoding="utf-8") == '{"a":"é"}\n{"b":2}\n'


def test_write_json_failure_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        write_json(tmp_path / "out.json", {"bad": object()})
    assert listing(tmp_path) == []


def test_read_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text('{"a": 1}\n\n{"b": "中"}\n', encoding="utf-8")
    assert list(read_jsonl(path)) == [{"a": 1}, {"b": "中"}]


def test_read_jsonl_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text(
        json.dumps({"a": 1}) + "\n\n" + '{"b": 2\n' + json.dumps({"c": 3}) + "\n", encoding="utf-8"
    )
    records = read_jsonl(path)
    assert next(records) == {"a": 1}
    with pytest.raises(ValueError) as caught:
        next(records)
    message = str(caught.value)
    assert str(path) in message
    assert "line 3" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1e-4", 1e-4), ("5e-05", 5e-05), ("3.0e-4", 3e-4), ("-2E+3", -2000.0), ("0.5", 0.5), ("12", 12)],
)
def test_yaml_reads_numbers_as_yaml_1_2_does(text: str, expected: float) -> None:
    """PyYAML alone reads 1e-4 and 5e-05 (what json.dumps writes for 5e-5) as strings."""
    from alpaca_lora.common import load_yaml

    value = load_yaml(f"learning_rate: {text}\n")["learning_rate"]
    assert value == expected and type(value) is type(expected)
    assert load_yaml("version: '1e-4'\nname: e5\n") == {"version": "1e-4", "name": "e5"}


# ---- every step logs how it failed, to its own log file --------------------------------------------------

STEP_FAILURES = [
    # (script, arguments after --log-file, the one line the log must end with)
    (
        "split_dataset.py",
        [
            "--input",
            "{messages}",
            "--train",
            "t",
            "--eval",
            "e",
            "--summary",
            "s",
            "--eval-size",
            "50",
            "--seed",
            "1",
        ],
        "eval size 50 leaves no training record out of 3",
    ),
    (
        "prepare_base_model.py",
        ["--kind", "local", "--path", "{tmp}/nowhere", "--out", "{tmp}/m"],
        "--kind local needs --path to a model folder with config.json",
    ),
    (
        "apply_chat_template.py",
        ["--model", "{tmp}/nowhere", "--input", "{messages}", "--output", "o"],
        "nowhere",
    ),
    (
        "train_lora.py",
        [
            "--model",
            "m",
            "--train",
            "t",
            "--eval",
            "e",
            "--settings",
            "{messages}",
            "--output-dir",
            "a",
            "--history",
            "h",
            "--summary",
            "s",
            "--checkpoint-dir",
            "c",
        ],
        "expected '<document start>'",
    ),
    (
        "evaluate.py",
        ["--model", "{tmp}/nowhere", "--eval", "{messages}", "--metrics", "m", "--generations", "g"],
        "nowhere",
    ),
    (
        "score_answers.py",
        [
            "--eval-answers",
            "{messages}",
            "--probe-answers",
            "{messages}",
            "--probes",
            "{tmp}/no-probes.yaml",
            "--scores",
            "s",
        ],
        "no-probes.yaml",
    ),
    (
        "convert_to_messages.py",
        ["--input", "{tmp}/none.json", "--output", "o", "--rejects", "r", "--summary", "s"],
        "none.json",
    ),
    (
        "make_summary.py",
        [
            "--experiment-json",
            "{tmp}/x.json",
            "--metrics-csv",
            "{tmp}/x.csv",
            "--csv",
            "c",
            "--markdown",
            "m",
            "--latex",
            "l",
            "--html",
            "h",
        ],
        "x.json",
    ),
    (
        "write_manifest.py",
        [
            "--experiment",
            "x",
            "--recipe-json",
            "{{}}",
            "--model",
            "{tmp}/nowhere",
            "--inputs",
            "i",
            "--outputs",
            "o",
            "--output",
            "m",
        ],
        "source.json",
    ),
]


@pytest.mark.parametrize(("script", "arguments", "reason"), STEP_FAILURES, ids=[s[0] for s in STEP_FAILURES])
def test_a_failing_step_logs_one_line_to_its_own_log(tmp_path, script, arguments, reason):
    """Expected failures (bad input, a missing file) end the log with one ERROR line naming the cause."""
    from conftest import run_script

    messages = tmp_path / "messages.jsonl"
    messages.write_text("".join(json.dumps({"messages": [], "n": n}) + "\n" for n in range(3)))
    log = tmp_path / "step.log"
    filled = [a.format(tmp=tmp_path, messages=messages) for a in arguments]
    result = run_script(script, *filled, "--log-file", log, check=False, cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    last = log.read_text(encoding="utf-8").strip().splitlines()[-1]
    assert " - ERROR - " in last and reason in last, last
    assert "Traceback" not in log.read_text() and "Traceback" not in result.stderr


def test_an_unexpected_error_is_logged_with_its_traceback(tmp_path):
    """A bug is not an expected error: the log keeps the traceback for the report."""
    from alpaca_lora.common import step

    log = tmp_path / "step.log"
    with pytest.raises(SystemExit) as stopped, step("demo", str(log)):
        {}["missing"]  # noqa: B018
    assert stopped.value.code == 1
    text = log.read_text()
    assert "demo failed unexpectedly" in text and "Traceback" in text and "KeyError: 'missing'" in text


def test_every_step_script_runs_inside_step():
    """The mechanism is shared: each script's main() uses alpaca_lora.common.step, none its own copy."""
    from conftest import SCRIPTS

    for script in sorted(SCRIPTS.glob("*.py")):
        text = script.read_text(encoding="utf-8")
        assert "with step(" in text and "setup_logging(" not in text, script.name


def test_every_script_and_module_explains_itself():
    """`--help` of each step script and of each alpaca_lora module prints what it does, not nothing."""
    import subprocess
    import sys

    from conftest import ROOT, SCRIPTS

    commands = [[str(script)] for script in sorted(SCRIPTS.glob("*.py"))]
    modules = sorted((ROOT / "src" / "alpaca_lora").glob("[a-z]*.py"))
    commands += [["-m", f"alpaca_lora.{module.stem}"] for module in modules]
    for command in commands:
        result = subprocess.run(
            [sys.executable, *command, "--help"], capture_output=True, text=True, cwd=ROOT
        )
        assert result.returncode == 0 and result.stdout.startswith("usage:"), command
        assert len(result.stdout) > 300, (command, result.stdout)


def test_a_report_written_without_a_path_is_ignored_by_git():
    """`snakemake --report` alone writes report.html in the working directory: git must not offer it."""
    import subprocess

    from conftest import ROOT

    assert subprocess.run(["git", "check-ignore", "-q", "report.html"], cwd=ROOT).returncode == 0


@pytest.mark.parametrize("ci", [None, "true"])
def test_transformers_trl_and_peft_messages_reach_the_steps_log_file(tmp_path, ci):
    """transformers' logger propagates to the step's handlers only under CI unless the step routes it."""
    log_file = tmp_path / "step.log"
    code = (
        "import warnings\n"
        "from alpaca_lora.common import step\n"
        f"with step('s', {str(log_file)!r}, libraries=True):\n"
        "    from transformers.utils import logging\n"
        "    logging.get_logger('transformers.trainer').warning('from transformers')\n"
        "    logging.get_logger('trl.trainer.sft_trainer').warning('from trl')\n"
        "    warnings.warn('from peft')\n"
    )
    env = {key: value for key, value in os.environ.items() if key != "CI"}
    env.update({"CI": ci} if ci else {})
    subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True)
    lines = log_file.read_text().splitlines()
    for message in ("from transformers", "from trl", "from peft"):
        assert sum(message in line for line in lines) == 1, (message, lines)
