"""Shared fixtures: paths, a small slice of the bundled data, and tiny local chat models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from alpaca_lora.testing import ROOT, build_tiny_model

SCRIPTS = ROOT / "scripts"
SAMPLE_DATA = ROOT / "data" / "raw" / "alpaca_zh_en_sample.json"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def run_script(
    name: str, *args: str, check: bool = True, timeout: float | None = None
) -> subprocess.CompletedProcess:
    """Run a step script the way a rule does: as its own process, from the shell."""
    result = subprocess.run(
        [sys.executable, str(SCRIPTS / name), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{name} failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return result


def git(folder: Path, *args: str) -> str:
    """Run git in `folder` with a throwaway identity; return its output."""
    identity = ["-c", "user.name=test", "-c", "user.email=test@example.invalid"]
    return subprocess.run(
        ["git", *identity, *args], cwd=folder, capture_output=True, text=True, check=True
    ).stdout.strip()


@pytest.fixture(scope="session")
def sample_records() -> list[dict]:
    return json.loads(SAMPLE_DATA.read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def small_alpaca(tmp_path_factory, sample_records) -> Path:
    """The first 40 bundled records: enough for a split, small enough to train on in seconds."""
    path = tmp_path_factory.mktemp("data") / "small.json"
    path.write_text(json.dumps(sample_records[:40], ensure_ascii=False), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"), SAMPLE_DATA, "llama")


@pytest.fixture(scope="session")
def tiny_phi3(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-phi3"), SAMPLE_DATA, "phi3")
