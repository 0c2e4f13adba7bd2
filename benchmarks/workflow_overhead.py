#!/usr/bin/env python
"""Benchmark 4: Snakemake's own overhead.

1. `snakemake --cores all` when everything is up to date (goal: 3 s or less), on a finished run of the tiny
   pipeline (2-layer model, 40 records) in a temporary folder.
2. The DAG build (`snakemake --dry-run`) of a 50-experiment grid: LoRA rank in {2, 4, 8, 16, 32} x 10 seeds on
   one base model and one dataset, sharing the data steps.
Each command is timed as a whole process, the median of --repeats runs.

Usage: python benchmarks/workflow_overhead.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path
from statistics import median

from alpaca_lora.testing import SNAKEMAKE, build_tiny_model, make_workdir, tiny_recipe

ROOT = Path(__file__).resolve().parents[1]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/workflow_overhead.json"))
    return parser.parse_args()


def timed(workdir: Path, *args: str) -> float:
    started = time.perf_counter()
    result = subprocess.run([SNAKEMAKE, "--cores", "all", *args], cwd=workdir, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode:
        raise RuntimeError(result.stderr[-3000:])
    return seconds


def grid(base: dict) -> dict[str, dict]:
    recipes = {}
    for rank in (2, 4, 8, 16, 32):
        for seed in range(10):
            recipe = json.loads(json.dumps(base))
            recipe["lora"]["r"] = rank
            recipe["training"]["seed"] = seed
            recipes[f"tiny-r{rank}-s{seed}"] = recipe
    return recipes


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        sample = json.loads((ROOT / "data/raw/alpaca_zh_en_sample.json").read_text(encoding="utf-8"))
        data = folder / "small.json"
        data.write_text(json.dumps(sample[:40], ensure_ascii=False), encoding="utf-8")
        model = build_tiny_model(folder / "model", ROOT / "data/raw/alpaca_zh_en_sample.json")
        base = tiny_recipe("smollm2-135m-alpaca-sample.yaml", model, data)
        for name in ("single", "grid"):
            (folder / name).mkdir()
        single = make_workdir(folder / "single", {"tiny": base})
        timed(single)  # the run itself
        up_to_date = [timed(single) for _ in range(args.repeats)]
        print(f"up-to-date `snakemake --cores all`: median {median(up_to_date):.2f} s", flush=True)
        cells = make_workdir(folder / "grid", grid(base))
        dag = [timed(cells, "--dry-run") for _ in range(args.repeats)]
        print(f"DAG build of a 50-cell grid (`--dry-run`): median {median(dag):.2f} s", flush=True)
    report = {
        "benchmark": "workflow_overhead",
        "up_to_date_s": {"median": median(up_to_date), "runs": up_to_date},
        "grid_50_dry_run_s": {"median": median(dag), "runs": dag},
        "date": time.strftime("%Y-%m-%d"),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
