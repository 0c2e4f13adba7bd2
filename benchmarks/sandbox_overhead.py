#!/usr/bin/env python
"""Benchmark 6: the code sandbox's cost per program, for evaluations that run hundreds of them.

Each round runs the same small program (a function and three assert tests, as a HumanEval problem has) once
in every variant, in turn, so that a busy machine slows all of them alike:
  floor       `python -I -c pass`: starting an interpreter at all
  audit-hook  sandbox.run_tests(isolation="audit-hook"): process limits and the audit hook
  namespace   sandbox.run_tests(isolation="namespace"): the same inside bubblewrap's namespaces (if it works)
  baseline    run_tests of another sandbox.py given with --baseline (an earlier version, for before/after)
It reports the median seconds per program and each variant's ratio to the floor (and to the baseline).

Usage: python benchmarks/sandbox_overhead.py [--rounds 30] [--baseline old_sandbox.py]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path
from statistics import median

from alpaca_lora import sandbox

ROOT = Path(__file__).resolve().parents[1]

PROGRAM = (
    "def has_close_elements(numbers, threshold):\n"
    "    return any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1 :])\n"
)
TESTS = [
    "assert has_close_elements([1.0, 2.0, 3.9, 4.0], 0.3)",
    "assert not has_close_elements([1.0, 2.0, 3.0], 0.5)",
    "assert has_close_elements([1.0, 2.0, 5.9, 4.0, 5.0], 0.95)",
]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--baseline", help="another sandbox.py with run_tests(code, tests, timeout_s)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/sandbox_overhead.json"))
    return parser.parse_args()


def load(path: str):
    spec = importlib.util.spec_from_file_location("baseline_sandbox", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def variants(baseline: str | None) -> dict:
    def floor() -> None:
        subprocess.run([sys.executable, "-I", "-c", "pass"], check=True)

    def sandboxed(isolation: str):
        def run() -> None:
            result = sandbox.run_tests(PROGRAM, TESTS, 10, isolation=isolation)
            assert result["passed"], result

        return run

    chosen = {"floor": floor, "audit-hook": sandboxed("audit-hook")}
    if sandbox.namespace_support()[0] is not None:
        chosen["namespace"] = sandboxed("namespace")
    if baseline:
        old = load(baseline)

        def before() -> None:
            assert old.run_tests(PROGRAM, TESTS, 10)["passed"]

        chosen["baseline"] = before
    return chosen


def main() -> None:
    args = parse_args()
    chosen = variants(args.baseline)
    for run in chosen.values():  # warm-up: caches (the namespace probe), page cache
        run()
    seconds: dict[str, list[float]] = {name: [] for name in chosen}
    for _ in range(args.rounds):
        for name, run in chosen.items():
            started = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - started)
    medians = {name: median(values) for name, values in seconds.items()}
    summary = {
        "rounds": args.rounds,
        "median_seconds_per_program": medians,
        "ratio_to_floor": {name: value / medians["floor"] for name, value in medians.items()},
        "layers": {
            name: sandbox.isolation_layers(name)["layers"]
            for name in ("audit-hook", "namespace")
            if name in chosen
        },
    }
    if "baseline" in medians:
        summary["ratio_to_baseline"] = {name: value / medians["baseline"] for name, value in medians.items()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")
    for name, value in medians.items():
        print(f"{name:>10}: {1000 * value:6.1f} ms per program ({value / medians['floor']:.2f}x the floor)")
    print(f"Wrote {args.out}")


if __name__ == "__main__":
    main()
