"""training.report_to: every tracker writes offline under the tracking folder; a missing one stops early."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from alpaca_lora import tracking
from alpaca_lora.experiments import ConfigError, check_trackers
from conftest import ROOT, SCRIPTS
from test_train_and_evaluate import templated_splits, train_arguments, train_settings

OFFLINE = ROOT / "tests" / "offline"  # its sitecustomize refuses and records any non-local connection


def offline_command(arguments: list[str]) -> list[str]:
    """In a network namespace with only loopback when this runs as root (as CI does): the trackers' own
    binaries (W&B's service) are cut off too, not only Python's sockets."""
    if os.geteuid() == 0 and shutil.which("unshare") and shutil.which("ip"):
        return ["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *arguments]
    return arguments


@pytest.fixture(scope="module")
def tracked(tmp_path_factory, tiny_llama, small_alpaca) -> dict:
    """One short training with every tracker, offline."""
    folder = tmp_path_factory.mktemp("tracked")
    splits = templated_splits(folder, tiny_llama, small_alpaca)
    settings = train_settings(max_steps=4, eval_steps=2, save_steps=2, report_to=list(tracking.TRACKERS))
    attempts = folder / "network-attempts.txt"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(OFFLINE), os.environ.get("PYTHONPATH", "")])}
    env["NETWORK_ATTEMPTS"] = str(attempts)
    for variable in ("WANDB_MODE", "MLFLOW_TRACKING_URI", "DVC_NO_ANALYTICS"):
        env.pop(variable, None)  # the script must set them itself
    arguments = train_arguments(
        folder, tiny_llama, splits, settings, "--tracking-dir", str(folder / "tracking")
    )
    result = subprocess.run(
        offline_command([sys.executable, str(SCRIPTS / "train_lora.py"), *arguments]),
        capture_output=True, text=True, env=env, cwd=folder, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    return {"tracking": folder / "tracking", "attempts": attempts, "cwd": folder, "log": result.stderr}


def test_no_tracker_tries_the_network(tracked):
    attempts = tracked["attempts"]
    assert not attempts.exists(), f"network attempts:\n{attempts.read_text()}"


def test_dvclive_writes_metrics_and_curves_for_dvc(tracked):
    live = tracked["tracking"] / "dvclive"
    metrics = json.loads((live / "metrics.json").read_text())
    assert "eval" in metrics and "loss" in metrics["eval"], metrics
    curve = (live / "plots" / "metrics" / "loss.tsv").read_text().splitlines()  # the training loss
    assert curve[0].split("\t")[0] == "step" and len(curve) == 1 + 4  # logging_steps 1, 4 steps
    assert not (tracked["cwd"] / "dvclive").exists(), "nothing in the working directory"


def test_mlflow_writes_a_local_file_store(tracked):
    runs = list((tracked["tracking"] / "mlruns").glob("*/*/metrics/eval_loss"))
    assert len(runs) >= 1, sorted(p.name for p in (tracked["tracking"] / "mlruns").rglob("*"))
    assert runs[0].read_text().strip()


def test_wandb_writes_an_offline_run(tracked):
    runs = list((tracked["tracking"] / "wandb").rglob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1 and runs[0].stat().st_size > 0


def test_tensorboard_writes_event_files(tracked):
    events = list((tracked["tracking"] / "tensorboard").rglob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0


def test_a_tracker_that_is_not_installed_stops_naming_key_and_package(monkeypatch):
    monkeypatch.setitem(tracking.TRACKERS, "wandb", ("no_such_module_for_wandb", "wandb"))
    with pytest.raises(ConfigError) as error:
        check_trackers({"report_to": ["dvclive", "wandb"]}, "recipe r.yaml")
    assert str(error.value) == "recipe r.yaml: training.report_to: wandb is not installed (pip install wandb)"
    check_trackers({"report_to": "none"}, "recipe r.yaml")


@pytest.mark.parametrize("value", [["neptune"], "dvclive", ["dvclive", "dvclive"], []])
def test_an_unknown_tracker_stops_naming_the_recipe_and_the_key(value):
    from alpaca_lora.common import load_yaml
    from alpaca_lora.experiments import validate

    recipe = load_yaml((ROOT / "config/recipes/smollm2-135m-alpaca-sample.yaml").read_text(encoding="utf-8"))
    recipe["training"]["report_to"] = value
    with pytest.raises(ConfigError, match=r"^recipe r\.yaml: training\.report_to"):
        validate(recipe, ROOT / "workflow/schemas/recipe.schema.yaml", "recipe r.yaml")


def test_dvclive_leaves_the_repository_alone(tmp_path):
    """In a git work tree without DVC, DVCLive itself would run `dvc init`; a training job must not."""
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    code = (
        "from pathlib import Path\n"
        "from alpaca_lora.tracking import dvclive_callback\n"
        "callback = dvclive_callback(Path('tracking'), resume=False)\n"
        "callback.live.log_metric('loss', 1.0)\n"
        "callback.live.next_step()\n"
        "callback.live.end()\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True, capture_output=True)
    assert sorted(path.name for path in tmp_path.iterdir()) == [".git", "tracking"]
    assert (tmp_path / "tracking/dvclive/metrics.json").is_file()


def test_run_alone_the_step_tracks_beside_the_adapter(tmp_path, tiny_llama, small_alpaca):
    """train_lora.py alone (benchmarks, by hand): without --tracking-dir, the folder beside the adapter."""
    from conftest import run_script

    splits = templated_splits(tmp_path, tiny_llama, small_alpaca)
    settings = train_settings(max_steps=2, eval_steps=2, save_steps=2, report_to=["dvclive"])
    run_script("train_lora.py", *train_arguments(tmp_path / "run", tiny_llama, splits, settings))
    assert (tmp_path / "run" / "tracking" / "dvclive" / "metrics.json").is_file()
