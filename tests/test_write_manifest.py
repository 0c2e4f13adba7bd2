"""scripts/write_manifest.py on hand-made inputs: hashes, folders file by file, git state, timings."""

from __future__ import annotations

import json
from pathlib import Path

import write_manifest
from alpaca_lora.common import sha256_file
from conftest import git, run_script

# The header Snakemake writes to a benchmark file, and one row.
BENCHMARK = (
    "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    "12.5\t0:00:12\t812.3\t2000.1\t700.0\t710.2\t1.0\t2.0\t95.0\t11.9\n"
)


def test_git_state_tells_a_clean_tree_from_a_dirty_one(tmp_path: Path) -> None:
    assert write_manifest.git_state(str(tmp_path))["commit"] is None
    (tmp_path / "Snakefile").write_text("rule all:\n")
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-q", "-m", "x")
    commit = git(tmp_path, "rev-parse", "HEAD")
    assert write_manifest.git_state(str(tmp_path)) == {"commit": commit, "dirty": False, "changed_paths": 0}
    (tmp_path / "Snakefile").write_text("rule all:\n    input: []\n")
    (tmp_path / "new_recipe.yaml").write_text("x: 1\n")
    assert write_manifest.git_state(str(tmp_path)) == {"commit": commit, "dirty": True, "changed_paths": 2}


def test_manifest_from_files(tmp_path: Path) -> None:
    model = tmp_path / "results/models/m"
    (model / "sub").mkdir(parents=True)
    (model / "config.json").write_text("{}")
    (model / "sub" / "weights.bin").write_bytes(b"\0\1\2")
    source = {"kind": "hub", "repo_id": "org/model", "revision": "abc", "resolved_commit": "abc123"}
    (model / "source.json").write_text(json.dumps({**source, "trust_remote_code": False, "other": 1}))
    data = tmp_path / "data.json"
    data.write_text("[]")
    bench = tmp_path / "results/benchmarks/exp/train_lora.tsv"
    bench.parent.mkdir(parents=True)
    bench.write_text(BENCHMARK)
    out = tmp_path / "results/exp/manifest.json"
    fit = {"budget_gb": 8.0, "micro_batch": 2, "gradient_accumulation_steps": 4}
    train_summary = tmp_path / "summary.json"
    train_summary.write_text(
        json.dumps({"micro_batch": 2, "gradient_accumulation_steps": 4, "memory_fit": fit})
    )
    recipe = {"data": {"name": "d", "format": "auto"}, "model": {"name": "m"}}
    run_script(
        "write_manifest.py",
        "--experiment",
        "exp",
        "--recipe-json",
        json.dumps(recipe),
        "--model",
        model,
        "--inputs",
        data,
        "--outputs",
        model,
        "--benchmarks",
        bench,
        "--source-dir",
        tmp_path,
        "--train-summary",
        train_summary,
        "--output",
        out,
    )
    manifest = json.loads(out.read_text())
    assert manifest["recipe"] == recipe
    assert manifest["inputs"] == {str(data): sha256_file(data)}
    assert manifest["outputs"] == {
        str(model / name): sha256_file(model / name)
        for name in ("config.json", "source.json", "sub/weights.bin")
    }
    assert manifest["model"] == {**source, "trust_remote_code": False}
    assert manifest["timings"] == {
        "exp/train_lora": {"seconds": 12.5, "cpu_seconds": 11.9, "max_rss_mb": 812.3}
    }
    assert manifest["total_seconds"] == 12.5
    assert manifest["training"] == {"micro_batch": 2, "gradient_accumulation_steps": 4, "memory_fit": fit}
    assert manifest["code"]["commit"] is None
    assert "pytest" in manifest["packages"]["distributions"]


def test_manifest_records_the_lockfiles_and_what_differs_from_them(tmp_path: Path) -> None:
    """The lockfiles' hashes, and each runtime-locked package that is missing or at another version."""
    import pytest as installed

    model = tmp_path / "model"
    model.mkdir()
    (model / "source.json").write_text(json.dumps({"kind": "local"}))
    lock = tmp_path / "requirements.txt"
    lock.write_text(
        f"pytest=={installed.__version__} \\\n    --hash=sha256:{'0' * 64}\n"
        "orjson==0.0.1 \\\n    --hash=sha256:{'1' * 64}\nno-such-package-here==1.0\n"
    )
    dev = tmp_path / "requirements-dev.txt"  # hashed, but not checked: it adds only development tools
    dev.write_text("another-missing-tool==2.0\n")
    out = tmp_path / "manifest.json"
    run_script(
        "write_manifest.py", "--experiment", "exp", "--recipe-json", "{}", "--model", model,
        "--inputs", lock, "--outputs", lock, "--lockfiles", lock, dev, "--output", out,
    )  # fmt: skip
    environment = json.loads(out.read_text())["environment"]
    assert environment["lockfiles"] == {str(lock): sha256_file(lock), str(dev): sha256_file(dev)}
    import orjson

    assert environment["differences_from_lock"] == {
        "no-such-package-here": {"locked": "1.0", "installed": None},
        "orjson": {"locked": "0.0.1", "installed": orjson.__version__},
    }
