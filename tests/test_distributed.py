"""Data-parallel training on the CPU: 2 gloo processes against 1, resume, a failed rank, the workflow.

The launcher is the one the train rule runs (`python -m alpaca_lora.distributed`, here torchrun on one
machine); the settings of the 2-process run are the workflow's own (distributed.training_overrides).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from alpaca_lora import distributed
from alpaca_lora.testing import build_tiny_model, make_workdir, snakemake, tiny_recipe
from conftest import SAMPLE_DATA, SCRIPTS
from test_train_and_evaluate import evaluate, read_history, templated_splits, train_arguments, train_settings

# Stated tolerance: 2 processes of 4 records against 1 of 8 sum the same gradients in another order (gloo's
# all-reduce, then the mean), so float32 rounding differs; the losses agree to this relative difference.
LOSS_TOLERANCE = 1e-4
TWO = {"processes_per_node": 2, "rendezvous_timeout_s": 60}
# Dropout off: each rank draws its own dropout masks, which no 1-process run can reproduce. Random order:
# group_by_length groups by the per-process batch, which differs by design.
SETTINGS = train_settings(
    {"lora_dropout": 0.0},
    per_device_train_batch_size=8,
    gradient_accumulation_steps=1,
    train_sampling_strategy="random",
    max_steps=6,
    save_steps=2,
    use_cpu=True,
)
RUN_TIMEOUT_S = 600


def settings_for(section: dict | None) -> dict:
    """The settings the workflow writes for a recipe with this distributed section."""
    recipe = {**SETTINGS, "distributed": section} if section else SETTINGS
    return {**SETTINGS, "training": {**SETTINGS["training"], **distributed.training_overrides(recipe)}}


def launcher(processes: int, arguments: list[str]) -> list[str]:
    return [
        sys.executable,
        "-m",
        "alpaca_lora.distributed",
        f"--processes-per-node={processes}",
        "--",
        str(SCRIPTS / "train_lora.py"),
        *arguments,
    ]


def train(
    folder: Path, model: Path, splits: dict, processes: int, *extra: str
) -> subprocess.CompletedProcess:
    section = {**TWO, "processes_per_node": processes} if processes > 1 else None
    arguments = train_arguments(folder, model, splits, settings_for(section), *extra)
    result = subprocess.run(
        launcher(processes, arguments), capture_output=True, text=True, timeout=RUN_TIMEOUT_S
    )
    assert result.returncode == 0, result.stderr[-6000:]
    return result


def losses(folder: Path) -> list[float]:
    return [float(row["loss"]) for row in read_history(folder / "history.csv") if row["loss"]]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, small_alpaca) -> dict:
    folder = tmp_path_factory.mktemp("distributed")
    model = build_tiny_model(folder / "model", SAMPLE_DATA, "llama", hidden_size=64)
    splits = templated_splits(folder, model, small_alpaca)
    started = {}
    for processes in (1, 2):
        begin = time.monotonic()
        train(
            folder / f"p{processes}",
            model,
            splits,
            processes,
            "--log-file",
            str(folder / f"p{processes}.log"),
        )
        started[processes] = time.monotonic() - begin
    return {"folder": folder, "model": model, "splits": splits, "seconds": started}


def test_two_gloo_processes_train_what_one_process_trains(runs):
    one, two = (runs["folder"] / f"p{n}" for n in (1, 2))
    summaries = [json.loads((folder / "summary.json").read_text()) for folder in (one, two)]
    assert [s["world_size"] for s in summaries] == [1, 2]
    # Same effective batch: 8 records a step, as 1 x 8 and as 2 x 4.
    assert summaries[1]["sft_config"]["per_device_train_batch_size"] == 4
    assert summaries[0]["global_step"] == summaries[1]["global_step"] == 6
    assert summaries[0]["train_tokens"] == summaries[1]["train_tokens"]
    first, second = losses(one), losses(two)
    assert len(first) == len(second) == 6
    for step, (a, b) in enumerate(zip(first, second, strict=True), start=1):
        assert math.isclose(a, b, rel_tol=LOSS_TOLERANCE), (step, a, b)
    assert math.isclose(
        summaries[0]["final_eval_loss"], summaries[1]["final_eval_loss"], rel_tol=LOSS_TOLERANCE
    )
    print("losses 1 process:", first, "\nlosses 2 processes:", second)
    for folder, summary in zip((one, two), summaries, strict=True):
        print(folder.name, "tokens/s", summary["train_tokens"] / summary["train_runtime_s"])


def test_only_rank_0_writes_and_the_adapter_evaluates(runs):
    two = runs["folder"] / "p2"
    leftovers = sorted(path.name for path in two.iterdir())
    assert leftovers == ["adapter", "history.csv", "settings.json", "summary.json"], leftovers
    log = (runs["folder"] / "p2.log").read_text()
    assert log.count("Saved adapter to") == 1  # one process logs to the file
    metrics, _ = evaluate(
        runs["folder"] / "eval2", runs["model"], runs["splits"]["eval"], "--adapter", str(two / "adapter")
    )
    summary = json.loads((two / "summary.json").read_text())
    assert math.isclose(metrics["eval_loss"], summary["final_eval_loss"], rel_tol=1e-3)


def workers(launcher_pid: int) -> list[int]:
    """The training processes torchrun started (the children of its agent, the launcher's process)."""
    children = Path(f"/proc/{launcher_pid}/task/{launcher_pid}/children")
    return [int(pid) for pid in children.read_text().split()] if children.exists() else []


def start(folder: Path, runs: dict, section: dict) -> subprocess.Popen:
    arguments = train_arguments(folder, runs["model"], runs["splits"], settings_for(section))
    arguments += ["--log-file", str(folder / "train.log")]
    return subprocess.Popen(launcher(2, arguments), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_for(condition, process: subprocess.Popen, timeout: float = RUN_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, "training ended before the test could interrupt it"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_two_processes_resume_after_a_kill_at_a_checkpoint(runs, tmp_path):
    folder = tmp_path / "resumed"
    process = start(folder, runs, TWO)
    marker = folder / "checkpoints" / "checkpoint-2" / "checkpoint-complete.txt"
    try:
        wait_for(marker.exists, process)
    finally:
        # The launcher and both ranks at once, as a lost node would (torchrun's workers have sessions of
        # their own: killing its group alone would leave them training).
        for pid in [*workers(process.pid), process.pid]:
            os.kill(pid, signal.SIGKILL)
        process.wait()
    assert not (folder / "adapter").exists() and not (folder / "summary.json").exists()

    arguments = train_arguments(folder, runs["model"], runs["splits"], settings_for(TWO))
    result = subprocess.run(launcher(2, arguments), capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert result.returncode == 0, result.stderr[-6000:]
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["resumed_from"].endswith(("checkpoint-2", "checkpoint-4")), summary["resumed_from"]
    straight = json.loads((runs["folder"] / "p2" / "summary.json").read_text())
    assert summary["global_step"] == straight["global_step"]
    assert summary["settings_fingerprint"] == straight["settings_fingerprint"]
    # The data order after the resume is the uninterrupted run's: the same losses, step by step.
    for a, b in zip(losses(folder), losses(runs["folder"] / "p2"), strict=True):
        assert math.isclose(a, b, rel_tol=LOSS_TOLERANCE), (a, b)


def test_a_failed_rank_ends_the_job(runs, tmp_path):
    """Rank 1 dies mid-training: torchrun ends rank 0 too and fails, well within the rendezvous timeout."""
    folder = tmp_path / "failed"
    section = {**TWO, "rendezvous_timeout_s": 30}
    settings = settings_for(section)
    settings["training"].update(max_steps=40, save_steps=1000)
    arguments = train_arguments(
        folder, runs["model"], runs["splits"], settings, "--log-file", str(folder / "t.log")
    )
    process = subprocess.Popen(launcher(2, arguments), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = folder / "t.log"
    try:
        wait_for(lambda: log.exists() and "step 1/40" in log.read_text(), process)
        ranks = workers(process.pid)
        assert len(ranks) == 2, ranks
        killed_at = time.monotonic()
        os.kill(ranks[1], signal.SIGKILL)
        returncode = process.wait(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert returncode != 0
    assert time.monotonic() - killed_at < 60
    assert not (folder / "adapter").exists() and not (folder / "summary.json").exists()
    assert not any(Path(f"/proc/{pid}").exists() for pid in ranks), "a rank outlived the job"


def test_snakemake_trains_with_two_processes(tmp_path, small_alpaca):
    """`snakemake --cores all` on a recipe asking for 2 processes: the train job runs them (gloo, CPU)."""
    model = build_tiny_model(tmp_path / "model", SAMPLE_DATA, "llama")
    recipe = tiny_recipe("smollm2-135m-alpaca-sample.yaml", model, small_alpaca)
    recipe["training"].update(use_cpu=True, per_device_train_batch_size=4)
    recipe["distributed"] = {"processes_per_node": 2}
    workdir = make_workdir(tmp_path, {"two": recipe})
    snakemake(workdir, "--cores", "all")
    summary = json.loads((workdir / "results/two/train/summary.json").read_text())
    assert summary["world_size"] == 2 and summary["global_step"] == 4
    assert summary["sft_config"]["per_device_train_batch_size"] == 2
    assert (workdir / "results/two/report/report.md").is_file()


# ---- bad input: stopped before any job, the setting named -------------------------------------------------


def recipe_with(
    tmp_path: Path, small_alpaca: Path, distributed_section: dict | None = None, **training
) -> dict:
    model = tmp_path / "no-model-needed"
    recipe = tiny_recipe("smollm2-135m-alpaca-sample.yaml", model, small_alpaca)
    recipe["model"]["source"] = {"kind": "gguf", "path": str(SAMPLE_DATA)}  # exists; never loaded here
    recipe["training"].update(training)
    if distributed_section:
        recipe["distributed"] = distributed_section
    return recipe


@pytest.mark.parametrize(
    ("section", "training", "local_gpus", "message"),
    [
        ({"processes_per_node": 3}, {}, 0, "distributed: 3 processes do not divide the batch"),
        (
            {"processes_per_node": 2},
            {},
            1,
            "distributed.processes_per_node: 2 processes, but this machine has 1 GPUs",
        ),
        (
            {"processes_per_node": 2, "nodes": 2},
            {"use_cpu": True},
            0,
            "distributed.nodes: 2 nodes need a cluster",
        ),
        (
            {"strategy": "deepspeed_zero3"},
            {},
            None,
            "distributed.strategy: deepspeed_zero3 needs the deepspeed",
        ),
        (None, {"use_liger_kernel": True}, 0, "training.use_liger_kernel needs"),
        (None, {"torch_compile": True}, 1, "training.torch_compile on a GPU needs the triton package"),
    ],
)
def test_what_cannot_run_here_is_named(tmp_path, small_alpaca, section, training, local_gpus, message):
    from alpaca_lora.experiments import ConfigError
    from test_packing import experiments_of

    if "deepspeed" in message and distributed_installed("deepspeed"):
        pytest.skip("deepspeed is installed")
    if "triton" in message and distributed_installed("triton"):
        pytest.skip("triton is installed")
    recipe = recipe_with(tmp_path, small_alpaca, section, **training)
    with pytest.raises(ConfigError) as caught:
        experiments_of(tmp_path, recipe).check_training(local_gpus)
    assert message in str(caught.value) and "r.yaml" in str(caught.value)
    assert "\n" not in str(caught.value)


def distributed_installed(package: str) -> bool:
    from alpaca_lora.hardware import installed

    return installed(package)


def test_a_gpu_recipe_asking_for_more_processes_than_gpus_stops_before_any_job(
    tmp_path, tiny_llama, small_alpaca
):
    recipe = tiny_recipe("smollm2-135m-alpaca-sample.yaml", tiny_llama, small_alpaca)
    recipe["distributed"] = {"processes_per_node": 2}
    workdir = make_workdir(tmp_path, {"gpus": recipe})
    assert (
        "train_lora" in snakemake(workdir, "--dry-run").stdout
    )  # a dry run plans it (a cluster may have them)
    result = snakemake(workdir, check=False)
    assert result.returncode != 0
    assert (
        "distributed.processes_per_node: 2 processes, but this machine has 0 GPUs"
        in result.stderr + result.stdout
    )
    assert not (workdir / "results").exists(), "no job may have run"


# ---- the settings, resources and commands a recipe's distributed section gives ----------------------------


@pytest.mark.parametrize(
    ("batch", "accumulation", "world", "expected"),
    [(8, 4, 2, (8, 2)), (8, 1, 2, (4, 1)), (2, 3, 6, (1, 1)), (8, 1, 1, None)],
)
def test_each_process_gets_an_equal_share_of_the_batch(batch, accumulation, world, expected):
    recipe = {
        "training": {"per_device_train_batch_size": batch, "gradient_accumulation_steps": accumulation},
        "distributed": {"processes_per_node": world},
    }
    overrides = distributed.training_overrides(recipe)
    if expected is None:
        assert overrides == {}
        return
    share = (overrides["per_device_train_batch_size"], overrides["gradient_accumulation_steps"])
    assert share == expected
    assert share[0] * share[1] * world == batch * accumulation  # the batch of one optimizer step is kept
    assert overrides["ddp_timeout"] == 300


@pytest.mark.parametrize(
    ("section", "use_cpu", "expected"),
    [
        (None, False, {"nodes": 1, "gpu": 1, "mpi": ""}),
        ({"processes_per_node": 2}, True, {"nodes": 1, "gpu": 0, "mpi": "srun", "tasks": 2}),
        (
            {"nodes": 2, "processes_per_node": 4},
            False,
            {"nodes": 2, "gpu": 8, "mpi": "srun", "tasks_per_node": 4},
        ),
    ],
)
def test_slurm_resources_follow_the_recipe(section, use_cpu, expected):
    recipe = {"training": {"use_cpu": use_cpu}, **({"distributed": section} if section else {})}
    assert distributed.slurm_resources(recipe) == expected


def test_the_local_launcher(monkeypatch):
    import argparse

    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    args = argparse.Namespace(nodes=1, processes_per_node=1, rendezvous_timeout_s=300)
    assert distributed.command(args, ["train.py"]) == ([sys.executable, "train.py"], {})
    args.processes_per_node = 2
    command, _ = distributed.command(args, ["train.py"])
    assert command[1:] == ["-m", "torch.distributed.run", "--standalone", "--max-restarts=0"] + [
        "--nproc-per-node=2",
        "train.py",
    ]
    args.nodes = 2
    with pytest.raises(SystemExit, match="distributed.nodes: 2 nodes need a SLURM allocation"):
        distributed.command(args, ["train.py"])


def test_a_rank_that_cannot_reach_the_rendezvous_stops_naming_the_timeout(tmp_path, tiny_llama):
    """Rank 1 of 2, nobody listening at the first node: a one-line error after the timeout, no hang."""
    import socket

    with socket.socket() as probe:  # a free port: no rank 0 there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = settings_for({**TWO, "rendezvous_timeout_s": 10})
    splits = {"train": tmp_path / "train.jsonl", "eval": tmp_path / "eval.jsonl"}
    for path in splits.values():
        path.write_text("")
    arguments = train_arguments(tmp_path, tiny_llama, splits, settings)
    env = {**os.environ, "RANK": "1", "LOCAL_RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1"}
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, str(SCRIPTS / "train_lora.py"), *arguments],
        capture_output=True,
        text=True,
        timeout=120,
        env={**env, "MASTER_PORT": str(port)},
    )
    assert result.returncode == 1
    assert time.monotonic() - started < 60
    error = [line for line in result.stderr.splitlines() if " - ERROR - " in line]
    assert len(error) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert f"rank 1: could not join the other processes at 127.0.0.1:{port} within 10 s" in error[0]
    assert "(distributed.rendezvous_timeout_s)" in error[0]
