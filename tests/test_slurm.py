"""The workflow on a real SLURM cluster, through profiles/slurm as users run it.

A one-node cluster comes from tests/slurm/harness.sh (`make test` wraps these tests in `harness.sh run`;
by hand: `sudo tests/slurm/harness.sh start`, `pytest -m slurm`, `sudo tests/slurm/harness.sh stop`).
Without a controller the tests skip, unless SLURM_TESTS=required (as in `make test`), where they fail.

Only test-specific settings are layered on the profile, on the command line: the status command (this
cluster has no accounting database, so `squeue`), a short first status check, and, for one run, no retries.
Everything else, the per-rule resources included, is the shipped profile.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from alpaca_lora.testing import SNAKEMAKE, build_tiny_model, make_workdir, tiny_recipe, workflow_env
from conftest import ROOT, SAMPLE_DATA

pytestmark = pytest.mark.slurm

PROFILE = yaml.safe_load((ROOT / "profiles" / "slurm" / "config.yaml").read_text(encoding="utf-8"))
TEST_OVERRIDES = [
    "--slurm-status-command",
    "squeue",
    "--slurm-init-seconds-before-status-checks",
    "2",
]
# The jobs of the tiny pipeline: one experiment, so one of each step but templating and evaluation (two).
EXPECTED_JOBS = {
    "convert_to_messages": 1,
    "split_dataset": 1,
    "prepare_base_model": 1,
    "apply_chat_template": 2,
    "train_lora": 1,
    "evaluate": 2,
    "score_answers": 2,
    "report": 1,
    "export": 1,
    "manifest": 1,
    "summary": 1,
}
RUN_TIMEOUT_S = 900


def command(*args: str, timeout: float = 30) -> str:
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}): {result.stderr}")
    return result.stdout


def controller_answers() -> bool:
    if shutil.which("sinfo") is None:
        return False
    try:
        return subprocess.run(["sinfo", "--noheader"], capture_output=True, timeout=15).returncode == 0
    except subprocess.TimeoutExpired:
        return False


@pytest.fixture(scope="module", autouse=True)
def cluster():
    if not controller_answers():
        message = "no SLURM controller answers (start one: sudo tests/slurm/harness.sh start)"
        if os.environ.get("SLURM_TESTS") == "required":
            pytest.fail(message)
        pytest.skip(message)


def slurm_jobs() -> dict[str, dict[str, str]]:
    """Every job the controller still knows (the harness keeps finished ones for an hour): id -> fields."""
    jobs = {}
    for line in command("squeue", "--states=all", "--noheader", "--format=%i|%j|%k|%T").splitlines():
        job_id, name, comment, state = line.strip().split("|")
        rule = re.match(r"rule_(.+?)(_wildcards_.*)?$", comment)
        jobs[job_id] = {"name": name, "rule": rule.group(1) if rule else "", "state": state}
    return jobs


def job_details(job_id: str) -> dict[str, str]:
    """`scontrol show job` as key -> value."""
    text = command("scontrol", "show", "job", "--oneliner", job_id)
    return dict(re.findall(r"(\S+?)=(\S*)", text))


def megabytes(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)([KMGT]?)", value).groups()
    return float(number) * {"K": 1 / 1024, "": 1, "M": 1, "G": 1024, "T": 1024 * 1024}[unit]


def snakemake_slurm(*extra: str) -> list[str]:
    return [SNAKEMAKE, "--profile", "profiles/slurm", *TEST_OVERRIDES, *extra]


def run_workflow(workdir: Path, *extra: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        snakemake_slurm(*extra),
        cwd=workdir,
        capture_output=True,
        text=True,
        env=workflow_env(),
        timeout=RUN_TIMEOUT_S,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake on SLURM failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return result


def new_jobs(before: set[str]) -> dict[str, dict[str, str]]:
    return {job_id: job for job_id, job in slurm_jobs().items() if job_id not in before}


def slurm_job_of_log(log: Path) -> str | None:
    found = re.search(r"Running in SLURM job (\d+)", log.read_text(encoding="utf-8"))
    return found.group(1) if found else None


@pytest.fixture(scope="module")
def slurm_run(tmp_path_factory, tiny_llama, small_alpaca) -> dict:
    recipe = tiny_recipe("smollm2-135m-alpaca-sample.yaml", tiny_llama, small_alpaca)
    workdir = make_workdir(tmp_path_factory.mktemp("slurm-e2e"), {"tiny": recipe})
    before = set(slurm_jobs())
    started = time.monotonic()
    result = run_workflow(workdir)
    return {
        "workdir": workdir,
        "jobs": new_jobs(before),
        "output": result.stdout + result.stderr,
        "seconds": time.monotonic() - started,
    }


def test_every_step_ran_as_its_own_slurm_job(slurm_run):
    jobs = slurm_run["jobs"]
    assert Counter(job["rule"] for job in jobs.values()) == EXPECTED_JOBS, jobs
    assert {job["state"] for job in jobs.values()} == {"COMPLETED"}
    assert len({job["name"] for job in jobs.values()}) == 1, "one Snakemake run, one SLURM job name"
    # Each step's log was written inside the SLURM job submitted for that step: one log per job. The one
    # local rule (writing the training settings file) runs in the Snakemake process itself.
    logs = sorted(
        log
        for log in (slurm_run["workdir"] / "results" / "logs").rglob("*.log")
        if log.name != "training_settings.log"
    )
    assert len(logs) == len(jobs)
    assert sorted(slurm_job_of_log(log) or f"none in {log}" for log in logs) == sorted(jobs)
    # And the plugin's own SLURM log of every job is kept (profile: slurm-keep-successful-logs).
    slurm_logs = {log.stem for log in (slurm_run["workdir"] / ".snakemake" / "slurm_logs").rglob("*.log")}
    assert slurm_logs == set(jobs)


def test_outputs_are_complete_and_a_second_run_has_nothing_to_do(slurm_run):
    run = slurm_run["workdir"] / "results" / "tiny"
    report = (run / "report" / "report.md").read_text(encoding="utf-8")
    tuned = json.loads((run / "eval" / "tuned" / "metrics.json").read_text())
    assert f"{tuned['eval_loss']:.4f}" in report
    summary = json.loads((run / "train" / "summary.json").read_text())
    assert summary["global_step"] == 4 and summary["resumed_from"] is None
    assert json.loads((run / "train" / "adapter" / "adapter_config.json").read_text())["r"] == 16
    assert not (run / "train" / "checkpoints").exists()
    # The cluster run ended with Snakemake's report (the onsuccess handler, src/alpaca_lora/hooks.py).
    assert "Snakemake's report of this run: results/report.html" in slurm_run["output"]
    assert (slurm_run["workdir"] / "results" / "report.html").stat().st_size > 0
    assert "Nothing to be done" in run_workflow(slurm_run["workdir"], "--dry-run").stdout


def test_jobs_carry_the_profiles_resources(slurm_run):
    by_rule = {job["rule"]: job_id for job_id, job in slurm_run["jobs"].items()}
    threads = PROFILE["set-threads"]
    for job_id, job in slurm_run["jobs"].items():
        assert int(job_details(job_id)["NumCPUs"]) == threads.get(job["rule"], 1), job
    for rule in ("train_lora", "evaluate"):
        wanted = PROFILE["set-resources"][rule]
        job = job_details(by_rule[rule])
        gpus = wanted.get("gpu", 1)  # train_lora: the recipe's (one process: one GPU)
        assert re.search(rf"gpu:{gpus}\b", job.get("TresPerJob", "")), (rule, job)
        assert megabytes(job["MinMemoryNode"]) == wanted["mem_mb"], (rule, job["MinMemoryNode"])
        assert job["TimeLimit"] == f"{wanted['runtime'] // 60:02d}:{wanted['runtime'] % 60:02d}:00"
    data_step = job_details(by_rule["split_dataset"])
    assert "gpu" not in data_step.get("TresPerJob", "")
    assert megabytes(data_step["MinMemoryNode"]) == PROFILE["default-resources"]["mem_mb"]


def wait_for(condition, timeout: float, what: str, process: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if process is not None and process.poll() is not None:
            output = process.stdout.read() if process.stdout else ""
            raise AssertionError(f"snakemake ended ({process.returncode}) before {what}:\n{output[-6000:]}")
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def running_training_job() -> str | None:
    return next(
        (i for i, job in slurm_jobs().items() if job["rule"] == "train_lora" and job["state"] == "RUNNING"),
        None,
    )


@pytest.fixture
def slow_training_workdir(tmp_path, small_alpaca) -> Path:
    """A run whose training takes long enough to interrupt: a wider tiny model, more steps."""
    model = build_tiny_model(tmp_path / "model", SAMPLE_DATA, "llama", hidden_size=256)
    recipe = tiny_recipe("smollm2-135m-alpaca-sample.yaml", model, small_alpaca)
    recipe["training"].update(max_steps=12, save_steps=2, eval_steps=12)
    return make_workdir(tmp_path, {"slow": recipe})


def start_workflow(workdir: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        snakemake_slurm(*extra),
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=workflow_env(),
    )


def finish(process: subprocess.Popen, timeout: float = RUN_TIMEOUT_S) -> tuple[int, str]:
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        raise AssertionError(f"snakemake did not finish within {timeout}s:\n{output[-6000:]}") from None
    return process.returncode, output


def test_a_cancelled_training_resumes_from_its_checkpoint_when_run_again(slow_training_workdir):
    workdir = slow_training_workdir
    train = workdir / "results" / "slow" / "train"
    first_checkpoint = train / "checkpoints" / "checkpoint-2" / "checkpoint-complete.txt"
    # Up to the training only: test_every_step_ran_as_its_own_slurm_job covers the rest of the pipeline.
    process = start_workflow(workdir, "--retries", "0", "--until", "train_lora")
    try:
        wait_for(first_checkpoint.exists, RUN_TIMEOUT_S, "the first checkpoint", process)
        job_id = wait_for(running_training_job, 60, "the running training job")
        command("scancel", job_id)
        returncode, output = finish(process)
    finally:
        if process.poll() is None:
            process.kill()
    assert returncode != 0, output[-3000:]
    assert slurm_jobs()[job_id]["state"] == "CANCELLED"
    assert not (train / "adapter").exists() and not (train / "summary.json").exists()

    run_workflow(workdir, "--until", "train_lora")
    summary = json.loads((train / "summary.json").read_text())
    resumed = re.fullmatch(r".*/checkpoint-(\d+)", summary["resumed_from"] or "")
    assert resumed and 2 <= int(resumed.group(1)) < 12, summary["resumed_from"]
    assert summary["global_step"] == 12
    assert "Resuming from checkpoint" in (workdir / "results/logs/slow/train_lora.log").read_text()


def test_sigterm_before_the_time_limit_checkpoints_and_the_retry_resumes(tmp_path, small_alpaca):
    """What the profile's --signal=TERM@300 does near a time limit: SIGTERM to the job's steps.

    Nothing but the SIGTERM checkpoint can be resumed (the periodic interval is longer than the run), and
    Snakemake's retry from the profile resubmits the job within the same run.
    """
    model = build_tiny_model(tmp_path / "model", SAMPLE_DATA, "llama", hidden_size=256)
    recipe = tiny_recipe("smollm2-135m-alpaca-sample.yaml", model, small_alpaca)
    recipe["training"].update(max_steps=8, save_steps=1000, eval_steps=8)
    workdir = make_workdir(tmp_path, {"term": recipe})
    train_log = workdir / "results" / "logs" / "term" / "train_lora.log"
    before = set(slurm_jobs())
    process = start_workflow(workdir, "--until", "train_lora")
    try:
        wait_for(
            lambda: train_log.exists() and "step 1/8" in train_log.read_text(),
            RUN_TIMEOUT_S,
            "the first training step",
            process,
        )
        job_id = wait_for(running_training_job, 60, "the running training job")
        command("scancel", "--signal=TERM", job_id)
        returncode, output = finish(process)
    finally:
        if process.poll() is None:
            process.kill()
    assert returncode == 0, output[-6000:]
    trainings = {i: job for i, job in new_jobs(before).items() if job["rule"] == "train_lora"}
    assert [trainings[i]["state"] for i in sorted(trainings, key=int)] == ["FAILED", "COMPLETED"]
    slurm_log = next((workdir / ".snakemake" / "slurm_logs").rglob(f"{job_id}.log")).read_text()
    assert "SIGTERM received: saving a checkpoint at step" in slurm_log
    summary = json.loads((workdir / "results" / "term" / "train" / "summary.json").read_text())
    resumed = re.fullmatch(r".*/checkpoint-(\d+)", summary["resumed_from"] or "")
    assert resumed and 1 <= int(resumed.group(1)) < 8, summary["resumed_from"]
    assert summary["global_step"] == 8


def test_a_two_process_recipe_trains_as_one_job_with_two_tasks(tmp_path, small_alpaca):
    """distributed.processes_per_node: 2 on the CPU (gloo): one SLURM job, 2 tasks started by srun."""
    model = build_tiny_model(tmp_path / "model", SAMPLE_DATA, "llama")
    recipe = tiny_recipe("smollm2-135m-alpaca-sample.yaml", model, small_alpaca)
    recipe["training"].update(use_cpu=True)
    recipe["distributed"] = {"processes_per_node": 2, "rendezvous_timeout_s": 120}
    workdir = make_workdir(tmp_path, {"two": recipe})
    before = set(slurm_jobs())
    run_workflow(workdir, "--until", "train_lora")
    [(job_id, job)] = [(i, j) for i, j in new_jobs(before).items() if j["rule"] == "train_lora"]
    assert job["state"] == "COMPLETED"
    details = job_details(job_id)
    print(
        "scontrol show job", job_id, {k: details.get(k) for k in ("NumNodes", "NumTasks", "NumCPUs", "TRES")}
    )
    assert details["NumNodes"] == "1" and details["NumTasks"] == "2", details
    assert "gpu" not in details.get("TresPerJob", "")
    summary = json.loads((workdir / "results/two/train/summary.json").read_text())
    assert summary["world_size"] == 2 and summary["global_step"] == 4
    slurm_log = next((workdir / ".snakemake" / "slurm_logs").rglob(f"{job_id}.log")).read_text()
    assert "Launching: srun --nodes=1 --ntasks=2 --ntasks-per-node=2 --kill-on-bad-exit=1" in slurm_log
