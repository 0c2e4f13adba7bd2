"""DVC versions the data and the models: run, record, push, clone, pull, restore, one-parameter experiment.

Real git, real DVC and the repository's own .dvc/config: its default remote (~/dvc-storage/...) lands in a
temporary HOME. The workflow is the tiny one of test_workflow.py, with the raw data tracked by DVC.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from alpaca_lora.testing import WORKFLOW_FILES, jobs_planned, snakemake, tiny_recipe
from conftest import ROOT

BIN = Path(sys.executable).parent
DVC_FILES = [".dvc/config", ".dvc/.gitignore", ".dvcignore", "dvc.yaml", ".gitignore", "data/raw/.gitignore"]
REPO_FILES = [*WORKFLOW_FILES, "tools", *DVC_FILES]
RECIPE = "config/recipes/tiny.yaml"
# Marks a directory output's modification time for Snakemake; .dvcignore keeps it out of DVC.
BOOKKEEPING = ".snakemake_timestamp"


def command(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """git, dvc or the versioning tool, as a user runs them; HOME (and so the DVC remote) is temporary."""
    home = workdir.parent / "home"
    env = {
        **os.environ,
        "HOME": str(home),
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "HF_HUB_OFFLINE": "1",
        "DVC_NO_ANALYTICS": "1",
        "DVC_SITE_CACHE_DIR": str(home / "dvc-site-cache"),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "Test",
        "GIT_AUTHOR_EMAIL": "test@example.com",
        "GIT_COMMITTER_NAME": "Test",
        "GIT_COMMITTER_EMAIL": "test@example.com",
    }
    program = [sys.executable, str(workdir / "tools" / "dvc_pipeline.py")] if args[0] == "tool" else []
    result = subprocess.run(
        program + list(args[1:] if program else args),
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=900,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout[-6000:]}")
    return result


def artifacts(workdir: Path) -> dict[str, bytes]:
    """Every file the pipeline wrote, and the raw data, by path."""
    files = [*(workdir / "results").rglob("*"), workdir / "data" / "raw" / "small.json"]
    return {
        path.relative_to(workdir).as_posix(): path.read_bytes()
        for path in files
        if path.is_file() and path.name != BOOKKEEPING
    }


def mtimes(workdir: Path) -> dict[str, int]:
    return {path: (workdir / path).stat().st_mtime_ns for path in artifacts(workdir)}


def job_counts(output: str) -> dict[str, int]:
    """Rule name -> job count from the 'Job stats' table Snakemake prints before it runs jobs."""
    table = output.split("Job stats:", 1)[1].split("total", 1)[0]
    rows = [line.split() for line in table.splitlines()[3:] if line.strip()]
    return {name: int(count) for name, count in rows}


@pytest.fixture(scope="module")
def origin(tmp_path_factory, tiny_llama, small_alpaca) -> Path:
    """A repository that ran the tiny pipeline, recorded it with `record` and committed dvc.lock."""
    workdir = tmp_path_factory.mktemp("dvc") / "origin"
    for name in REPO_FILES:
        source, target = ROOT / name, workdir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if source.is_dir() else shutil.copy)(source, target)
    shutil.copy(small_alpaca, workdir / "data" / "raw" / "small.json")
    recipe = tiny_recipe("smollm2-135m-alpaca-sample.yaml", tiny_llama, Path("data/raw/small.json"))
    (workdir / RECIPE).write_text(yaml.safe_dump(recipe, allow_unicode=True))
    config = {"experiments": ["tiny"], "recipes_dir": "config/recipes"}
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(config))

    command(workdir, "git", "init", "--quiet", "--initial-branch", "main")
    command(workdir, "dvc", "add", "data/raw/small.json")
    command(workdir, "git", "add", "--all")
    command(workdir, "git", "commit", "--quiet", "-m", "tiny experiment")
    snakemake(workdir)
    recorded = command(workdir, "tool", "record")
    assert "Recorded" in recorded.stdout, recorded.stdout
    command(workdir, "git", "commit", "--quiet", "-m", "record the tiny run")
    return workdir


@pytest.fixture(scope="module")
def clone(origin) -> Path:
    """A fresh clone of the recorded commit, restored with `restore`."""
    workdir = origin.parent / "clone"
    command(origin.parent, "git", "clone", "--quiet", str(origin), str(workdir))
    assert not (workdir / "results").exists() and not (workdir / "data/raw/small.json").exists()
    restored = command(workdir, "tool", "restore")
    assert "Snakemake has nothing to do" in restored.stdout, restored.stdout
    return workdir


def test_raw_data_is_tracked_by_dvc_not_git(origin):
    tracked = command(origin, "git", "ls-files", "data/raw").stdout.split()
    assert "data/raw/small.json.dvc" in tracked and "data/raw/small.json" not in tracked
    assert command(origin, "git", "check-ignore", "data/raw/small.json").returncode == 0


def test_dvc_lock_holds_the_hash_of_every_artifact(origin):
    lock = yaml.safe_load(command(origin, "git", "show", "HEAD:dvc.lock").stdout)
    stage = lock["stages"]["snakemake"]
    outs = {out["path"]: out for out in stage["outs"]}
    for path, content in artifacts(origin).items():
        if path.startswith("data/raw/"):
            continue
        if path in outs:
            assert outs[path]["md5"] == hashlib.md5(content).hexdigest(), path
        else:
            folder = next((out for out in outs if path.startswith(f"{out}/")), None)
            assert folder and outs[folder]["md5"].endswith(".dir"), f"{path} is not in dvc.lock"
    assert "results/tiny/train/adapter" in outs and "results/models/tiny" in outs
    assert "data/raw/small.json" in {dep["path"] for dep in stage["deps"]}
    recipe = yaml.safe_load((origin / RECIPE).read_text(encoding="utf-8"))
    assert stage["params"][RECIPE]["training"]["learning_rate"] == recipe["training"]["learning_rate"]
    # Everything is in the remote (the shipped default: a folder under HOME), and recording left
    # Snakemake's view alone.
    assert any((origin.parent / "home" / "dvc-storage" / "alpaca-lora-pipeline").rglob("*"))
    assert json.loads(command(origin, "dvc", "status", "--cloud", "--json").stdout) == {}
    assert jobs_planned(origin) == {}


def test_dvc_metrics_and_plots_read_the_evaluation_and_training_curves(origin):
    metrics = json.loads(command(origin, "dvc", "metrics", "show", "--json").stdout)
    shown = metrics[""]["data"]["results/tiny/report/metrics.json"]["data"]
    tuned = json.loads((origin / "results/tiny/eval/tuned/metrics.json").read_text())
    scores = json.loads((origin / "results/tiny/eval/tuned/scores.json").read_text())
    assert shown["tuned"]["eval_loss"] == tuned["eval_loss"]
    assert shown["tuned"]["chrf"] == scores["reference"]["chrf"]
    assert shown["tuned"]["pass@1"] == scores["code"]["pass@1"]
    assert {"bleu", "rougeL"} <= set(shown["base"]) and "train_loss" in shown
    # A table a terminal shows: the numbers, no hashes or settings.
    table = command(origin, "dvc", "metrics", "show").stdout
    assert max(map(len, table.splitlines())) <= 200, table
    assert not re.search(r"[0-9a-f]{16}", table), table
    plots = json.loads(command(origin, "dvc", "plots", "show", "--json").stdout)
    [plot] = plots["data"]["results/tiny/train/history.csv"]
    fields = {row["field"] for row in plot["content"]["data"]["values"]}
    assert fields == {"loss", "eval_loss"}


def test_a_fresh_clone_restores_every_artifact_byte_for_byte(origin, clone):
    restored, recorded = artifacts(clone), artifacts(origin)
    assert sorted(restored) == sorted(recorded)
    assert [path for path in recorded if restored[path] != recorded[path]] == []
    assert jobs_planned(clone) == {}


def test_restore_refuses_code_that_dvc_lock_did_not_record(origin):
    workdir = origin.parent / "edited"
    command(origin.parent, "git", "clone", "--quiet", str(origin), str(workdir))
    recipe = yaml.safe_load((workdir / RECIPE).read_text())
    recipe["evaluation"]["max_new_tokens"] = 5
    (workdir / RECIPE).write_text(yaml.safe_dump(recipe, allow_unicode=True))
    result = command(workdir, "tool", "restore", check=False)
    assert result.returncode == 1
    assert "differ from what dvc.lock recorded" in result.stdout and RECIPE in result.stdout
    assert "--touch" not in result.stdout


def test_record_refuses_before_the_run_has_finished(origin):
    workdir = origin.parent / "unfinished"
    command(origin.parent, "git", "clone", "--quiet", str(origin), str(workdir))
    command(workdir, "dvc", "pull", "data/raw/small.json.dvc")
    result = command(workdir, "tool", "record", "--no-push", check=False)
    assert result.returncode == 1 and "The run is not complete" in result.stdout
    assert "train_lora" in result.stdout
    assert command(workdir, "git", "status", "--porcelain").stdout == ""


def test_record_refuses_data_that_a_clone_would_lack(tmp_path, monkeypatch):
    import dvc_pipeline

    monkeypatch.chdir(tmp_path)
    subprocess.run(["git", "init", "--quiet"], check=True)
    Path("data/raw").mkdir(parents=True)
    Path("data/raw/mine.json").write_text("[]")
    definition = {"stages": {"snakemake": {"deps": ["Snakefile", "data/raw/mine.json"]}}}
    with pytest.raises(dvc_pipeline.Failure, match="dvc add data/raw/mine.json"):
        dvc_pipeline.check_data_is_versioned(definition)
    Path("data/raw/mine.json.dvc").write_text("outs: []")
    dvc_pipeline.check_data_is_versioned(definition)


def test_an_experiment_with_one_changed_parameter_reruns_only_what_it_affects(origin, clone):
    before, before_mtimes = artifacts(clone), mtimes(clone)
    recorded = yaml.safe_load((clone / RECIPE).read_text(encoding="utf-8"))["training"]["learning_rate"]
    new_rate = recorded / 2  # any value the recorded run did not use
    result = command(clone, "dvc", "exp", "run", "-S", f"{RECIPE}:training.learning_rate={new_rate}")
    tuned_only = [
        "training_settings",
        "train_lora",
        "evaluate",
        "score_answers",
        "report",
        "export",
        "summary",
        "manifest",
        "all",
    ]
    assert job_counts(result.stdout) == dict.fromkeys(tuned_only, 1)
    after, after_mtimes = artifacts(clone), mtimes(clone)
    untouched = [
        path
        for path in before
        if path.startswith(("data/", "results/data/", "results/models/", "results/tiny/eval/base/"))
    ]
    assert untouched and all(after[p] == before[p] and after_mtimes[p] == before_mtimes[p] for p in untouched)
    rerun = "results/tiny/train/adapter/adapter_model.safetensors"
    assert after[rerun] != before[rerun]
    assert jobs_planned(clone) == {}
    # The experiment's dvc.lock and metrics, next to the recorded commit's.
    lock = yaml.safe_load((clone / "dvc.lock").read_text())["stages"]["snakemake"]
    assert lock["params"][RECIPE]["training"]["learning_rate"] == new_rate
    diff = json.loads(command(clone, "dvc", "metrics", "diff", "--json").stdout)
    changed = diff["results/tiny/report/metrics.json"]
    assert "tuned.eval_loss" in changed and "base.eval_loss" not in changed, changed
    experiments = command(clone, "dvc", "exp", "list", "--name-only").stdout.split()
    assert len(experiments) == 1
    # Back to the recorded commit: its files again, byte for byte, and nothing for Snakemake to do.
    command(clone, "git", "checkout", "--", RECIPE, "dvc.lock")
    command(clone, "tool", "restore", "--no-pull")
    assert artifacts(clone) == artifacts(origin)
    assert jobs_planned(clone) == {}


def test_the_committed_dvc_yaml_is_what_the_workflow_generates(monkeypatch):
    """dvc.yaml is derived from Snakemake's DAG: a change to the workflow's outputs must regenerate it."""
    import dvc_pipeline

    monkeypatch.chdir(ROOT)
    expected = dvc_pipeline.dvc_yaml_text(dvc_pipeline.pipeline_definition())
    assert (ROOT / "dvc.yaml").read_text(encoding="utf-8") == expected, (
        "dvc.yaml is stale: regenerate it with `python tools/dvc_pipeline.py dvc-yaml`"
    )


def test_a_fresh_clone_before_restore_looks_as_the_docs_say(origin):
    """docs/versioning.md tells a newcomer what a clone shows before `make restore`: every output 'not in
    cache'; after the restore, a clean `dvc status`."""
    workdir = origin.parent / "fresh"
    command(origin.parent, "git", "clone", "--quiet", str(origin), str(workdir))
    status = command(workdir, "dvc", "status").stdout
    assert "not in cache" in status and "results/tiny/train/adapter" in status
    assert "tuned.eval_loss" in command(workdir, "dvc", "metrics", "show").stdout, "read from the remote"
    said = command(workdir, "dvc", "metrics", "diff", "HEAD~1").stdout  # HEAD~1 recorded nothing
    assert "DVC failed to load some metrics" in said
    docs = (ROOT / "docs" / "versioning.md").read_text(encoding="utf-8")
    assert "`not in cache`" in docs and "Run `make restore` first" in docs
    assert '"DVC failed to load some metrics"' in docs
    command(workdir, "tool", "restore")
    assert json.loads(command(workdir, "dvc", "status", "--json").stdout) == {}
