#!/usr/bin/env python
"""Train a LoRA adapter on templated chat text with TRL's SFTTrainer and PEFT.

Reads the templated train/eval JSON Lines written by apply_chat_template.py, and the settings: a YAML or
JSON file whose `lora` section holds PEFT LoraConfig fields and whose `training` section holds TRL SFTConfig
fields, passed to them as they are (a recipe file works, and so does the settings.json the workflow
writes). This script sets only what it owns: where checkpoints go, when they are saved, where the trackers
named by `training.report_to` write (--tracking-dir, offline: src/alpaca_lora/tracking.py), CPU or GPU.
With completion_only_loss (the recipes' choice) the loss counts the answer tokens only.

Writes the adapter folder, the log history (one row per logging or evaluation step: loss, learning rate,
grad norm, eval loss) as CSV, and a JSON summary (with every SFTConfig value used). Checkpoints go to
--checkpoint-dir every save_steps; when that folder holds a checkpoint of the same settings and data,
training resumes from it. After a successful run the checkpoints are removed (the adapter is the result).

Several processes (a recipe's `distributed` section; launched by `python -m alpaca_lora.distributed`, which
runs torchrun or srun) train data-parallel: every rank trains, rank 0 alone writes the outputs, the log
file and the checkpoint markers, and all ranks stop at the same step on SIGTERM.

On SIGTERM (what SLURM sends before a time limit with --signal, on scancel and on preemption; also `kill`)
training finishes its current step, saves a checkpoint and exits with status 143 without writing the outputs:
the next run resumes from that checkpoint.

Example (the Phi-3.5 recipe, on a GPU):
  python scripts/train_lora.py --model results/models/phi-3.5-mini-instruct --train train.jsonl \\
      --eval eval.jsonl --settings config/recipes/phi35-mini-alpaca-recipe.yaml --output-dir adapter \\
      --history history.csv --summary train_summary.json --checkpoint-dir checkpoints
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import shutil
import signal
import sys
import time
from pathlib import Path

from alpaca_lora import distributed, hardware, memory, tracking
from alpaca_lora.common import (
    StepError,
    add_log_argument,
    atomic_directory,
    atomic_path,
    canonical_json,
    load_yaml,
    loss_pair,
    read_json,
    read_jsonl,
    sha256_file,
    sha256_text,
    step,
    trusts_remote_code,
    write_json,
)
from alpaca_lora.experiments import TRAINING_MODEL_KEYS

log = logging.getLogger("train_lora")

COMPLETE_MARKER = "checkpoint-complete.txt"
# SFTConfig fields this script sets itself; a settings file may not (the recipe schema has no such keys).
OWNED_FIELDS = {
    "output_dir",
    "save_strategy",
    "save_total_limit",
    "include_num_input_tokens_seen",
    "dataloader_pin_memory",
    "disable_tqdm",
}
# From this many parameters on, training on a CPU takes days (Phi-3.5-mini has 3.8 billion): a recipe that
# asks for bf16 or packing there was written for a GPU, and stops unless it sets training.use_cpu.
CPU_SCALE_PARAMETERS = 1_000_000_000


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True, help="base model folder")
    parser.add_argument("--train", required=True, help="templated train JSON Lines")
    parser.add_argument("--eval", required=True, help="templated eval JSON Lines")
    parser.add_argument(
        "--settings", required=True, help="YAML/JSON with `lora` (LoraConfig) and `training` (SFTConfig)"
    )
    parser.add_argument("--output-dir", required=True, help="adapter folder to write")
    parser.add_argument("--history", required=True, help="CSV log history to write")
    parser.add_argument("--summary", required=True, help="JSON training summary to write")
    parser.add_argument("--checkpoint-dir", required=True, help="where checkpoints go (and resume from)")
    parser.add_argument(
        "--tracking-dir",
        help="folder to write, one subfolder per tracker training.report_to names "
        "(default: `tracking` beside --output-dir)",
    )
    add_log_argument(parser)
    return parser.parse_args(argv)


def read_settings(path: str) -> dict:
    """The `lora`, `training` and (optional) `resources` sections of a settings or recipe file."""
    settings = load_yaml(Path(path).read_text(encoding="utf-8"))
    missing = [key for key in ("lora", "training") if not isinstance(settings, dict) or key not in settings]
    if missing:
        raise SystemExit(f"{path}: no {' or '.join(missing)} section")
    owned = sorted(OWNED_FIELDS & set(settings["training"]))
    if owned:
        raise SystemExit(f"{path}: training.{owned[0]} is set by train_lora.py itself; remove it")
    if missing := tracking.missing(settings["training"].get("report_to", "none")):
        name, package = missing[0]
        raise SystemExit(f"{path}: training.report_to: {name} is not installed (pip install {package})")
    # model: from_pretrained's settings the workflow adds (a recipe's own model section describes the source)
    loading = settings.get("model", {})
    model = {key: loading[key] for key in TRAINING_MODEL_KEYS if key in loading}
    return {
        "lora": settings["lora"],
        "training": settings["training"],
        **({"model": model} if model else {}),
        "resources": settings.get("resources", {}),
    }


def load_split(path: str, eos_token: str | None):
    """Prompt/completion pairs (TRL scores the completion only when completion_only_loss is on)."""
    from datasets import Dataset

    rows = []
    for record in read_jsonl(path):
        prompt, completion = loss_pair(record, eos_token)
        rows.append({"prompt": prompt, "completion": completion})
    if not rows:
        raise StepError(f"{path}: no records")
    return Dataset.from_list(rows)


def settings_fingerprint(settings: dict, args: argparse.Namespace) -> str:
    """What a checkpoint must match to be resumed: the LoRA, training and model-loading settings as resolved
    (the micro-batch chosen for the memory budget included, not the budget) plus the content of the inputs."""
    return sha256_text(
        canonical_json(
            {
                **{part: value for part, value in settings.items() if part != "resources"},
                "train_sha256": sha256_file(args.train),
                "model_config_sha256": sha256_file(Path(args.model) / "config.json"),
                # Another world size splits the batch differently: its checkpoints are not resumed.
                **({"world_size": distributed.world()} if distributed.world() > 1 else {}),
            }
        )
    )


def resumable_checkpoint(checkpoint_dir: Path, fingerprint: str) -> str | None:
    """The last complete checkpoint of a run with the same settings and data.

    Checkpoints of other settings, and checkpoints a killed run left half-written (no completion marker),
    are removed.
    """
    marker = checkpoint_dir / "fingerprint.txt"
    if checkpoint_dir.is_dir() and not (marker.is_file() and marker.read_text().strip() == fingerprint):
        log.warning("Removing checkpoints of other settings or data in %s", checkpoint_dir)
        shutil.rmtree(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text(fingerprint + "\n")
    complete = []
    for folder in checkpoint_dir.glob("checkpoint-*"):
        if (folder / COMPLETE_MARKER).is_file():
            complete.append((int(folder.name.split("-")[-1]), folder))
        else:
            log.warning("Removing incomplete checkpoint %s (its run stopped while saving it)", folder)
            shutil.rmtree(folder)
    return str(max(complete)[1]) if complete else None


def checkpoint_marker_callback():
    from transformers import TrainerCallback

    class MarkCompleteCheckpoints(TrainerCallback):
        """Mark a checkpoint complete once the trainer has written all of it (on_save comes after)."""

        def on_save(self, args, state, control, **kwargs):
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            distributed.barrier()  # every rank has written its part (its random state, FSDP's shards)
            if distributed.is_main() and folder.is_dir():
                (folder / COMPLETE_MARKER).write_text(f"step {state.global_step}\n")

    return MarkCompleteCheckpoints()


class StopRequest:
    """Set by a SIGTERM handler; training saves a checkpoint and stops at the end of the current step."""

    def __init__(self) -> None:
        self.signal: int | None = None

    def __bool__(self) -> bool:
        return self.signal is not None

    def install(self, signum: int = signal.SIGTERM) -> None:
        def handler(received, frame):
            # Only set the flag: the trainer acts on it between steps (see save_and_stop_callback).
            self.signal = received

        signal.signal(signum, handler)

    @property
    def name(self) -> str:
        return signal.Signals(self.signal).name if self.signal else ""


def save_and_stop_callback(stop: StopRequest):
    from transformers import TrainerCallback

    class SaveAndStopOnSignal(TrainerCallback):
        """After a SIGTERM, checkpoint the step just finished and end training (the trainer saves first)."""

        def on_step_end(self, args, state, control, **kwargs):
            if distributed.any_rank(bool(stop)) and not control.should_training_stop:
                stop.signal = stop.signal or signal.SIGTERM  # a rank that got none stops with the others
                log.warning(
                    "%s received: saving a checkpoint at step %d, then stopping", stop.name, state.global_step
                )
                control.should_save = True
                control.should_training_stop = True

    return SaveAndStopOnSignal()


def progress_callback():
    from transformers import TrainerCallback

    class LogProgress(TrainerCallback):
        """Put the trainer's metrics into the step log, with a step count and throughput."""

        def on_train_begin(self, args, state, control, **kwargs):
            self.start = time.monotonic()

        def on_step_end(self, args, state, control, **kwargs):
            # Log the last step too, so the logged losses cover every step (see logged_train_loss).
            if state.global_step >= state.max_steps:
                control.should_log = True

        def on_log(self, args, state, control, logs=None, **kwargs):
            shown = ", ".join(
                f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}"
                for key, value in (logs or {}).items()
            )
            elapsed = time.monotonic() - self.start
            log.info("step %d/%d (%.0fs): %s", state.global_step, state.max_steps, elapsed, shown)

    return LogProgress()


def logged_train_loss(history: list[dict]) -> float:
    """Mean training loss over all steps, from the logged losses (each the mean of the steps since the last).

    Unlike the trainer's own `training_loss`, which covers only the steps run since the last resume, this is
    the same whether or not the run was interrupted: the log history is restored from the checkpoint.
    """
    rows = [(row["step"], row["loss"]) for row in history if "loss" in row]
    total, previous = 0.0, 0
    for at, loss in rows:
        total += loss * (at - previous)
        previous = at
    return total / previous if previous else float("nan")


def last_evaluation(state) -> dict | None:
    """The metrics of an evaluation the trainer already ran at its final step, to avoid a second pass."""
    for row in reversed(state.log_history):
        if "eval_loss" in row:
            return row if row["step"] == state.global_step else None
    return None


def write_history(path: str, history: list[dict]) -> None:
    preferred = ["step", "epoch", "loss", "eval_loss", "learning_rate", "grad_norm"]
    keys = {key for row in history for key in row}
    columns = [k for k in preferred if k in keys] + sorted(keys - set(preferred))
    with atomic_path(path) as temporary, open(temporary, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(history)


def has_accelerator() -> bool:
    import torch

    return torch.cuda.is_available() or torch.backends.mps.is_available()


def refuse_cpu_at_scale(training: dict, model: str) -> None:
    """Stop before loading a GPU-sized model on a machine without a GPU, unless the recipe says use_cpu."""
    source = Path(model) / "source.json"
    parameters = read_json(source).get("parameters", 0) if source.is_file() else 0
    gpu_settings = [key for key in ("bf16", "packing") if training.get(key)]
    if parameters < CPU_SCALE_PARAMETERS or not gpu_settings or training.get("use_cpu") or has_accelerator():
        return
    raise StepError(
        f"{model}: {parameters / 1e9:.1f} billion parameters with training.{' and '.join(gpu_settings)} on, "
        "and this machine has no GPU: training would take days on the CPU. Run it where there is a GPU "
        "(docs/slurm.md), or set training.use_cpu: true in the recipe to train on the CPU anyway."
    )


def check_machine(settings: dict) -> None:
    """What the settings need of this machine (a GPU, a package): the workflow checked it where it ran."""
    import torch

    try:
        hardware.check(settings, torch.cuda.device_count())
    except ValueError as error:
        raise StepError(str(error)) from None


def uses_cpu(training: dict) -> bool:
    """Without an accelerator, say so (the trainer then runs bf16 on the CPU instead of refusing it); the
    recipe's use_cpu: true trains on the CPU even where there is a GPU."""
    return bool(training.get("use_cpu")) or not has_accelerator()


def training_config(training: dict, checkpoint_dir: Path):
    """TRL's SFTConfig: the recipe's training section as it is, plus the fields this script owns."""
    import torch
    from trl import SFTConfig

    return SFTConfig(
        # The data order follows the seed unless the recipe sets data_seed.
        **{"data_seed": training["seed"], "report_to": "none", **training, "use_cpu": uses_cpu(training)},
        output_dir=str(checkpoint_dir),
        save_strategy="steps",
        save_total_limit=2,
        include_num_input_tokens_seen="non_padding",
        dataloader_pin_memory=torch.cuda.is_available(),
        disable_tqdm=False,
    )


def load_model(settings: dict, args: argparse.Namespace):
    import torch
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if settings["training"]["bf16"] else torch.float32
    loading = dict(settings.get("model", {}))  # attn_implementation; quantization: BitsAndBytesConfig (QLoRA)
    if "quantization" in loading:
        from transformers import BitsAndBytesConfig

        loading["quantization_config"] = BitsAndBytesConfig(**loading.pop("quantization"))
    trust = trusts_remote_code(args.model)
    return AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype, trust_remote_code=trust, **loading)


def fit_to_memory(settings: dict, args: argparse.Namespace):
    """Load the model and pick the micro-batch that fits the memory budget (on the CPU), before any data."""
    resources = settings["resources"]
    # Several processes would each probe and might choose differently: the batch split stays as written.
    single = distributed.world() == 1
    if not (resources.get("fit_micro_batch", True) and uses_cpu(settings["training"]) and single):
        log.info("Micro-batch as the recipe sets it (no fit: switched off, a GPU, or several processes)")
        return load_model(settings, args), None
    if not memory.can_measure():
        log.info("Micro-batch as the recipe sets it (no fit: this system gives no peak-memory reading)")
        return load_model(settings, args), None
    budget = resources.get("max_memory_gb") or memory.machine_memory_gb()
    memory.check_budget_above_weights(budget, args.model)
    model = load_model(settings, args)
    fit = memory.fit_micro_batch(model, settings["lora"], settings["training"], budget)
    log.info(
        "Memory budget %.1f GB: micro-batch %d x %d accumulation steps (effective batch %d) at length %d, "
        "estimated peak %.2f GB (probed: %.2f GB resident + %.2f GB per sequence)",
        *(fit.budget_gb, fit.micro_batch, fit.gradient_accumulation_steps, fit.effective_batch),
        *(fit.max_length, fit.estimated_peak_gb, fit.resident_gb, fit.per_sequence_gb),
    )
    settings["training"] = memory.apply(settings["training"], fit)
    return model, fit


def build_trainer(model, settings: dict, args: argparse.Namespace, checkpoint_dir: Path):
    from peft import LoraConfig
    from transformers import AutoTokenizer
    from trl import SFTTrainer

    tokenizer = AutoTokenizer.from_pretrained(args.model, trust_remote_code=trusts_remote_code(args.model))
    train_data = load_split(args.train, tokenizer.eos_token)
    eval_data = load_split(args.eval, tokenizer.eos_token)
    return SFTTrainer(
        model=model,
        args=training_config(settings["training"], checkpoint_dir),
        train_dataset=train_data,
        eval_dataset=eval_data,
        processing_class=tokenizer,
        peft_config=LoraConfig(task_type="CAUSAL_LM", **settings["lora"]),
    )


def exit_on_stop_request(stop: StopRequest, where: str) -> None:
    if stop:
        log.warning(
            "Stopped by %s %s; the next run resumes from the last complete checkpoint.", stop.name, where
        )
        sys.exit(128 + stop.signal)


def main(argv: list[str] | None = None) -> None:
    started = time.monotonic()  # the whole step: loading, training, evaluation, saving
    args = parse_args(argv)
    with step("train_lora", args.log_file if distributed.is_main() else None, libraries=True):
        stop = StopRequest()
        stop.install(signal.SIGTERM)
        settings = read_settings(args.settings)
        log.info("Settings: %s", canonical_json(settings))
        refuse_cpu_at_scale(settings["training"], args.model)
        check_machine(settings)
        model, fit = fit_to_memory(settings, args)
        checkpoint_dir = Path(args.checkpoint_dir)
        fingerprint = settings_fingerprint(settings, args)
        training = settings["training"]
        trackers = tracking.named(training.get("report_to", "none"))
        with distributed.start(training.get("ddp_timeout"), uses_cpu(training)).main_process_first():
            resume_from = resumable_checkpoint(checkpoint_dir, fingerprint)  # rank 0 cleans up first
            tracking_dir = start_tracking(trackers, checkpoint_dir, resume_from)
        trainer = build_trainer(model, settings, args, checkpoint_dir)
        for callback in (progress_callback(), save_and_stop_callback(stop), checkpoint_marker_callback()):
            trainer.add_callback(callback)
        if "dvclive" in trackers:
            from transformers.integrations import DVCLiveCallback

            trainer.remove_callback(DVCLiveCallback)
            trainer.add_callback(tracking.dvclive_callback(tracking_dir, resume=bool(resume_from)))
        exit_on_stop_request(stop, "before training started")
        trainable, total = trainer.model.get_nb_trainable_parameters()
        log.info("Trainable parameters: %d of %d (%.2f%%)", trainable, total, 100 * trainable / total)
        if resume_from:
            log.info("Resuming from checkpoint %s", resume_from)
        training_started = time.monotonic()
        trainer.train(resume_from_checkpoint=resume_from)
        train_seconds = (
            time.monotonic() - training_started
        )  # the training loop only: tokens/s is measured over it
        if trainer.state.global_step < trainer.state.max_steps:
            exit_on_stop_request(stop, f"at step {trainer.state.global_step} of {trainer.state.max_steps}")
        final_eval = last_evaluation(trainer.state) or trainer.evaluate()
        for adapter_config in trainer.model.peft_config.values():
            # "all-linear" resolves to a set, saved in hash-seed order; sorted, the adapter is repeatable.
            if isinstance(adapter_config.target_modules, set):
                adapter_config.target_modules = sorted(adapter_config.target_modules)
        with distributed.main_output(args.output_dir, atomic_directory) as folder:
            trainer.save_model(str(folder))  # every rank: FSDP gathers the weights; rank 0 writes them
        if not distributed.is_main():
            return
        if args.tracking_dir or trackers:  # the workflow always names the folder (an output, maybe empty)
            finish_tracking(
                trackers, tracking_dir, args.tracking_dir or Path(args.output_dir).parent / "tracking"
            )
        history = trainer.state.log_history
        write_history(args.history, history)
        tokens = trainer.state.num_input_tokens_seen  # non-padding tokens, resumed runs included
        write_json(
            args.summary,
            {
                "settings_fingerprint": fingerprint,
                "resumed_from": resume_from,
                "global_step": trainer.state.global_step,
                "world_size": distributed.world(),
                "train_loss": logged_train_loss(history),
                "final_eval_loss": final_eval.get("eval_loss"),
                "train_runtime_s": round(train_seconds, 2),
                "step_runtime_s": round(time.monotonic() - started, 2),
                "train_tokens": tokens,
                "train_sequences": len(trainer.train_dataset),
                "trainable_parameters": trainable,
                "total_parameters": total,
                "base_dtype": str(frozen_dtype(trainer.model)),
                "micro_batch": trainer.args.per_device_train_batch_size,
                "gradient_accumulation_steps": trainer.args.gradient_accumulation_steps,
                "memory_fit": fit.record() if fit else None,
                "sft_config": sft_config_record(trainer.args),
            },
        )
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
        log.info("Saved adapter to %s (%d steps)", args.output_dir, trainer.state.global_step)


def start_tracking(trackers: list[str], checkpoint_dir: Path, resume_from: str | None) -> Path:
    """The trackers' folder during training: beside the checkpoints, so that a resumed run continues it."""
    folder = checkpoint_dir / "tracking"
    if not resume_from:
        shutil.rmtree(folder, ignore_errors=True)  # a run stopped before its first checkpoint
    folder.mkdir(parents=True, exist_ok=True)
    tracking.use_offline_environment(trackers, folder)
    if trackers:
        log.info("Tracking with %s in %s (offline)", ", ".join(trackers), folder)
    return folder


def finish_tracking(trackers: list[str], folder: Path, output: str | Path) -> None:
    """Close what the trainer leaves open (a W&B run), then move the trackers' files to the output folder."""
    if "wandb" in trackers:
        import wandb

        wandb.finish()
    with atomic_directory(output) as target:
        shutil.copytree(folder, target, dirs_exist_ok=True)


def frozen_dtype(model):
    """The dtype the base model's (frozen) weights were trained in: bf16 shows here when it took effect."""
    return next(parameter.dtype for parameter in model.parameters() if not parameter.requires_grad)


def sft_config_record(config) -> dict:
    """Every SFTConfig value the run used (not the paths of this machine: the manifest has them)."""
    values = json.loads(config.to_json_string())
    return {key: value for key, value in sorted(values.items()) if key not in ("output_dir", "logging_dir")}


if __name__ == "__main__":
    main()
