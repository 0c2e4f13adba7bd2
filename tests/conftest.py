"""Shared fixtures: paths, a small slice of the bundled data, and tiny local chat models."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from alpaca_lora.testing import ROOT, build_tiny_model

SCRIPTS = ROOT / "scripts"
SAMPLE_DATA = ROOT / "data" / "raw" / "alpaca_zh_en_sample.json"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# `make test` runs the modules on parallel workers (pytest-xdist, --dist loadfile: a module stays on one
# worker, so its module fixtures are built once). The modules that take minutes go first, longest first (the
# durations pytest prints after each run), so that no long one starts last and runs alone at the end.
LONGEST_FIRST = (
    "test_slurm.py",  # mostly waits on the cluster's jobs
    "test_workflow.py",
    "test_shipped_configs.py",
    "test_distributed.py",
    "test_dvc_versioning.py",
    "test_train_and_evaluate.py",
    "test_memory.py",
    "test_lm_eval.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: position for position, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONGEST_FIRST)))


def recipe_line(recipe: Path, key: str) -> str:
    """A recipe's `key: value` line as written, without its comment: what a verbatim quote of it holds."""
    lines = recipe.read_text(encoding="utf-8").splitlines()
    return next(line.split("#")[0].strip() for line in lines if line.strip().startswith(f"{key}:"))


def run_script(
    name: str, *args: str, check: bool = True, timeout: float | None = None, cwd: Path = ROOT
) -> subprocess.CompletedProcess:
    """Run a step script the way a rule does: as its own process, from the shell."""
    result = subprocess.run(
        [sys.executable, str(SCRIPTS / name), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
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


HUB_COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A datasets cache holding "tester/tiny-alpaca" at HUB_COMMIT, as a download would have left it.

    `datasets` builds it from a local JSON Lines file; the build is then filed under the repository's name and
    commit, where `datasets` looks for a Hub dataset when offline.
    """
    import datasets

    records = tmp_path / "train.jsonl"
    rows = [{"instruction": f"Q{i}", "input": "", "output": f"A{i}", "n": i} for i in range(5)]
    records.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    builder = datasets.load_dataset_builder(
        "json", data_files={"train": str(records)}, cache_dir=str(tmp_path / "b")
    )
    builder.download_and_prepare()
    cache = tmp_path / "datasets-cache"
    target = cache / "tester___tiny-alpaca" / "default" / "0.0.0" / HUB_COMMIT
    target.parent.mkdir(parents=True)
    Path(builder.cache_dir).rename(target)
    for arrow in target.glob("json-*.arrow"):
        arrow.rename(target / arrow.name.replace("json-", "tiny-alpaca-"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


# ---- a real browser: Debian's chromium, driven by selenium through chromedriver -------------------------

# What the report page looks like once the browser has rendered it: the answer tables cell by cell, the text
# outside answers, the headings, every image's load state, the value tables' cell counts.
PAGE_FACTS = """
const cell = (c) => ({
  pre: c.querySelectorAll("pre").length,
  text: c.querySelector("pre")?.textContent ?? null,
  note: c.querySelector(".note")?.textContent ?? null,
});
const rows = (table) => [...table.tBodies[0].rows].map((row) => [...row.cells].map(cell));
const outside = document.body.cloneNode(true);
outside.querySelectorAll("pre").forEach((pre) => pre.remove());
return {
  answers: [...document.querySelectorAll("table.answers")].map(rows),
  values: [...document.querySelectorAll("table.values")].map((t) => ({
    header: t.tHead.rows[0].cells.length,
    cells: [...t.tBodies[0].rows].map((r) => r.cells.length),
  })),
  headings: [...document.querySelectorAll("h1, h2, h3, h4, h5, h6")].map((h) => h.textContent),
  images: [...document.images].map((i) => ({complete: i.complete, width: i.naturalWidth})),
  text_outside_answers: outside.textContent,
  elements: document.querySelectorAll("*").length,
};
"""


@pytest.fixture(scope="session")
def browser():
    """A function: an HTML file -> PAGE_FACTS as headless chromium renders it.

    Needs `chromium` and `chromedriver` (tests/browser/install.sh, which `make test` runs); without them the
    test is skipped, unless BROWSER_TESTS=required (make test), where it fails.
    """
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    wanted = os.environ.get("BROWSER_TESTS", "")
    if wanted == "skip" or (not (chromium and chromedriver) and wanted != "required"):
        pytest.skip("needs chromium and chromedriver (tests/browser/install.sh); make test installs them")
    assert chromium and chromedriver, "BROWSER_TESTS=required, but chromium or chromedriver is missing"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)

    def facts(page: Path) -> dict:
        driver.get(Path(page).resolve().as_uri())  # returns after the load event: images decoded or failed
        return driver.execute_script(PAGE_FACTS)

    yield facts
    driver.quit()
