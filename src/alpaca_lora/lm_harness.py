"""EleutherAI's lm-evaluation-harness (lm-eval) for the pipeline: the project's own local task, task-name
checks, and the results in the form the report reads.

The project's task, `alpaca_heldout_choice`, is built from the experiment's held-out eval split: for each
eval record, the question is its last user turn and the choices are its own reference answer and the reference
answers of three other eval records (picked with a seeded generator; the true answer's position too). The
model scores each choice by log-likelihood; lm-eval reports acc and acc_norm. It is an lm-eval YAML task
(`dataset_path: json`, `dataset_kwargs.data_files`) found through `include_path`, so it runs offline.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
from importlib.metadata import version
from pathlib import Path

import yaml

from alpaca_lora.common import atomic_path, read_jsonl, sha256_text, write_jsonl

# The task the project builds from the eval split; always known, whatever lm-eval ships.
LOCAL_TASK = "alpaca_heldout_choice"
CHOICES = 4


def local_task_config(data_file: Path) -> dict:
    """The lm-eval task YAML of the project's task, reading its documents from `data_file`."""
    return {
        "task": LOCAL_TASK,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data_file)}},
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": "{{question}}",
        "doc_to_choice": "choices",
        "doc_to_target": "label",
        "target_delimiter": "\n",
        "metric_list": [
            {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
            {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
        ],
        "metadata": {"version": 1.0},
    }


def choice_documents(eval_file: str | Path, seed: int) -> list[dict]:
    """One multiple-choice document per eval record: its question, its answer among three others."""
    records = list(read_jsonl(eval_file))
    pairs = [(r["messages"][-2]["content"], r["messages"][-1]["content"]) for r in records]
    if len(pairs) < CHOICES:
        raise ValueError(f"{eval_file}: {LOCAL_TASK} needs at least {CHOICES} eval records, got {len(pairs)}")
    generator = random.Random(seed)
    documents = []
    for index, (question, answer) in enumerate(pairs):
        others = [pairs[i][1] for i in range(len(pairs)) if i != index and pairs[i][1] != answer]
        choices = generator.sample(list(dict.fromkeys(others)), CHOICES - 1)
        label = generator.randrange(CHOICES)
        choices.insert(label, answer)
        documents.append(
            {"id": records[index].get("id", index), "question": question, "choices": choices, "label": label}
        )
    return documents


def build_local_task(eval_file: str | Path, folder: str | Path, seed: int) -> Path:
    """Write the project's task (documents as JSON Lines and its YAML) into `folder`; return the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data_file = folder / f"{LOCAL_TASK}.jsonl"
    write_jsonl(data_file, choice_documents(eval_file, seed))
    config = yaml.safe_dump(local_task_config(data_file), allow_unicode=True, sort_keys=False)
    (folder / f"{LOCAL_TASK}.yaml").write_text(config, encoding="utf-8")
    return folder


def task_manager(include_path: list[str] | None = None, include_defaults: bool = True):
    """lm-eval's TaskManager: its own tasks (with include_defaults) and those under `include_path`."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=include_path or None, include_defaults=include_defaults)


def builtin_task_names() -> list[str]:
    """Every task, group and tag lm-eval ships. Indexing them reads thousands of YAML files (about half a
    minute on a busy 2-core CPU), too slow for every start of the workflow, so the names are kept in a cache
    file per installed lm-eval (its version and the time its task folder was written)."""
    tasks = Path(importlib.util.find_spec("lm_eval").origin).parent / "tasks"
    key = sha256_text(f"{version('lm-eval')} {tasks} {tasks.stat().st_mtime_ns}")[:16]
    cache_home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    cache = cache_home / "alpaca-lora-pipeline" / f"lm_eval-tasks-{key}.json"
    if cache.is_file():
        return json.loads(cache.read_text(encoding="utf-8"))
    names = task_manager().all_tasks
    try:
        with atomic_path(cache) as temporary:
            temporary.write_text(json.dumps(names), encoding="utf-8")
    except OSError:
        pass  # a read-only home: index again next time
    return names


def known_tasks(include_path: list[str] | None = None, builtin: bool = True) -> list[str]:
    """The project's task, the names under `include_path`, and (with `builtin`) lm-eval's own."""
    names = [LOCAL_TASK, *(builtin_task_names() if builtin else [])]
    if include_path:
        names += task_manager(include_path, include_defaults=False).all_tasks
    return names


def unknown_tasks(names: list[str], known: list[str]) -> list[str]:
    return [name for name in names if name not in set(known)]


def metric_name(key: str) -> str:
    """lm-eval's "metric,filter" as one name: acc (filter none), exact_match/strict-match."""
    metric, _, kind = key.partition(",")
    return metric if kind in ("", "none") else f"{metric}/{kind}"


def sample_counts(results: dict, name: str) -> tuple[int | None, int | None]:
    """(documents scored, documents the task has) of a task, or summed over a group's tasks (mmlu)."""
    counts = results.get("n-samples") or {}
    if name in counts:
        return counts[name].get("effective"), counts[name].get("original")
    parts = [sample_counts(results, child) for child in results.get("group_subtasks", {}).get(name, [])]
    if not parts or any(None in part for part in parts):
        return None, None
    return sum(part[0] for part in parts), sum(part[1] for part in parts)


def summarized(results: dict) -> dict[str, dict]:
    """Per task or group that has numbers: its metrics (value and stderr), sample counts, shots, version."""
    summary = {}
    for task, values in results["results"].items():
        metrics = {}
        for key, value in values.items():
            # "metric,filter" keys only (sample_len and alias are not metrics)
            if "," not in key or "_stderr," in key or not isinstance(value, int | float):
                continue
            stderr = values.get(key.replace(",", "_stderr,", 1))
            metrics[metric_name(key)] = {
                "value": value,
                "stderr": stderr if isinstance(stderr, int | float) else None,
            }
        if not metrics:
            continue
        samples, documents = sample_counts(results, task)
        summary[task] = {
            "metrics": metrics,
            "samples": samples,
            "documents": documents,
            "num_fewshot": results.get("n-shot", {}).get(task),
            "version": results.get("versions", {}).get(task),
            "higher_is_better": results.get("higher_is_better", {}).get(task, {}),
        }
    return summary


if __name__ == "__main__":
    from alpaca_lora.common import module_help

    module_help(__doc__ + "\nA library: nothing to run (scripts/run_lm_eval.py is the step).").parse_args()
