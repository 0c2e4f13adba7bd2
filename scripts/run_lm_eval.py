#!/usr/bin/env python
"""Evaluate a model (the base model, or base + LoRA adapter) on lm-evaluation-harness tasks.

Runs EleutherAI's lm-eval (`lm_eval.simple_evaluate`, model `hf`: `pretrained=` the base model folder,
`peft=` the adapter) on the tasks named with --task: lm-eval's own (mmlu, gsm8k, arc_challenge, ...), tasks
under --include-path, and the project's `alpaca_heldout_choice`, which this step builds from the eval split
(--eval) into --tasks-dir (src/alpaca_lora/lm_harness.py says how). Before the model is loaded, every task
is checked: an unknown name, or a task whose dataset is not in the Hugging Face cache while the Hub is
offline (HF_HUB_OFFLINE=1 / HF_DATASETS_OFFLINE=1), stops the step with one line naming the task.

Writes --results (JSON): per task and group its metrics with lm-eval's standard errors, the number of
documents scored, the shots, the task version, and the settings and lm-eval version used.

Example:
  python scripts/run_lm_eval.py --model results/models/smollm2-135m-instruct \\
      --adapter results/exp/train/adapter --eval results/data/d/k/seed42-eval32/eval.jsonl \\
      --task alpaca_heldout_choice --task arc_challenge --num-fewshot 0 --limit 100 \\
      --tasks-dir results/exp/eval/tuned/lm_eval_tasks --results results/exp/eval/tuned/lm_eval.json
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import shutil
import sys
from importlib.metadata import version

from alpaca_lora.common import StepError, add_log_argument, sha256_file, step, trusts_remote_code, write_json
from alpaca_lora.lm_harness import (
    LOCAL_TASK,
    build_local_task,
    known_tasks,
    summarized,
    task_manager,
    unknown_tasks,
)

log = logging.getLogger("run_lm_eval")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True, help="base model folder")
    parser.add_argument("--adapter", help="LoRA adapter folder; without it the base model is evaluated")
    parser.add_argument("--eval", required=True, help=f"eval split (messages JSON Lines), for {LOCAL_TASK}")
    parser.add_argument(
        "--task", action="append", required=True, help="lm-eval task, group or tag (repeatable)"
    )
    parser.add_argument(
        "--include-path", action="append", default=[], help="folder of own lm-eval task YAMLs"
    )
    parser.add_argument("--num-fewshot", type=int, help="few-shot examples; default: each task's own")
    parser.add_argument("--limit", type=int, help="at most this many documents per task; default: all")
    parser.add_argument(
        "--apply-chat-template",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="render prompts with the model's chat template (default: %(default)s)",
    )
    parser.add_argument("--batch-size", type=int, default=8, help="requests per forward pass")
    parser.add_argument(
        "--seed", type=int, default=42, help="lm-eval's random, numpy, torch and few-shot seed"
    )
    parser.add_argument("--tasks-dir", required=True, help=f"folder to write {LOCAL_TASK} into")
    parser.add_argument("--results", required=True, help="results JSON to write")
    add_log_argument(parser)
    return parser.parse_args(argv)


def offline() -> bool:
    return any(os.environ.get(v, "0") not in ("", "0") for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def load_tasks(manager, names: list[str]) -> list:
    """Every named task built, its dataset loaded, before any model: the Task or Group objects, in order.

    A dataset missing offline stops here, naming the task and how to fill the cache.
    """
    loaded = []
    for name in names:
        try:
            found = manager.load(name)
        except Exception as error:  # datasets raises several kinds (ConnectionError, FileNotFoundError...)
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            unreachable = isinstance(error, ConnectionError) or "Offline" in first or "Hub" in first
            if not (offline() and unreachable):
                raise StepError(f"lm-eval task {name}: its dataset could not be loaded: {first}") from error
            command = shlex.join([os.path.basename(sys.executable), *sys.argv])
            raise StepError(
                f"lm-eval task {name}: its dataset is not in the Hugging Face cache and the Hub is offline "
                f"({first}); fill the cache once with Hub access: HF_HUB_OFFLINE=0 HF_DATASETS_OFFLINE=0 "
                f"{command} (or `snakemake` with the same two variables), then run offline again"
            ) from error
        if name in found["groups"]:
            loaded.append(found["groups"][name])
        else:  # a task, or a tag: its tasks
            loaded.extend(found["tasks"].values())
    return loaded


def evaluate(args: argparse.Namespace, manager, tasks: list) -> dict:
    import lm_eval
    import torch

    model_args = {"pretrained": args.model, "trust_remote_code": trusts_remote_code(args.model)}
    if args.adapter:
        model_args["peft"] = args.adapter
    return lm_eval.simple_evaluate(
        model="hf",
        model_args=model_args,
        tasks=tasks,
        task_manager=manager,  # without it lm-eval indexes every task again
        num_fewshot=args.num_fewshot,
        limit=args.limit,
        batch_size=args.batch_size,
        device="cuda" if torch.cuda.is_available() else "cpu",
        apply_chat_template=args.apply_chat_template,
        log_samples=False,
        random_seed=args.seed,
        numpy_random_seed=args.seed,
        torch_random_seed=args.seed,
        fewshot_random_seed=args.seed,
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with step("run_lm_eval", args.log_file):
        unknown = unknown_tasks(args.task, known_tasks(args.include_path))
        if unknown:
            raise StepError(f"lm-eval knows no task {', '.join(unknown)} (`lm_eval ls tasks` lists them)")
        try:
            os.makedirs(args.tasks_dir, exist_ok=True)  # an output even when no local task is asked for
            if LOCAL_TASK in args.task:
                build_local_task(args.eval, args.tasks_dir, args.seed)
            # lm-eval's own tasks are indexed only when asked for (it reads thousands of YAML files).
            local = known_tasks([*args.include_path, args.tasks_dir], builtin=False)
            builtin = any(task not in local for task in args.task)
            manager = task_manager([*args.include_path, args.tasks_dir], include_defaults=builtin)
            tasks = load_tasks(manager, args.task)
            log.info(
                "Evaluating the %s model on %s", "tuned" if args.adapter else "base", ", ".join(args.task)
            )
            results = evaluate(args, manager, tasks)
        except BaseException:
            shutil.rmtree(args.tasks_dir, ignore_errors=True)  # no task folder from a failed run
            raise
        write_json(
            args.results,
            {
                "which": "tuned" if args.adapter else "base",
                "model": args.model,
                "adapter": args.adapter,
                "eval_file": args.eval,
                "eval_sha256": sha256_file(args.eval),
                "lm_eval_version": version("lm-eval"),
                "settings": {
                    "tasks": args.task,
                    "num_fewshot": args.num_fewshot,
                    "limit": args.limit,
                    "apply_chat_template": args.apply_chat_template,
                    "batch_size": args.batch_size,
                    "seed": args.seed,
                },
                "model_parameters": results["config"].get("model_num_parameters"),
                "tasks": summarized(results),
            },
        )
        log.info("Wrote %s", args.results)


if __name__ == "__main__":
    main()
