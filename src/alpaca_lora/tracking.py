"""Experiment trackers: what a recipe's `training.report_to` may name, and where each one writes, offline.

The names are the trainer's own (`report_to` is an SFTConfig field, passed through as it is); the workflow
checks before any job that each named tracker is installed (Experiments.check_trackers), and train_lora.py
points each one at the experiment's tracking folder (results/<experiment>/train/tracking/<tracker>/) in a
mode that never reaches the network: DVCLive without DVC Studio or analytics, MLflow with a local file store,
Weights & Biases offline (`wandb sync` uploads a run later), TensorBoard event files.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

# report_to name -> (the module the trainer imports, the package that installs it).
TRACKERS: dict[str, tuple[str, str]] = {
    "dvclive": ("dvclive", "dvclive"),
    "mlflow": ("mlflow", "mlflow-skinny"),
    "wandb": ("wandb", "wandb"),
    "tensorboard": ("tensorboard", "tensorboard"),
}


def named(report_to: str | list[str]) -> list[str]:
    """The trackers a report_to value names ("none" names none)."""
    names = [report_to] if isinstance(report_to, str) else list(report_to)
    return [name for name in names if name != "none"]


def missing(report_to: str | list[str]) -> list[tuple[str, str]]:
    """(tracker, package to install) for each named tracker whose module is not installed."""
    return [
        (name, TRACKERS[name][1])
        for name in named(report_to)
        if importlib.util.find_spec(TRACKERS[name][0]) is None
    ]


def offline_environment(folder: Path) -> dict[str, str]:
    """Environment variables that make each tracker write under `folder` and stay off the network."""
    folder = folder.resolve()
    env = {
        # DVCLive (and DVC) would otherwise send usage analytics and may post to DVC Studio.
        "DVC_NO_ANALYTICS": "1",
        "DVC_STUDIO_OFFLINE": "1",
        "WANDB_MODE": "offline",
        "WANDB_DIR": str(folder / "wandb"),
        "WANDB_SILENT": "true",
        "MLFLOW_TRACKING_URI": (folder / "mlruns").as_uri(),
        # Plain files DVC versions like the rest (MLflow 3 keeps this store in maintenance mode; a database
        # store would need alembic and a server for `mlflow ui` alike).
        "MLFLOW_ALLOW_FILE_STORE": "true",
        "TENSORBOARD_LOGGING_DIR": str(folder / "tensorboard"),
    }
    return env


def use_offline_environment(report_to: str | list[str], folder: Path) -> None:
    """Set offline_environment in this process, for the trainer's callbacks that read it when they start."""
    env = offline_environment(folder)
    if "wandb" in named(report_to):
        Path(env["WANDB_DIR"]).mkdir(parents=True, exist_ok=True)  # W&B does not create it
    os.environ.update(env)


def dvclive_callback(folder: Path, resume: bool):
    """The trainer's DVCLive callback writing to folder/dvclive, continuing there after a resume.

    The trainer's own would write to ./dvclive and save a DVC experiment (git refs) when training ends.
    """
    from dvclive import Live
    from transformers.integrations import DVCLiveCallback

    class FilesOnlyLive(Live):
        """DVCLive that never opens DVC's repository: a job must not take DVC's repository lock (parallel jobs
        would wait on it), nor run `dvc init`, which DVCLive does in a git work tree without DVC.
        tools/dvc_pipeline.py declares the files to DVC after the run."""

        def _init_dvc(self) -> None:
            self._dvc_file = "dvc.yaml"  # what DVCLive names without dvcyaml; never written (dvcyaml=None)

    live = FilesOnlyLive(
        dir=str(folder / "dvclive"), resume=resume, save_dvc_exp=False, dvcyaml=None, monitor_system=False
    )
    return DVCLiveCallback(live=live)


if __name__ == "__main__":
    from alpaca_lora.common import module_help

    module_help(
        __doc__ + "\nA library for the step scripts, the workflow and the tests: nothing to run."
    ).parse_args()
