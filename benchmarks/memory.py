#!/usr/bin/env python
"""Benchmark 7: peak memory and throughput of the training step, the recipe's batch vs a fitted micro-batch.

Runs the pipeline's training step (scripts/train_lora.py) with the default recipe's settings for a few
optimizer steps on two data sets:
  sample       the bundled Alpaca sample (short answers)
  code-like    a CodeAlpaca-shaped set built offline (build_code_like): about 2,000 records whose answers are
               the source of documented functions of Python's own standard library ("Write a Python function
               `name` that <first docstring line>" -> the function), longer than the sample's answers, as
               public CodeAlpaca data (20K records, no Hub access here) has them
and for each batch x length setting twice: "before", the recipe's batch as one micro-batch
(resources.fit_micro_batch: false), and "after", fitted to a memory budget (resources.max_memory_gb), the same
effective batch made up with gradient accumulation. Batches are sorted by length (the recipe's
group_by_length), so the first step has the longest sequences: the peak comes early and a few steps show it.
Peak memory is the training process's maximum resident set (getrusage of the child, what /usr/bin/time -v
reports); throughput is non-padding tokens over the trainer's train runtime.

Usage: python benchmarks/memory.py [--max-steps 2] [--budget-gb 8] [--settings 8x512 ...]
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import random
import subprocess
import tempfile
import time
from pathlib import Path

from train_overhead import prepare, train_command

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data/raw/alpaca_zh_en_sample.json"
# Standard-library modules with many documented pure-Python functions.
CODE_MODULES = (
    "argparse", "ast", "calendar", "collections", "configparser", "csv", "dataclasses", "datetime", "difflib",
    "email.utils", "enum", "fractions", "ftplib", "functools", "gettext", "glob", "gzip", "heapq", "html",
    "http.client", "http.cookiejar", "imaplib", "inspect", "ipaddress", "json.decoder", "locale", "logging",
    "mailbox", "mimetypes", "ntpath", "optparse", "os", "pathlib", "pickle", "pickletools", "platform",
    "plistlib", "poplib", "posixpath", "pprint", "pydoc", "quopri", "random", "shlex", "shutil", "smtplib",
    "statistics", "string", "subprocess", "tarfile", "tempfile", "textwrap", "threading", "tokenize",
    "traceback", "turtle", "typing", "unittest.case", "urllib.parse", "urllib.request", "uuid", "warnings",
    "wave", "weakref", "xml.dom.minidom", "xml.etree.ElementTree", "zipfile", "zipimport", "_pydecimal",
    "_pyio", "asyncio.base_events", "asyncio.streams", "bdb", "cmd", "codecs", "concurrent.futures._base",
    "doctest", "email.message", "filecmp", "fileinput", "http.server", "importlib.metadata",
    "logging.handlers", "modulefinder", "multiprocessing.pool", "netrc", "pdb", "profile", "pstats", "queue",
    "sched", "selectors", "socketserver", "trace", "zipapp", "email.feedparser", "email.header", "tkinter",
)  # fmt: skip


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--max-steps", type=int, default=2)
    parser.add_argument(
        "--budget-gb", type=float, default=8.0, help="resources.max_memory_gb of the fitted runs"
    )
    parser.add_argument("--settings", nargs="+", default=["8x512"], help="batch x max_length settings")
    parser.add_argument("--records", type=int, default=2000, help="records of the code-like set")
    parser.add_argument(
        "--bf16", action="store_true", help="also the fitted run with bf16 autocast (training.bf16: true)"
    )
    parser.add_argument("--model", default=str(ROOT / "results/models/smollm2-135m-instruct"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/memory.json"))
    return parser.parse_args()


def code_task(name: str, function) -> list[dict]:
    """One instruction record for a documented function of 200 to 4,000 characters, else none."""
    doc = inspect.getdoc(function)
    try:
        source = inspect.getsource(function)
    except (OSError, TypeError):
        return []
    if not doc or name.startswith("_") or not 200 <= len(source) <= 4000:
        return []
    summary = doc.split("\n\n")[0].replace("\n", " ")
    instruction = f"Write a Python function `{name}` that does the following: {summary}"
    return [{"instruction": instruction, "input": "", "output": inspect.cleandoc(source)}]


def build_code_like(path: Path, records: int, seed: int = 0) -> dict:
    """An Alpaca-format file of `records` code tasks from the standard library's documented functions."""
    import importlib

    tasks = []
    for name in CODE_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:  # tkinter without Tk, say: the set is a little smaller there (it says how many)
            continue
        for owner in (module, *(v for v in vars(module).values() if inspect.isclass(v))):
            for attribute, function in sorted(vars(owner).items()):
                if inspect.isfunction(function) and function.__module__ == module.__name__:
                    tasks += code_task(attribute, function)
    random.Random(seed).shuffle(tasks)
    chosen = (tasks * (records // max(len(tasks), 1) + 1))[:records]
    path.write_text(json.dumps(chosen, ensure_ascii=False), encoding="utf-8")
    lengths = sorted(len(task["output"]) for task in chosen)
    return {
        "records": len(chosen),
        "distinct": min(len(tasks), records),
        "median_answer_chars": lengths[len(lengths) // 2],
    }


def measured_run(command: list) -> tuple[float, int]:
    """Run a command; its wall time and its peak resident set in bytes (the child's own maximum)."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(list(map(str, command)), stdout=subprocess.DEVNULL, stderr=errors)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode:
            errors.seek(0)
            raise RuntimeError(
                f"{command[1]} failed ({process.returncode}): {errors.read().decode()[-2000:]}"
            )
    return time.perf_counter() - started, usage.ru_maxrss * 1024


def run_training(
    model: str,
    data: dict,
    folder: Path,
    batch: int,
    length: int,
    steps: int,
    resources: dict,
    bf16: bool = False,
) -> dict:
    command = train_command(
        model, data, folder, max_steps=steps, per_device_train_batch_size=batch,
        gradient_accumulation_steps=1, max_length=length, eval_strategy="no", save_steps=1000,
        logging_steps=1, bf16=bf16,
    )  # fmt: skip
    settings = json.loads((folder / "settings.json").read_text())
    (folder / "settings.json").write_text(json.dumps({**settings, "resources": resources}))
    wall, peak = measured_run(command)
    summary = json.loads((folder / "summary.json").read_text())
    return {
        "micro_batch": summary["micro_batch"],
        "gradient_accumulation_steps": summary["gradient_accumulation_steps"],
        "estimated_peak_gb": (summary["memory_fit"] or {}).get("estimated_peak_gb"),
        "peak_rss_gb": round(peak / 1e9, 3),
        "tokens": summary["train_tokens"],
        "tokens_per_s": round(summary["train_tokens"] / summary["train_runtime_s"], 2),
        "train_loss": summary["train_loss"],
        "wall_s": round(wall, 1),
    }


def main() -> None:
    args = parse_args()
    results, data_sets = [], {}
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        code_like = folder / "code_like.json"
        data_sets["code-like"] = build_code_like(code_like, args.records)
        sources = {"sample": SAMPLE, "code-like": code_like}
        for data_name, source in sources.items():
            (folder / data_name).mkdir()
            data = prepare(folder / data_name, args.model, source=source, eval_size=8)
            for setting in args.settings:
                batch, length = map(int, setting.split("x"))
                row = {"data": data_name, "batch": batch, "max_length": length}
                fitted = {"max_memory_gb": args.budget_gb}
                variants = {"before": ({"fit_micro_batch": False}, False), "after": (fitted, False)}
                if args.bf16:
                    variants["after_bf16"] = (fitted, True)
                for name, (resources, bf16) in variants.items():
                    row[name] = run_training(
                        args.model, data, folder, batch, length, args.max_steps, resources, bf16
                    )
                    print(f"{data_name} {setting} {name}: {json.dumps(row[name])}", flush=True)
                row["peak_ratio"] = round(row["after"]["peak_rss_gb"] / row["before"]["peak_rss_gb"], 3)
                row["tokens_per_s_ratio"] = round(
                    row["after"]["tokens_per_s"] / row["before"]["tokens_per_s"], 3
                )
                if args.bf16:
                    row["bf16_tokens_per_s_ratio"] = round(
                        row["after_bf16"]["tokens_per_s"] / row["after"]["tokens_per_s"], 3
                    )
                results.append(row)
    report = {
        "benchmark": "memory",
        "max_steps": args.max_steps,
        "budget_gb": args.budget_gb,
        "data_sets": data_sets,
        "results": results,
        "date": time.strftime("%Y-%m-%d"),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
