"""Config loading and validation, experiment expansion, and path helpers for the rules."""

import json
import os
import shlex
import sys
from pathlib import Path

import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

validate(config, "../schemas/config.schema.yaml")

# Rules run `python`: make it the interpreter running Snakemake (the one with the pipeline's packages),
# whether or not its environment is activated.
os.environ["PATH"] = os.pathsep.join(
    [str(Path(sys.executable).parent), os.environ.get("PATH", "")]
)
SCRIPTS = Path(workflow.basedir) / "scripts"
RECIPE_SCHEMA = Path(workflow.basedir) / "workflow/schemas/recipe.schema.yaml"


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
    return os.path.relpath(SCRIPTS / f"{step}.py")


def recipe_path(name):
    return Path(config["recipes_dir"]) / f"{name}.yaml"


def load_recipe(name):
    path = recipe_path(name)
    if not path.is_file():
        raise WorkflowError(f"experiment {name!r}: recipe file {path} does not exist")
    recipe = yaml.safe_load(path.read_text(encoding="utf-8"))
    try:
        validate(recipe, str(RECIPE_SCHEMA))
    except WorkflowError as error:
        raise WorkflowError(f"recipe {path} is invalid:\n{error}") from None
    return recipe


EXPERIMENTS = {name: load_recipe(name) for name in config["experiments"]}


def shared_by_name(section):
    """Map a shared artifact's name (a model or a dataset) to its settings: one name, one definition."""
    seen = {}
    for experiment, recipe in EXPERIMENTS.items():
        settings = recipe[section]
        first = seen.setdefault(settings["name"], (experiment, settings))
        if first[1] != settings:
            raise WorkflowError(
                f"{section} {settings['name']!r} is defined differently in {recipe_path(first[0])} and "
                f"{recipe_path(experiment)}; make the two the same or give one of them another name"
            )
    return {name: settings for name, (_, settings) in seen.items()}


MODELS = shared_by_name("model")
DATASETS = shared_by_name("data")


def split_id(recipe):
    split = recipe["split"]
    return f"seed{split['seed']}-eval{split['eval_size']:g}"


def alternatives(names):
    return "|".join(sorted({name.replace(".", r"\.") for name in names}))


wildcard_constraints:
    experiment=alternatives(EXPERIMENTS),
    model=alternatives(MODELS),
    dataset=alternatives(DATASETS),
    split=r"seed\d+-eval[0-9.e+-]+",
    which="base|tuned",


# ---- paths -------------------------------------------------------------------------------------------


def data_dir(recipe):
    return f"results/data/{recipe['data']['name']}"


def templated(recipe, part):
    return f"{data_dir(recipe)}/{split_id(recipe)}/{recipe['model']['name']}/{part}.templated.jsonl"


def model_dir(recipe):
    return f"results/models/{recipe['model']['name']}"


def all_reports():
    return [f"results/{name}/report/report.md" for name in EXPERIMENTS]


def all_manifests():
    return [f"results/{name}/manifest.json" for name in EXPERIMENTS]


# ---- input functions and parameters for the rules ------------------------------------------------------


def dataset_path(wildcards):
    return DATASETS[wildcards.dataset]["path"]


def conversion_flags(wildcards):
    """The data section's format, tolerance and cleaning settings (defaults filled in by the schema)."""
    settings = DATASETS[wildcards.dataset]
    return cli_flags({k: v for k, v in settings.items() if k not in ("name", "path")})


def split_settings(wildcards):
    recipe = next(
        r
        for r in EXPERIMENTS.values()
        if r["data"]["name"] == wildcards.dataset and split_id(r) == wildcards.split
    )
    return recipe["split"]


def model_source_flags(wildcards):
    model = MODELS[wildcards.model]
    return cli_flags(
        {
            **model["source"],
            "dtype": model["dtype"],
            "trust_remote_code": model["trust_remote_code"],
        }
    )


def experiment_inputs(wildcards):
    """The files every step of one experiment reads, by role."""
    recipe = EXPERIMENTS[wildcards.experiment]
    return {
        "model": model_dir(recipe),
        "train": templated(recipe, "train"),
        "eval": templated(recipe, "eval"),
    }


def training_flags(wildcards):
    recipe = EXPERIMENTS[wildcards.experiment]
    lora = {
        f"lora_{key}": value
        for key, value in recipe["lora"].items()
        if key != "target_modules"
    }
    lora["target_modules"] = recipe["lora"]["target_modules"]
    return cli_flags({**lora, **recipe["training"]})


def evaluation_flags(wildcards):
    settings = dict(EXPERIMENTS[wildcards.experiment]["evaluation"])
    settings["prompt"] = settings.pop("probe_prompts")
    return cli_flags(settings)


def evaluation_inputs(wildcards):
    inputs = experiment_inputs(wildcards)
    del inputs["train"]
    if wildcards.which == "tuned":
        inputs["adapter"] = f"results/{wildcards.experiment}/train/adapter"
    return inputs


def adapter_flag(wildcards, input):
    return (
        f"--adapter {shlex.quote(input.adapter)}" if wildcards.which == "tuned" else ""
    )


def report_inputs(wildcards):
    recipe = EXPERIMENTS[wildcards.experiment]
    split_dir = f"{data_dir(recipe)}/{split_id(recipe)}"
    run = f"results/{wildcards.experiment}"
    return {
        "recipe": str(recipe_path(wildcards.experiment)),
        "convert_summary": f"{data_dir(recipe)}/convert_summary.json",
        "split_summary": f"{split_dir}/split_summary.json",
        "history": f"{run}/train/history.csv",
        "train_summary": f"{run}/train/summary.json",
        "base_metrics": f"{run}/eval/base/metrics.json",
        "tuned_metrics": f"{run}/eval/tuned/metrics.json",
        "base_generations": f"{run}/eval/base/generations.jsonl",
        "tuned_generations": f"{run}/eval/tuned/generations.jsonl",
        "model": model_dir(recipe),
    }


def under(folder, *names):
    return [f"{folder}/{name}" for name in names]


def manifest_inputs(wildcards):
    """Every file one experiment read or wrote, by role, and the benchmark files of its steps."""
    recipe = EXPERIMENTS[wildcards.experiment]
    data = data_dir(recipe)
    split_dir = f"{data}/{split_id(recipe)}"
    run = f"results/{wildcards.experiment}"
    # Benchmark files mirror the output layout below results/benchmarks/.
    bench_split = split_dir.replace("results/", "results/benchmarks/", 1)
    bench_run = f"results/benchmarks/{wildcards.experiment}"
    model = recipe["model"]["name"]
    return {
        "sources": [
            recipe["data"]["path"],
            str(recipe_path(wildcards.experiment)),
            *(script_path(path.stem) for path in sorted(SCRIPTS.glob("*.py"))),
        ],
        "products": [
            *under(data, "messages.jsonl", "rejects.jsonl", "convert_summary.json"),
            *under(split_dir, "train.jsonl", "eval.jsonl", "split_summary.json"),
            templated(recipe, "train"),
            templated(recipe, "eval"),
            model_dir(recipe),
            *under(f"{run}/train", "adapter", "history.csv", "summary.json"),
            *under(f"{run}/eval/base", "metrics.json", "generations.jsonl"),
            *under(f"{run}/eval/tuned", "metrics.json", "generations.jsonl"),
            *under(f"{run}/report", "report.md", "metrics.csv", "loss_curve.png"),
            f"{run}/report/generations.csv",
        ],
        "timings": [
            f"results/benchmarks/data/{recipe['data']['name']}/convert_to_messages.tsv",
            f"{bench_split}/split_dataset.tsv",
            *under(
                f"{bench_split}/{model}",
                "apply_chat_template.train.tsv",
                "apply_chat_template.eval.tsv",
            ),
            f"results/benchmarks/models/{model}/prepare_base_model.tsv",
            *under(bench_run, "train_lora.tsv", "make_report.tsv"),
            *under(bench_run, "evaluate.base.tsv", "evaluate.tuned.tsv"),
        ],
        "model": model_dir(recipe),
    }


def resolved_recipe(wildcards):
    """The recipe as validated, schema defaults included: what the manifest records."""
    recipe = EXPERIMENTS[wildcards.experiment]
    return json.dumps(recipe, sort_keys=True, ensure_ascii=False)


# Flags given once per value (--prompt a --prompt b); other lists are one flag with several values.
REPEATED_FLAGS = {"prompt", "placeholder_inputs"}


def cli_flags(settings):
    """Turn {key: value} into shell-quoted --key value flags (booleans as --key / --no-key)."""
    words = []
    for key, value in settings.items():
        flag = f"--{key.replace('_', '-')}"
        if value is None:
            continue
        if isinstance(value, bool):
            words.append(flag if value else f"--no-{flag[2:]}")
        elif isinstance(value, list) and key in REPEATED_FLAGS:
            for item in value:
                words += [flag, str(item)]
        elif isinstance(value, list):
            words += [flag, *map(str, value)]
        else:
            words += [flag, str(value)]
    return shlex.join(words)
