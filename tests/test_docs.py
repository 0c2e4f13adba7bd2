"""Every command the docs show runs: the README, docs/*.md and config/recipes/README.md cannot go stale.

Commands are read from the Markdown as a reader sees them (code blocks and inline code, via markdown-it) and
run as far as is safe in a test: Snakemake as a dry run in a copy of the checkout, `make` as `make -n`, the
step scripts and tools and DVC's subcommands with `--help` (which parses the subcommand and its options).
What the test cannot run (a report of a finished run, git, pip, conda, the shell) is listed in SKIPPED
with where it is covered instead.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from alpaca_lora.testing import SNAKEMAKE, WORKFLOW_FILES, workflow_env
from conftest import ROOT

DOCS = [ROOT / "README.md", ROOT / "config/recipes/README.md", *sorted((ROOT / "docs").glob("*.md"))]
BIN = Path(sys.executable).parent
PROGRAMS = ("snakemake", "make", "python", "dvc")
COMMAND = re.compile(r"^(?:[A-Z_]+=\S+\s+)*(?:\.venv/bin/)?(snakemake|make|python|dvc)\s+\S")
# Shown in the docs, run elsewhere: the reason.
SKIPPED = {
    "--report": "needs a finished run: tests/test_workflow.py::test_html_report runs it",
}


def doc_commands() -> list[tuple[str, str]]:
    """(document, command) for every command line in a code block or inline code of the docs."""
    found = []
    markdown = MarkdownIt("commonmark")
    for document in DOCS:
        texts = []
        for token in markdown.parse(document.read_text(encoding="utf-8")):
            if token.type == "fence" and token.info in ("", "bash", "sh", "console"):
                texts += token.content.splitlines()
            elif token.type == "inline":
                texts += [child.content for child in token.children or [] if child.type == "code_inline"]
        for text in texts:
            for part in text.split("&&"):
                command = part.split("  #", 1)[0].strip()
                if COMMAND.match(command):
                    found.append((str(document.relative_to(ROOT)), command))
    return list(dict.fromkeys(found))


COMMANDS = doc_commands()


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    """A copy of the checkout, with the recipe the README tells a user to make (`my-recipe`)."""
    workdir = tmp_path_factory.mktemp("docs") / "work"
    workdir.mkdir()
    for name in [*WORKFLOW_FILES, "data", "Makefile", "requirements-nodeps.txt", "tools", "dvc.yaml", ".dvc"]:
        source = ROOT / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, workdir / name)
    recipes = workdir / "config" / "recipes"
    shutil.copy(recipes / "smollm2-135m-alpaca-sample.yaml", recipes / "my-recipe.yaml")
    return workdir


def runnable(command: str) -> list[str]:
    """The command as the test runs it: a dry run, or --help."""
    words = shlex.split(command)
    while "=" in words[0] and not words[0].startswith("-"):
        words.pop(0)  # HF_HUB_OFFLINE=1 ...
    program = Path(words[0]).name
    if program == "snakemake":
        dry = any(w in words for w in ("--lint", "--version", "--unlock", "--dry-run", "-n"))
        return [SNAKEMAKE, *words[1:], *([] if dry else ["--dry-run"])]
    if program == "make":
        return ["make", "-n", *words[1:]]
    if program == "python":
        return [sys.executable, *words[1:], "--help"]
    return [str(BIN / "dvc"), *words[1:], "--help"]


def test_the_docs_show_the_commands_this_test_runs():
    shown = {command for _, command in COMMANDS}
    for expected in (
        "make run",
        ".venv/bin/snakemake --cores all --configfile config/grid-example.yaml",
        ".venv/bin/snakemake --cores 4 --config 'experiments=[\"phi35-mini-alpaca-recipe\"]' --until "
        "prepare_base_model",
        "dvc metrics show",
    ):
        assert expected in shown, expected
    assert len(COMMANDS) > 30


@pytest.mark.parametrize(("document", "command"), COMMANDS, ids=[f"{d}: {c}" for d, c in COMMANDS])
def test_a_command_of_the_docs_runs(checkout, document, command):
    skipped = next((why for marker, why in SKIPPED.items() if marker in command), None)
    if skipped:
        pytest.skip(skipped)
    assert "<" not in command, f"{document}: {command!r} has a placeholder a reader cannot run"
    result = subprocess.run(
        runnable(command),
        cwd=checkout,
        capture_output=True,
        text=True,
        timeout=300,
        env=workflow_env(PATH=f"{BIN}:{workflow_env()['PATH']}"),
    )
    assert result.returncode == 0, f"{document}: {command}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"


def test_the_phi_recipe_switches_to_the_full_alpaca_in_one_line(checkout):
    """The recipe's comment shows the line that trains on the full 52K Alpaca; with it, the run converts that
    file into a folder of its own (the sample's converted data stays)."""
    recipe = checkout / "config/recipes/phi35-mini-alpaca-recipe.yaml"
    original = recipe.read_text(encoding="utf-8")
    [documented] = re.findall(r"^ *# +(path: data/raw/alpaca_data\.json)$", original, flags=re.MULTILINE)
    [current] = re.findall(r"^ *path: data/raw/alpaca_zh_en_sample\.json$", original, flags=re.MULTILINE)
    switched = original.replace(current, current.replace(current.strip(), documented))
    assert sum(a != b for a, b in zip(original.splitlines(), switched.splitlines(), strict=True)) == 1
    shutil.copy(checkout / "data/raw/alpaca_zh_en_sample.json", checkout / "data/raw/alpaca_data.json")
    recipe.write_text(switched, encoding="utf-8")
    try:
        result = subprocess.run(
            [
                SNAKEMAKE,
                "--dry-run",
                "--printshellcmds",
                "--config",
                'experiments=["phi35-mini-alpaca-recipe"]',
            ],
            cwd=checkout,
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        recipe.write_text(original, encoding="utf-8")
        (checkout / "data/raw/alpaca_data.json").unlink()
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "--input data/raw/alpaca_data.json" in result.stdout
