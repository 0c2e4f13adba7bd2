"""Data-parallel training from a recipe's `distributed` section: checks, settings, SLURM resources, launch.

A recipe says how many processes train (`processes_per_node` x `nodes`) and how they share the model
(`strategy`). The recipe's batch stays the batch of one optimizer step whatever the world size: each process
gets an equal share (see `training_overrides`), so the same recipe on 1 or 8 GPUs is the same experiment.

Launch (the train rule runs `python -m alpaca_lora.distributed ... -- scripts/train_lora.py ...`):
- one machine, world size 1: the script itself;
- one machine, several processes: `torchrun --standalone`. torchrun ships with the pinned torch, the Trainer
  takes FSDP and DeepSpeed from its own arguments (no accelerate config file to generate), and its agent
  ends every worker when one fails;
- inside a SLURM job: `srun`, one task per process (SLURM places the tasks and GPUs, forwards the time-limit
  SIGTERM to every rank, and --kill-on-bad-exit ends the step when one rank fails); each task maps SLURM's
  variables to torch's (RANK, LOCAL_RANK, WORLD_SIZE) and meets the others at the first node of the
  allocation (MASTER_ADDR), within the rendezvous timeout.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

# strategy -> (package it needs, SFTConfig fields it sets). LoRA trains few parameters: DDP is the default;
# FSDP and DeepSpeed ZeRO-3 shard the frozen base model too, for models that do not fit one GPU.
STRATEGIES: dict[str, tuple[str | None, dict]] = {
    "ddp": (None, {}),
    "fsdp": (
        None,
        {
            "fsdp": "full_shard auto_wrap",
            # PEFT mixes frozen and trainable parameters in one module: FSDP must keep the original ones.
            "fsdp_config": {"use_orig_params": True, "cpu_ram_efficient_loading": True},
        },
    ),
    **{
        f"deepspeed_zero{stage}": (
            "deepspeed",
            {
                "deepspeed": {
                    "zero_optimization": {"stage": stage},
                    "train_micro_batch_size_per_gpu": "auto",
                    "gradient_accumulation_steps": "auto",
                    "bf16": {"enabled": "auto"},
                }
            },
        )
        for stage in (2, 3)
    },
}
# Each rank of a SLURM job finds the others here: a port derived from the job id, so that two jobs sharing a
# node do not collide.
PORT_BASE, PORT_SPAN = 20000, 20000


def world_size(section: dict | None) -> int:
    section = section or {}
    return int(section.get("nodes", 1)) * int(section.get("processes_per_node", 1))


def check(recipe: dict, local_gpus: int | None) -> None:
    """Stop before any job on what cannot run; `local_gpus`: the GPUs of this machine for a local run,
    None when the jobs go to a cluster. The message names the setting (ValueError)."""
    section = recipe.get("distributed") or {}
    world = world_size(section)
    strategy = section.get("strategy", "ddp")
    package = STRATEGIES[strategy][0]
    if package and importlib.util.find_spec(package) is None:
        raise ValueError(
            f"distributed.strategy: {strategy} needs the {package} package, which is not installed "
            f"(pip install {package}), or use ddp or fsdp"
        )
    if world == 1:
        return
    training = recipe["training"]
    batch = training["per_device_train_batch_size"] * training["gradient_accumulation_steps"]
    if batch % world:
        raise ValueError(
            f"distributed: {world} processes do not divide the batch (training.per_device_train_batch_size "
            f"{training['per_device_train_batch_size']} x gradient_accumulation_steps "
            f"{training['gradient_accumulation_steps']} = {batch}); make it a multiple of {world}"
        )
    if local_gpus is None:
        return
    if section.get("nodes", 1) > 1:
        raise ValueError(
            f"distributed.nodes: {section['nodes']} nodes need a cluster: run with --profile profiles/slurm"
        )
    if not training.get("use_cpu") and local_gpus < world:
        raise ValueError(
            f"distributed.processes_per_node: {world} processes, but this machine has {local_gpus} GPUs; "
            "ask for at most that many, or set training.use_cpu: true to train on the CPU (gloo)"
        )


def training_overrides(recipe: dict) -> dict:
    """SFTConfig fields the world size decides: each process's share of the batch, the collective timeout,
    the strategy's fields. Nothing for one process, so that such recipes keep their settings."""
    section = recipe.get("distributed") or {}
    world = world_size(section)
    if world == 1:
        return {}
    training = recipe["training"]
    per_device, accumulation = (
        training["per_device_train_batch_size"],
        training["gradient_accumulation_steps"],
    )
    # Split the accumulation first (same memory per process), then the per-device batch.
    if accumulation % world == 0:
        accumulation //= world
    elif per_device % world == 0:
        per_device //= world
    else:
        per_device, accumulation = per_device * accumulation // world, 1
    return {
        "per_device_train_batch_size": per_device,
        "gradient_accumulation_steps": accumulation,
        # The rendezvous and every collective: a rank that never arrives ends the run after this long.
        "ddp_timeout": section.get("rendezvous_timeout_s", 300),
        **STRATEGIES[section.get("strategy", "ddp")][1],
    }


def slurm_resources(recipe: dict) -> dict:
    """The train job's SLURM resources (snakemake-executor-plugin-slurm): nodes, one task per process, the
    GPUs, and `mpi`, which stops the plugin wrapping the job in `srun -n1`: the launcher runs srun itself."""
    section = recipe.get("distributed") or {}
    nodes, per_node = section.get("nodes", 1), section.get("processes_per_node", 1)
    gpu = 0 if recipe["training"].get("use_cpu") else nodes * per_node
    # The plugin reads `tasks` as tasks per GPU on a GPU job, so GPU jobs give tasks_per_node (it must be
    # above 1 with mpi: one process per node needs no task setting, SLURM's default is one per node).
    if gpu:
        tasks = {"tasks_per_node": per_node} if per_node > 1 else {}
    else:
        tasks = {"tasks": nodes * per_node}
    return {"nodes": nodes, "gpu": gpu, "mpi": "srun" if tasks.get("tasks", per_node) > 1 else "", **tasks}


def launch_flags(recipe: dict) -> str:
    section = recipe.get("distributed") or {}
    return shlex.join(
        [
            f"--nodes={section.get('nodes', 1)}",
            f"--processes-per-node={section.get('processes_per_node', 1)}",
            f"--rendezvous-timeout-s={section.get('rendezvous_timeout_s', 300)}",
        ]
    )


# ---- inside the training processes ------------------------------------------------------------------------


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    """Rank 0 (or the only process) writes the outputs, the log file and the summary."""
    return rank() == 0


def world() -> int:
    """The number of training processes (torchrun and the SLURM launcher set WORLD_SIZE)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


class Single:
    """The state of a run of one process: nothing to wait for."""

    def main_process_first(self):
        return contextlib.nullcontext()


def start(timeout_s: float | None, cpu: bool):
    """Join the other processes and return accelerate's state, which the Trainer then reuses (`cpu` as the
    Trainer will ask: gloo on the CPU). One process joins nothing.

    A rank that cannot reach the rendezvous stops after the timeout with the setting named, not a traceback.
    """
    if world() == 1:
        return Single()
    from accelerate import PartialState

    kwargs = {"timeout": timedelta(seconds=timeout_s)} if timeout_s else {}
    try:
        return PartialState(cpu=cpu, **kwargs)
    except (RuntimeError, TimeoutError) as error:  # torch's DistNetworkError/DistStoreError are RuntimeErrors
        where = f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}"
        raise SystemExit(
            f"rank {rank()}: could not join the other processes at {where} within {timeout_s} s "
            f"(distributed.rendezvous_timeout_s): {' '.join(str(error).split())[:300]}"
        ) from None


@contextlib.contextmanager
def main_output(path: str, atomic_directory) -> Iterator[Path]:
    """Rank 0: `atomic_directory(path)`. Other ranks: a folder name they take part in saving to but never
    write (the Trainer writes on rank 0 only)."""
    if is_main():
        with atomic_directory(path) as folder:
            yield folder
    else:
        yield Path(f"{path}.rank{rank()}")


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def any_rank(flag: bool) -> bool:
    """True on every rank when it is true on one (all ranks must stop at the same step, or they deadlock)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return flag
    value = torch.tensor([int(flag)], device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


# ---- the launcher -----------------------------------------------------------------------------------------


def slurm_job() -> dict[str, str]:
    """The allocation's fields (`scontrol show job`): the job step Snakemake runs in has lost SLURM_* but
    the job id."""
    text = subprocess.run(
        ["scontrol", "show", "job", "--oneliner", os.environ["SLURM_JOB_ID"]],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return dict(re.findall(r"(\S+?)=(\S*)", text))


def first_node(nodelist: str) -> str:
    """The address of the allocation's first node (its NodeAddr, which SLURM itself uses to reach it)."""
    hosts = subprocess.run(
        ["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, check=True
    ).stdout.split()
    node = subprocess.run(
        ["scontrol", "show", "node", "--oneliner", hosts[0]], capture_output=True, text=True, check=True
    ).stdout
    found = re.search(r"NodeAddr=(\S+)", node)
    return found.group(1) if found else hosts[0]


def command(args: argparse.Namespace, program: list[str]) -> tuple[list[str], dict[str, str]]:
    """What to run, and the environment to add: see the module's description."""
    world = args.nodes * args.processes_per_node
    python = [sys.executable]
    if "SLURM_JOB_ID" in os.environ:
        job = slurm_job()
        env = {
            "MASTER_ADDR": first_node(job["NodeList"]),
            "MASTER_PORT": str(PORT_BASE + int(os.environ["SLURM_JOB_ID"]) % PORT_SPAN),
        }
        srun = [
            "srun",
            f"--nodes={args.nodes}",
            f"--ntasks={world}",
            f"--ntasks-per-node={args.processes_per_node}",
            "--kill-on-bad-exit=1",
        ]
        if job.get("CPUs/Task", "").isdigit():
            srun.append(f"--cpus-per-task={job['CPUs/Task']}")  # srun no longer inherits it from sbatch
        task = [*python, "-m", "alpaca_lora.distributed", "--task", "--"] if world > 1 else python
        return [*srun, *task, *program], env
    if world == 1:
        return [*python, *program], {}
    if args.nodes > 1:
        raise SystemExit(f"distributed.nodes: {args.nodes} nodes need a SLURM allocation (profiles/slurm)")
    torchrun = [*python, "-m", "torch.distributed.run", "--standalone", "--max-restarts=0"]
    return [*torchrun, f"--nproc-per-node={args.processes_per_node}", *program], {}


def task_environment() -> dict[str, str]:
    """torch's variables from SLURM's, in one srun task."""
    return {
        "RANK": os.environ["SLURM_PROCID"],
        "LOCAL_RANK": os.environ["SLURM_LOCALID"],
        "WORLD_SIZE": os.environ["SLURM_NTASKS"],
        "LOCAL_WORLD_SIZE": os.environ.get("SLURM_NTASKS_PER_NODE", "1").split("(")[0],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--processes-per-node", type=int, default=1)
    parser.add_argument("--rendezvous-timeout-s", type=int, default=300)
    parser.add_argument("--task", action="store_true", help="(internal) one srun task: map SLURM's variables")
    parser.add_argument("program", nargs=argparse.REMAINDER, help="-- script.py and its arguments")
    args = parser.parse_args(argv)
    program = args.program[1:] if args.program[:1] == ["--"] else args.program
    if not program:
        parser.error("no script to run (-- script.py ...)")
    if args.task:
        argv_run, env = [sys.executable, *program], task_environment()
    else:
        argv_run, env = command(args, program)
        if argv_run[0] != sys.executable:
            print(f"Launching: {shlex.join(argv_run)}", file=sys.stderr, flush=True)
    # exec: the launcher becomes the job, so SLURM's and Snakemake's signals reach it directly.
    os.execvpe(argv_run[0], argv_run, {**os.environ, **env})


if __name__ == "__main__":
    main()
