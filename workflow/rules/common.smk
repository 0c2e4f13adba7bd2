"""Config loading and validation, experiment expansion, and path helpers for the rules."""

import copy
import itertools
import json
import os
import re
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
PROBES_SCHEMA = Path(workflow.basedir) / "workflow/schemas/probes.schema.yaml"


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


# ---- experiment grids: one experiment per cell of a product of recipe settings ---------------------------


def grid_value_text(value):
    """A setting's value as it reads in a cell name: 8, 0.0003, true, q_proj+v_proj."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "+".join(map(str, value))
    return str(value)


def setting_parent(recipe, key, grid):
    """The dict holding a dotted setting (lora.r -> recipe["lora"]); the setting must exist."""
    *parents, last = key.split(".")
    node = recipe
    for part in parents:
        node = node.get(part) if isinstance(node, dict) else None
    if not isinstance(node, dict) or last not in node:
        raise WorkflowError(
            f"grid on {grid['recipe']!r}: {key!r} is not a setting of {recipe_path(grid['recipe'])}"
        )
    return node


def grid_cells(grid):
    """Yield (name, recipe, overrides) for every cell of one grid: <recipe>--<key>=<value>--..."""
    base = load_recipe(grid["recipe"])
    keys = list(grid["vary"])
    for values in itertools.product(*grid["vary"].values()):
        overrides = dict(zip(keys, values))
        name = "--".join(
            [grid["recipe"]]
            + [f"{key}={grid_value_text(value)}" for key, value in overrides.items()]
        )
        recipe = copy.deepcopy(base)
        for key, value in overrides.items():
            setting_parent(recipe, key, grid)[key.rsplit(".", 1)[-1]] = value
        recipe["description"] = (
            f"{base['description'].strip()}\nGrid cell: "
            + ", ".join(f"{key} = {grid_value_text(v)}" for key, v in overrides.items())
        )
        try:
            validate(recipe, str(RECIPE_SCHEMA))
        except WorkflowError as error:
            raise WorkflowError(f"grid cell {name} is invalid:\n{error}") from None
        yield name, recipe, overrides


def all_experiments():
    """Experiments by name: the listed recipes, then every grid cell.

    Also returns, per experiment, the recipe file it comes from and the settings a grid cell changes in it.
    """
    experiments = {name: load_recipe(name) for name in config["experiments"]}
    files = {name: recipe_path(name) for name in experiments}
    overrides = {name: {} for name in experiments}
    for grid in config.get("grids", []):
        for name, recipe, changed in grid_cells(grid):
            if name in experiments:
                raise WorkflowError(
                    f"experiment {name} is declared twice (in experiments or in two grids)"
                )
            experiments[name] = recipe
            files[name] = recipe_path(grid["recipe"])
            overrides[name] = changed
    return experiments, files, overrides


EXPERIMENTS, RECIPE_FILES, OVERRIDES = all_experiments()


def shared_by_name(section):
    """Map a shared artifact's name (a model or a dataset) to its settings: one name, one definition."""
    seen = {}
    for experiment, recipe in EXPERIMENTS.items():
        settings = recipe[section]
        first = seen.setdefault(settings["name"], (experiment, settings))
        if first[1] != settings:
            raise WorkflowError(
                f"{section} {settings['name']!r} is defined differently in experiments {first[0]} and "
                f"{experiment} ({RECIPE_FILES[first[0]]}, {RECIPE_FILES[experiment]}); make the two the "
                "same or give one of them another name"
            )
    return {name: settings for name, (_, settings) in seen.items()}


MODELS = shared_by_name("model")
DATASETS = shared_by_name("data")


def split_id(recipe):
    split = recipe["split"]
    return f"seed{split['seed']}-eval{split['eval_size']:g}"


def alternatives(names):
    return "|".join(sorted({re.escape(name) for name in names}))


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


SUMMARY = {
    part: f"results/summary/summary.{part}" for part in ("csv", "md", "tex", "html")
}


def all_reports():
    """Every experiment's report and the summary table across experiments."""
    return [f"results/{name}/report/report.md" for name in EXPERIMENTS] + list(
        SUMMARY.values()
    )


# ---- probe files -----------------------------------------------------------------------------------------

PROBES = {}


def load_probes(path):
    """A probe file's probes, validated once; a bad file stops the run before any job."""
    if path not in PROBES:
        if not Path(path).is_file():
            raise WorkflowError(f"probe file {path} does not exist")
        probes = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        try:
            validate(probes, str(PROBES_SCHEMA))
        except WorkflowError as error:
            raise WorkflowError(f"probe file {path} is invalid:\n{error}") from None
        for key in ("id", "prompt"):
            values = [probe[key] for probe in probes["probes"]]
            if len(set(values)) != len(values):
                raise WorkflowError(
                    f"probe file {path}: two probes have the same {key}"
                )
        PROBES[path] = probes["probes"]
    return PROBES[path]


for _recipe in EXPERIMENTS.values():
    load_probes(_recipe["evaluation"]["probes"])


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


# Evaluation settings used by the scoring step, not by generation.
SCORING_KEYS = {"code_timeout_s": "timeout_s", "code_memory_mb": "memory_mb"}


def evaluation_flags(wildcards):
    """Generation settings; the probe prompts (not their tests, which only scoring reads)."""
    settings = dict(EXPERIMENTS[wildcards.experiment]["evaluation"])
    for key in SCORING_KEYS:
        del settings[key]
    settings["prompt"] = [
        probe["prompt"] for probe in load_probes(settings.pop("probes"))
    ]
    return cli_flags(settings)


def scoring_flags(wildcards):
    settings = EXPERIMENTS[wildcards.experiment]["evaluation"]
    return cli_flags({flag: settings[key] for key, flag in SCORING_KEYS.items()})


def probes_file(wildcards):
    return EXPERIMENTS[wildcards.experiment]["evaluation"]["probes"]


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


def base_evaluation_owner(experiment):
    """The experiment whose folder holds this experiment's base-model evaluation.

    Experiments that differ only in LoRA or training settings (grid cells, say) would evaluate the same base
    model on the same eval split the same way: the first of them evaluates it, and all of them use it.
    """

    def inputs(name):
        recipe = EXPERIMENTS[name]
        return (
            recipe["model"]["name"],
            templated(recipe, "eval"),
            json.dumps(recipe["evaluation"], sort_keys=True),
        )

    return next(name for name in EXPERIMENTS if inputs(name) == inputs(experiment))


def evaluation_outputs(experiment):
    """The files each evaluation of an experiment leaves, by role and model (base_metrics, ...)."""
    files = {
        "metrics": "metrics.json",
        "generations": "generations.jsonl",
        "eval_answers": "eval_answers.jsonl",
        "scores": "scores.json",
    }
    folders = {
        "base": f"results/{base_evaluation_owner(experiment)}/eval/base",
        "tuned": f"results/{experiment}/eval/tuned",
    }
    return {
        f"{which}_{role}": f"{folder}/{name}"
        for which, folder in folders.items()
        for role, name in files.items()
    }


def report_inputs(wildcards):
    recipe = EXPERIMENTS[wildcards.experiment]
    split_dir = f"{data_dir(recipe)}/{split_id(recipe)}"
    run = f"results/{wildcards.experiment}"
    return {
        "recipe": str(RECIPE_FILES[wildcards.experiment]),
        "convert_summary": f"{data_dir(recipe)}/convert_summary.json",
        "split_summary": f"{split_dir}/split_summary.json",
        "history": f"{run}/train/history.csv",
        "train_summary": f"{run}/train/summary.json",
        **evaluation_outputs(wildcards.experiment),
        "model": model_dir(recipe),
    }


def experiment_settings(wildcards):
    """The experiment's full settings (a grid cell's differ from its recipe file) as JSON, and its overrides."""
    return json.dumps(
        {
            "recipe": EXPERIMENTS[wildcards.experiment],
            "overrides": OVERRIDES[wildcards.experiment],
        },
        ensure_ascii=False,
        sort_keys=True,
    )


def summary_inputs(wildcards):
    """Per experiment, in the order of EXPERIMENTS: its settings and counts, and its metrics table."""
    return {
        "experiment": [
            f"results/{name}/report/experiment.json" for name in EXPERIMENTS
        ],
        "metrics": [f"results/{name}/report/metrics.csv" for name in EXPERIMENTS],
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
    # The base model's evaluation may be another experiment's (base_evaluation_owner).
    bench_base = f"results/benchmarks/{base_evaluation_owner(wildcards.experiment)}"
    model = recipe["model"]["name"]
    return {
        "sources": [
            recipe["data"]["path"],
            str(RECIPE_FILES[wildcards.experiment]),
            probes_file(wildcards),
            *(script_path(path.stem) for path in sorted(SCRIPTS.glob("*.py"))),
        ],
        "products": [
            *under(data, "messages.jsonl", "rejects.jsonl", "convert_summary.json"),
            *under(split_dir, "train.jsonl", "eval.jsonl", "split_summary.json"),
            templated(recipe, "train"),
            templated(recipe, "eval"),
            model_dir(recipe),
            *under(f"{run}/train", "adapter", "history.csv", "summary.json"),
            *evaluation_outputs(wildcards.experiment).values(),
            *under(
                f"{run}/report",
                "report.md",
                "report.html",
                "metrics.csv",
                "loss_curve.png",
            ),
            *under(
                f"{run}/report",
                "generations.csv",
                "eval_answers.csv",
                "experiment.json",
            ),
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
            *under(bench_base, "evaluate.base.tsv", "score_answers.base.tsv"),
            *under(bench_run, "evaluate.tuned.tsv", "score_answers.tuned.tsv"),
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
