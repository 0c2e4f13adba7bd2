#!/usr/bin/env python
"""Write an experiment's provenance manifest: what went in, what came out, with what code, and how long.

The manifest (JSON) holds:
  recipe      the resolved recipe (schema defaults filled in), as the workflow ran it
  inputs      sha256 of every input file (data, recipe, step scripts)
  outputs     sha256 of every output file; folders (the model, the adapter) file by file
  model       the base model's source and revision, from the model folder's source.json
  code        the git commit of --source-dir and whether the work tree had uncommitted changes
  packages    Python, the platform, and the version of every installed distribution
  environment the sha256 of each lockfile (--lockfiles) and every package of the runtime locks that is
              missing or at another version here (empty: the run used exactly the locked environment)
  timings     per step: wall-clock seconds, CPU seconds and peak memory, from Snakemake's benchmark files
  training    the micro-batch and gradient accumulation training used, and the memory fit that chose them
              (from --train-summary): put them in the recipe (resources.fit_micro_batch: false) to rerun alike

It never records environment variables: Hub tokens (HF_TOKEN) stay out of it.

Example:
  python scripts/write_manifest.py --experiment exp --recipe-json "$(cat resolved.json)" \\
      --model results/models/m --inputs data/raw/d.json config/recipes/exp.yaml \\
      --outputs results/exp/train/adapter results/exp/report/report.md \\
      --benchmarks results/benchmarks/exp/train_lora.tsv --output results/exp/manifest.json
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

from alpaca_lora import lockfiles as lockfiles_module
from alpaca_lora.common import add_log_argument, read_json, sha256_file, step, write_json

log = logging.getLogger("write_manifest")

# Benchmark columns kept, with the names they get in the manifest.
BENCHMARK_COLUMNS = {"s": "seconds", "cpu_time": "cpu_seconds", "max_rss": "max_rss_mb"}
MODEL_SOURCE_KEYS = (
    "kind",
    "repo_id",
    "revision",
    "resolved_commit",
    "package",
    "package_version",
    "file",
    "path",
    "sha256",
    "architecture",
    "parameters",
    "dtype",
    "trust_remote_code",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--experiment", required=True, help="experiment name")
    parser.add_argument("--recipe-json", required=True, help="the resolved recipe, as JSON text")
    parser.add_argument("--model", required=True, help="base model folder (its source.json is read)")
    parser.add_argument("--inputs", nargs="+", required=True, help="input files of the experiment")
    parser.add_argument("--outputs", nargs="+", required=True, help="output files or folders")
    parser.add_argument("--benchmarks", nargs="*", default=[], help="Snakemake benchmark TSV files")
    parser.add_argument(
        "--lockfiles", nargs="*", default=[], help="the lockfiles (`make lock`) to hash and check against"
    )
    parser.add_argument(
        "--source-dir",
        default=str(Path(__file__).resolve().parent.parent),
        help="the pipeline's folder, for the git commit (default: the one holding this script)",
    )
    parser.add_argument("--train-summary", help="the training step's summary.json (resolved micro-batch)")
    parser.add_argument("--output", required=True, help="manifest JSON to write")
    add_log_argument(parser)
    return parser.parse_args(argv)


def file_hashes(paths: list[str]) -> dict[str, str]:
    """sha256 of each file; a folder contributes every file under it, by path."""
    hashes = {}
    for name in paths:
        path = Path(name)
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            hashes[str(file)] = sha256_file(file)
    return hashes


def git_state(folder: str) -> dict:
    def git(*arguments: str) -> str:
        return subprocess.run(
            ["git", "-C", folder, *arguments], capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        changes = git("status", "--porcelain")
    except (OSError, subprocess.CalledProcessError):
        # No path of this machine: the manifest must read the same wherever the run was made.
        return {"commit": None, "dirty": None, "note": "the pipeline's folder is not a git work tree"}
    return {"commit": commit, "dirty": bool(changes), "changed_paths": len(changes.splitlines())}


def packages() -> dict:
    versions = {dist.metadata["Name"]: dist.version for dist in metadata.distributions()}
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "distributions": dict(sorted(versions.items(), key=lambda item: item[0].lower())),
    }


def environment(lockfiles: list[str]) -> dict:
    runtime = [path for path in lockfiles if Path(path).name in lockfiles_module.RUNTIME_LOCKS]
    locked = {name: version for path in runtime for name, version in lockfiles_module.pins(path).items()}
    return {
        "lockfiles": file_hashes(lockfiles),
        "differences_from_lock": lockfiles_module.differences_from_lock(locked),
    }


def timings(benchmarks: list[str]) -> dict[str, dict]:
    """Step (the benchmark file's path below results/benchmarks, without .tsv) -> its measurements."""
    steps = {}
    for name in benchmarks:
        with open(name, newline="", encoding="utf-8") as handle:
            row = next(csv.DictReader(handle, delimiter="\t"))
        key = str(Path(name).with_suffix("")).split("benchmarks/", 1)[-1]
        steps[key] = {
            label: float(row[column])
            for column, label in BENCHMARK_COLUMNS.items()
            if row.get(column) not in (None, "", "NA", "-")
        }
    return steps


def resolved_training(summary_path: str | None) -> dict | None:
    """What the training step resolved at run time (the micro-batch that fit the memory budget)."""
    if not summary_path:
        return None
    summary = read_json(summary_path)
    keys = ("micro_batch", "gradient_accumulation_steps", "memory_fit")
    return {key: summary.get(key) for key in keys}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with step("write_manifest", args.log_file):
        source = read_json(Path(args.model) / "source.json")
        steps = timings(args.benchmarks)
        manifest = {
            "experiment": args.experiment,
            "written_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "recipe": json.loads(args.recipe_json),
            "inputs": file_hashes(args.inputs),
            "outputs": file_hashes(args.outputs),
            "model": {key: source[key] for key in MODEL_SOURCE_KEYS if key in source},
            "code": git_state(args.source_dir),
            "packages": packages(),
            "environment": environment(args.lockfiles),
            "timings": steps,
            "total_seconds": round(sum(step.get("seconds", 0.0) for step in steps.values()), 2),
            "training": resolved_training(args.train_summary),
        }
        write_json(args.output, manifest)
        log.info(
            "Wrote %s: %d inputs, %d output files, %d timed steps",
            args.output,
            len(manifest["inputs"]),
            len(manifest["outputs"]),
            len(steps),
        )


if __name__ == "__main__":
    main()
