"""Training memory on the CPU: measure what a training step needs, pick a micro-batch that fits a budget.

The training step (scripts/train_lora.py) calls `fit_micro_batch` after loading the base model and before
loading any data. It runs one forward and backward pass of one sequence of random token ids at the recipe's
max_length, as LoRA training runs it (the recipe's adapter added for the pass, then removed), and reads the
process's resident set before and its peak during the pass (Linux: VmHWM, reset through
/proc/self/clear_refs). Activations grow with the micro-batch, so the estimate at micro-batch m is
resident + m x (what one sequence added). The largest micro-batch that divides the effective batch
(per_device_train_batch_size x gradient_accumulation_steps) and whose estimate fits the budget is used, and
gradient accumulation makes up the rest: the optimizer sees the same batches (the trainer groups by length
over the effective batch, and TRL divides every micro-batch's summed loss by the token count of the whole
effective batch), so the losses change by float rounding only.

The probe covers the step's largest tensors (what the backward pass keeps: the adapter's inputs, attention
and MLP activations). TRL's SFTTrainer scores the answer tokens through a fused, chunked LM head that never
builds the full (batch x length x vocabulary) logits, so they are not probed. The probe is conservative:
every probed sequence is max_length tokens long, while a real micro-batch is padded to its longest record
only. MARGIN covers the rest of the trainer (the adapter's optimizer state, the data, the evaluation pass).
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from alpaca_lora.common import StepError, module_help

log = logging.getLogger(__name__)

GB = 1e9  # decimal gigabytes, as `free -g`-style laptop sizes and /usr/bin/time's kilobytes read
# The trainer around the probed step: optimizer state, data, evaluation, allocator slack. The estimate is on
# the safe side already (the probe's one-time costs count as per-sequence ones): on the default (SmolLM2-135M,
# 8 x 512) it was 17.7 GB without the margin, against a measured peak of 13.2 GB for that training step.
MARGIN = 1.10
PROC_STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")


@dataclass(frozen=True)
class Fit:
    """The micro-batch chosen for a memory budget, and the numbers it was chosen from."""

    budget_gb: float
    effective_batch: int
    micro_batch: int
    gradient_accumulation_steps: int
    max_length: int
    estimated_peak_gb: float  # at the chosen micro-batch
    resident_gb: float  # the process before the probed step: runtime and weights
    per_sequence_gb: float  # what one sequence of max_length added to the probed step's peak

    def record(self) -> dict:
        return asdict(self)


def machine_memory_gb() -> float:
    """The machine's physical memory: the default budget."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GB


def can_measure() -> bool:
    """Whether this system lets a process reset and read its own peak resident set (Linux >= 4.0)."""
    return PROC_STATUS.is_file() and os.access(CLEAR_REFS, os.W_OK)


def peak_rss_bytes() -> int:
    """The process's peak resident set since the last reset (VmHWM, in kB in /proc/self/status)."""
    for line in PROC_STATUS.read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise OSError(f"{PROC_STATUS}: no VmHWM line")


def reset_peak_rss() -> None:
    CLEAR_REFS.write_text("5")  # "5": reset the peak resident set to the current one (proc(5))


def weights_gb(model_dir: str | Path) -> float:
    """What the model's weight files take: memory the run needs before anything else."""
    files = [*Path(model_dir).glob("*.safetensors"), *Path(model_dir).glob("*.bin")]
    return sum(file.stat().st_size for file in files) / GB


def check_budget_above_weights(budget_gb: float, model_dir: str | Path) -> None:
    weights = weights_gb(model_dir)
    if budget_gb <= weights:
        raise StepError(
            f"resources.max_memory_gb {budget_gb:g} is below the model's size ({weights:.2f} GB of weights "
            f"in {model_dir}): raise resources.max_memory_gb, or use a smaller model"
        )


def probe_step(model, lora: dict, micro_batch: int, length: int) -> tuple[int, int]:
    """Resident bytes before, and peak during, one forward and backward pass at (micro_batch, length), as LoRA
    trains it: the recipe's adapter is added for the pass (its inputs are what the backward pass keeps) and
    removed after."""
    import torch
    from peft import LoraConfig, get_peft_model

    vocabulary = model.config.get_text_config().vocab_size
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(vocabulary, (micro_batch, length), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[0, -1] = 0  # a padded batch, as training sees: the attention mask is materialised
    flags = [parameter.requires_grad for parameter in model.parameters()]
    was_training = model.training
    # The probe's adapter init and dropout draw random numbers: training's must not depend on the probe.
    with torch.random.fork_rng():
        probed = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", **lora))
        probed.train()
        reset_peak_rss()
        before = peak_rss_bytes()
        try:
            backbone = getattr(model, model.base_model_prefix)
            hidden = backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)[0]
            hidden.float().square().mean().backward()
            del hidden
            return before, peak_rss_bytes()
        finally:
            probed.unload()  # the model's own layers back in place
            model.train(was_training)
            for parameter, flag in zip(model.parameters(), flags, strict=True):
                parameter.requires_grad_(flag)


def estimate(resident_gb: float, per_sequence_gb: float, micro_batch: int) -> float:
    """Peak at a micro-batch: what the process holds plus each sequence's share, with the trainer's margin."""
    return (resident_gb + micro_batch * per_sequence_gb) * MARGIN


def setting(training: dict, key: str):
    """A training setting, or TRL's default when the settings leave it out."""
    from trl import SFTConfig

    return training[key] if key in training else SFTConfig.__dataclass_fields__[key].default


def fit_micro_batch(model, lora: dict, training: dict, budget_gb: float) -> Fit:
    """The largest micro-batch dividing the effective batch whose estimated peak fits the budget."""
    effective = setting(training, "per_device_train_batch_size") * setting(
        training, "gradient_accumulation_steps"
    )
    length = setting(training, "max_length")
    before, peak = probe_step(model, lora, 1, length)
    resident, per_sequence = before / GB, (peak - before) / GB
    candidates = [size for size in range(effective, 0, -1) if effective % size == 0]
    fitting = [size for size in candidates if estimate(resident, per_sequence, size) <= budget_gb]
    if not fitting:
        raise StepError(
            f"one training sequence of training.max_length {length} needs about "
            f"{estimate(resident, per_sequence, 1):.2f} GB (micro-batch 1), more than "
            f"resources.max_memory_gb {budget_gb:g}: lower training.max_length or raise "
            "resources.max_memory_gb"
        )
    size = fitting[0]
    return Fit(
        budget_gb=round(budget_gb, 2),
        effective_batch=effective,
        micro_batch=size,
        gradient_accumulation_steps=effective // size,
        max_length=length,
        estimated_peak_gb=round(estimate(resident, per_sequence, size), 2),
        resident_gb=round(resident, 3),
        per_sequence_gb=round(per_sequence, 3),
    )


def apply(training: dict, fit: Fit) -> dict:
    """The training settings with the chosen micro-batch and accumulation (the same effective batch)."""
    return {
        **training,
        "per_device_train_batch_size": fit.micro_batch,
        "gradient_accumulation_steps": fit.gradient_accumulation_steps,
    }


if __name__ == "__main__":
    module_help(__doc__ + "\nA library for scripts/train_lora.py: nothing to run.").parse_args()
