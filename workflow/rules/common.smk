"""Config validation, wildcard constraints and small input functions. The experiment model (recipes, grids,
what experiments share) is src/alpaca_lora/experiments.py; every path is src/alpaca_lora/layout.py.
"""

import json
import os
import shlex
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.logging import logger

from alpaca_lora import layout
from alpaca_lora.common import write_json
from alpaca_lora.experiments import ConfigError, Experiments, alternatives
from alpaca_lora.hooks import report_after_cluster_run
from alpaca_lora.lockfiles import LOCKFILES

# Rules run `python`: make it the interpreter running Snakemake (the one with the pipeline's packages),
# whether or not its environment is activated.
os.environ["PATH"] = os.pathsep.join(
    [str(Path(sys.executable).parent), os.environ.get("PATH", "")]
)

# Where the config came from, for error messages: the config files, and --config.
CONFIG_SOURCES = " + ".join(
    [
        *map(str, workflow.configfiles),
        *(["--config"] if workflow.config_settings.config else []),
    ]
)

try:
    EXPERIMENTS = Experiments(
        config,
        schemas=Path(workflow.basedir) / "workflow/schemas",
        config_file=CONFIG_SOURCES,
    )
    EXPERIMENTS.check_sources()
    EXPERIMENTS.check_training(None)  # what holds on any machine
except ConfigError as error:
    # One line, the file and the key: no traceback, no heading (a WorkflowError would print both).
    sys.exit(str(error))


onstart:
    # Before the first job of a real run (not a dry run) whose jobs run on this machine: what training needs
    # of it (GPUs, GPU-only packages). A cluster job's training step checks its own node.
    if workflow.local_exec and not workflow.remote_exec:
        from alpaca_lora.hardware import local_gpus

        try:
            EXPERIMENTS.check_training(
                local_gpus() if EXPERIMENTS.needs_gpu_count() else 0
            )
        except ConfigError as error:
            sys.exit(str(error))


wildcard_constraints:
    experiment=alternatives(EXPERIMENTS.names()),
    model=alternatives(EXPERIMENTS.models),
    dataset=alternatives(EXPERIMENTS.datasets),
    split=r"seed\d+-eval[0-9.e+-]+",
    part="train|eval",
    which="base|tuned",


def all_cores():
    """Threads of a heavy step: every core of a local run, so that two heavy steps never run side by side.

    A cluster run has no core count (no --cores): there the profile's set-threads gives each step its CPUs
    (profiles/slurm names every rule that uses this), and 1 is only the fallback.
    """
    try:
        return workflow.cores
    except WorkflowError:
        return 1


def script_path(step):
    """A step script, given to its rule as an input so that editing the script re-runs the step.

    Relative to the working directory, so that a clone elsewhere (e.g. restored with `dvc pull`) records
    the same input paths.
    """
    return os.path.relpath(Path(workflow.basedir) / "scripts" / f"{step}.py")


def package_path(module):
    """A module of the alpaca_lora package, as an input of the rules whose results it decides."""
    return os.path.relpath(
        Path(workflow.basedir) / "src" / "alpaca_lora" / f"{module}.py"
    )


def files(rule, **wildcards):
    """A rule's outputs for one job (input functions name other rules' outputs through this)."""
    return layout.files(rule, **wildcards)


def experiment(wildcards):
    return EXPERIMENTS[wildcards.experiment]


def dataset_files(wildcards):
    return EXPERIMENTS.data_files(wildcards.dataset)


def experiment_inputs(wildcards):
    """The base model folder and the experiment's templated train and eval text."""
    w = experiment(wildcards).wildcards
    return {
        "model": layout.MODEL.format(**w),
        **{
            part: files("apply_chat_template", **w, part=part)["templated"]
            for part in ("train", "eval")
        },
    }


def evaluation_inputs(wildcards):
    inputs = experiment_inputs(wildcards)
    del inputs["train"]
    if wildcards.which == "tuned":
        inputs["adapter"] = files("train_lora", **wildcards)["adapter"]
    return inputs


def lm_eval_inputs(wildcards):
    """The base model folder, the eval split (the project's lm-eval task is built from it), the adapter."""
    w = experiment(wildcards).wildcards
    inputs = {
        "model": layout.MODEL.format(**w),
        "eval": files("split_dataset", **w)["eval"],
    }
    if wildcards.which == "tuned":
        inputs["adapter"] = files("train_lora", **wildcards)["adapter"]
    inputs["own_tasks"] = EXPERIMENTS.lm_eval_task_files(wildcards.experiment)
    return inputs


def report_inputs(wildcards):
    """Everything one experiment's report shows; the base evaluation may be another experiment's."""
    name = wildcards.experiment
    w = EXPERIMENTS[name].wildcards
    base = {"experiment": EXPERIMENTS.base_evaluation_owner(name), "which": "base"}
    tuned = {"experiment": name, "which": "tuned"}
    evaluations = {
        f"{which}_{role}": path
        for which, job in (("base", base), ("tuned", tuned))
        for rule in ("evaluate", "score_answers")
        for role, path in files(rule, **job).items()
    }
    if "lm_eval" in EXPERIMENTS[name].recipe["evaluation"]:
        for which, job in (("base", base), ("tuned", tuned)):
            evaluations[f"{which}_lm_eval"] = files("lm_eval", **job)["results"]
    return {
        "recipe": str(EXPERIMENTS[name].recipe_file),
        "convert_summary": files("convert_to_messages", **w)["summary"],
        "split_summary": files("split_dataset", **w)["summary"],
        "history": files("train_lora", **w)["history"],
        "train_summary": files("train_lora", **w)["summary"],
        "model": layout.MODEL.format(**w),
        **evaluations,
    }


def export_inputs(wildcards):
    """The base model, the adapter, the eval records the merge is checked on, and what the card quotes."""
    w = experiment(wildcards).wildcards
    return {
        "model": layout.MODEL.format(**w),
        "adapter": files("train_lora", **w)["adapter"],
        "eval": files("apply_chat_template", **w, part="eval")["templated"],
        "recipe": str(experiment(wildcards).recipe_file),
        "convert_summary": files("convert_to_messages", **w)["summary"],
        "metrics": files("report", **w)["metrics_json"],
    }


def summary_inputs(wildcards):
    """Per experiment, in the config's order: its settings and counts, and its metrics table."""
    reports = [files("report", experiment=name) for name in EXPERIMENTS.names()]
    return {
        "experiment": [report["experiment"] for report in reports],
        "metrics": [report["metrics"] for report in reports],
    }


def manifest_inputs(wildcards):
    """Every file one experiment read or wrote, and the benchmark files of its jobs."""
    name = wildcards.experiment
    code = [
        script_path(p.stem)
        for p in sorted(Path(workflow.basedir, "scripts").glob("*.py"))
    ]
    code += [
        package_path(p.stem)
        for p in sorted(Path(workflow.basedir, "src/alpaca_lora").glob("*.py"))
    ]
    return {
        "sources": EXPERIMENTS.sources(name) + code,
        "products": EXPERIMENTS.products(name),
        "timings": EXPERIMENTS.timings(name),
        "model": layout.MODEL.format(**EXPERIMENTS[name].wildcards),
        "lockfiles": [
            os.path.relpath(Path(workflow.basedir) / lock) for lock in LOCKFILES
        ],
    }
