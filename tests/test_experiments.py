"""alpaca_lora.experiments and alpaca_lora.layout: the experiment model, without Snakemake."""

from __future__ import annotations

import copy
import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

from alpaca_lora import layout
from alpaca_lora.experiments import ConfigError, Experiments, cli_flags, grid_value_text, split_id
from conftest import ROOT

DEFAULT = yaml.safe_load(
    (ROOT / "config/recipes/smollm2-135m-alpaca-sample.yaml").read_text(encoding="utf-8")
)


@pytest.fixture
def recipes(tmp_path, monkeypatch) -> Path:
    """A recipes folder holding the embedded default as `a`; the test runs in tmp_path."""
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "recipes"
    folder.mkdir()
    (tmp_path / "probes.yaml").write_text((ROOT / "config/probes.yaml").read_text(encoding="utf-8"))
    write_recipe(folder, "a", DEFAULT)
    return folder


def write_recipe(folder: Path, name: str, recipe: dict, **changes: dict) -> None:
    recipe = copy.deepcopy(recipe)
    recipe["evaluation"]["probes"] = "probes.yaml"
    for section, values in changes.items():
        recipe[section].update(values)
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(recipe, allow_unicode=True), encoding="utf-8")


def experiments(folder: Path, names: list[str], grids: list | None = None) -> Experiments:
    return Experiments({"experiments": names, "grids": grids or [], "recipes_dir": str(folder)})


def test_one_recipe(recipes):
    found = experiments(recipes, ["a"])
    assert found.names() == ["a"]
    dataset = found["a"].wildcards["dataset"]
    assert re.fullmatch(r"alpaca-zh-en-sample/[0-9a-f]{8}", dataset)
    assert found["a"].wildcards == {
        "experiment": "a",
        "dataset": dataset,
        "split": "seed42-eval32",
        "model": "smollm2-135m-instruct",
    }
    assert list(found.models) == ["smollm2-135m-instruct"] and list(found.datasets) == [dataset]
    assert found.base_evaluation_owner("a") == "a"
    assert found.training_settings("a") == {
        "lora": DEFAULT["lora"],
        "training": DEFAULT["training"],
        "resources": DEFAULT["resources"],
    }


def test_schema_defaults_are_filled_in(recipes):
    recipe = copy.deepcopy(DEFAULT)
    for key in ("format", "trim_whitespace", "drop_duplicates"):
        del recipe["data"][key]
    write_recipe(recipes, "old", recipe, data={"name": "other"})
    data = experiments(recipes, ["old"])["old"].recipe["data"]
    assert (data["format"], data["trim_whitespace"], data["drop_duplicates"]) == ("auto", False, "none")


def test_a_missing_recipe_and_a_bad_value_are_named(recipes):
    with pytest.raises(ConfigError, match="recipe file .*nope.yaml does not exist"):
        experiments(recipes, ["nope"])
    write_recipe(recipes, "bad", DEFAULT, training={"learning_rate": -1})
    with pytest.raises(ConfigError, match=r"bad.yaml: training.learning_rate: -1 is less than or equal"):
        experiments(recipes, ["bad"])


@pytest.mark.parametrize(
    ("section", "change", "message"),
    [
        (
            "training",
            {"learning_rat": 1e-4},
            "training.learning_rat: unknown key; did you mean learning_rate?",
        ),
        (
            "model",
            {"source": {"kind": "hubb"}},
            "model.source.kind: 'hubb' is not one of gguf, hub, local; did you mean hub?",
        ),
        (
            "model",
            {"source": {"kind": "hub", "repo_id": "a/b"}},
            "model.source.revision: missing; a hub source needs a pinned revision",
        ),
        (
            "data",
            {"drop_duplicates": "exactt"},
            "data.drop_duplicates: 'exactt' is not one of none, exact, near; did you mean exact?",
        ),
        (
            "lora",
            {"target_modules": "all_linear"},
            "lora.target_modules: 'all_linear' is not 'all-linear' or a "
            "list of strings; did you mean all-linear?",
        ),
        (
            "lora",
            {"rank": 8},
            "lora.rank: unknown key (allowed: r, lora_alpha, lora_dropout, target_modules)",
        ),
    ],
)
def test_a_recipe_mistake_is_one_line_with_what_is_allowed(recipes, section, change, message):
    recipe = copy.deepcopy(DEFAULT)
    if section == "training":
        recipe["training"]["learning_rat"] = recipe["training"].pop("learning_rate")
    else:
        recipe[section].update(change)
    write_recipe(recipes, "bad", recipe)
    with pytest.raises(ConfigError) as raised:
        experiments(recipes, ["bad"])
    text = str(raised.value)
    assert "\n" not in text and text.startswith(f"recipe {recipes / 'bad.yaml'}: {message}"), text


def test_a_config_mistake_is_one_line(recipes):
    with pytest.raises(ConfigError, match=r"^c.yaml: experiment: unknown key; did you mean experiments\?$"):
        Experiments({"experiment": ["a"], "recipes_dir": str(recipes)}, config_file="c.yaml")
    reserved = r"^c.yaml: experiments\[1\]: 'benchmarks' is reserved: results/ has a shared folder"
    with pytest.raises(ConfigError, match=reserved):
        Experiments({"experiments": ["a", "benchmarks"], "recipes_dir": str(recipes)}, config_file="c.yaml")


def test_reserved_names_are_the_shared_folders_of_results():
    """An experiment's folder is results/<name>: no name may be one of the shared folders."""
    schema = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text(encoding="utf-8"))
    reserved = set(schema["$defs"]["name"]["not"]["enum"])
    patterns = [p for outputs in layout.OUTPUTS.values() for p in outputs.values()]
    patterns += [layout.log("summary"), layout.benchmark("summary"), "results/report.html"]
    shared = {p.split("/")[1].split(".")[0] for p in patterns if not p.startswith(layout.RUN)}
    assert reserved == shared


def test_grid_values_read_as_yaml_1_2(recipes):
    """1e-4 in config.yaml and every number given with --config reach the grid as strings: numbers again."""
    grid = {"recipe": "a", "vary": {"training.learning_rate": ["1e-4", "3e-4"], "lora.r": ["8"]}}
    found = experiments(recipes, [], [grid])
    assert found.names() == [
        "a--training.learning_rate=0.0001--lora.r=8",
        "a--training.learning_rate=0.0003--lora.r=8",
    ]
    cell = found["a--training.learning_rate=0.0001--lora.r=8"]
    assert cell.recipe["training"]["learning_rate"] == 1e-4 and cell.recipe["lora"]["r"] == 8


def test_grid_cells_are_named_by_their_settings_and_share_the_base_evaluation(recipes):
    grid = {"recipe": "a", "vary": {"lora.r": [4, 8], "training.seed": [1, 2]}}
    found = experiments(recipes, [], [grid])
    assert found.names() == [f"a--lora.r={r}--training.seed={s}" for r in (4, 8) for s in (1, 2)]
    cell = found["a--lora.r=8--training.seed=2"]
    assert cell.overrides == {"lora.r": 8, "training.seed": 2}
    assert cell.recipe["lora"]["r"] == 8 and cell.recipe["training"]["seed"] == 2
    assert "Grid cell: lora.r = 8, training.seed = 2" in cell.recipe["description"]
    assert cell.recipe_file == recipes / "a.yaml"
    assert {found.base_evaluation_owner(name) for name in found.names()} == {"a--lora.r=4--training.seed=1"}


def test_an_evaluation_setting_in_a_grid_gets_its_own_base_evaluation(recipes):
    grid = {"recipe": "a", "vary": {"evaluation.max_new_tokens": [8, 16]}}
    found = experiments(recipes, [], [grid])
    assert [found.base_evaluation_owner(name) for name in found.names()] == found.names()


def test_grid_mistakes_are_named(recipes):
    with pytest.raises(ConfigError, match="'lora.rank' is not a setting of"):
        experiments(recipes, [], [{"recipe": "a", "vary": {"lora.rank": [2]}}])
    with pytest.raises(ConfigError, match="grid cell a--lora.r=0: lora.r: 0 is less than the minimum"):
        experiments(recipes, [], [{"recipe": "a", "vary": {"lora.r": [0]}}])
    with pytest.raises(ConfigError, match="declared twice"):
        grid = {"recipe": "a", "vary": {"lora.r": [4]}}
        experiments(recipes, [], [grid, grid])


def test_shared_data_is_keyed_by_what_decides_it(recipes):
    """Same data.name, other cleaning: another folder, so that neither overwrites what the other's results
    came from; the same settings (spelled out or left at their defaults) share one."""
    write_recipe(recipes, "b", DEFAULT, data={"trim_whitespace": False})
    write_recipe(recipes, "c", DEFAULT)
    found = experiments(recipes, ["a", "b", "c"])
    a, b, c = (found[name].wildcards["dataset"] for name in "abc")
    assert a == c and a != b and a.split("/")[0] == b.split("/")[0] == "alpaca-zh-en-sample"
    assert sorted(found.datasets) == sorted({a, b}) and found.datasets[b]["trim_whitespace"] is False
    assert found.split_settings(b, "seed42-eval32") == DEFAULT["split"]
    # Leaving a setting at its default out of the recipe does not change the key.
    recipe = copy.deepcopy(DEFAULT)
    recipe["data"].update(trim_whitespace=False, drop_duplicates="none")
    write_recipe(recipes, "d", recipe)
    spelled_out = experiments(recipes, ["d"])["d"].wildcards["dataset"]
    del recipe["data"]["trim_whitespace"], recipe["data"]["drop_duplicates"]
    write_recipe(recipes, "e", recipe)
    assert experiments(recipes, ["e"])["e"].wildcards["dataset"] == spelled_out


def test_one_model_name_one_definition(recipes):
    """A base model folder is refused rather than overwritten: in one run, and against a folder on disk."""
    sample = {"path": str(ROOT / "data/raw/alpaca_zh_en_sample.json")}
    write_recipe(recipes, "a", DEFAULT, data=sample)
    write_recipe(recipes, "b", DEFAULT, data=sample, model={"dtype": "bfloat16"})
    with pytest.raises(
        ConfigError, match="model 'smollm2-135m-instruct' is defined differently in experiments a"
    ):
        experiments(recipes, ["a", "b"])
    folder = Path(layout.MODEL.format(model="smollm2-135m-instruct"))
    folder.mkdir(parents=True)
    made = {**DEFAULT["model"]["source"], "file": "/elsewhere/SmolLM2-135M-Instruct.Q4_1.gguf"}
    (folder / "source.json").write_text(json.dumps({**made, "dtype": "float32", "trust_remote_code": False}))
    experiments(recipes, ["a"]).check_sources()  # the same source (an older folder records a full path)
    with pytest.raises(ConfigError, match="was made with dtype 'float32', the recipe asks for 'bfloat16'"):
        experiments(recipes, ["b"]).check_sources()


def test_duplicate_probes_are_refused(recipes):
    probes = yaml.safe_load(Path("probes.yaml").read_text(encoding="utf-8"))
    probes["probes"][1]["id"] = probes["probes"][0]["id"]
    Path("probes.yaml").write_text(yaml.safe_dump(probes, allow_unicode=True), encoding="utf-8")
    with pytest.raises(ConfigError, match="probe file probes.yaml: two probes have the same id"):
        experiments(recipes, ["a"])


def test_jobs_name_every_output_of_an_experiment_once(recipes):
    grid = {"recipe": "a", "vary": {"lora.r": [4, 8]}}
    found = experiments(recipes, [], [grid])
    second = "a--lora.r=8"
    products = found.products(second)
    assert len(products) == len(set(products))
    assert "results/a--lora.r=4/eval/base/metrics.json" in products  # the shared base evaluation
    assert "results/a--lora.r=8/eval/tuned/scores.json" in products
    dataset = found[second].wildcards["dataset"]
    assert f"results/data/{dataset}/seed42-eval32/smollm2-135m-instruct/eval.templated.jsonl" in products
    assert not any("{" in path for path in products)
    rules = {rule for rule, _ in found.jobs(second)}
    assert rules == set(layout.OUTPUTS) - {
        "summary",
        "manifest",
        "lm_eval",
    }  # lm_eval: with evaluation.lm_eval
    assert found.timings(second) == [layout.benchmark(r).format(**w) for r, w in found.jobs(second)]
    targets = found.targets()
    assert "results/summary/summary.csv" in targets and f"results/{second}/manifest.json" in targets


def test_lm_eval_runs_for_base_and_tuned_only_when_the_recipe_asks(recipes):
    settings = {"tasks": ["alpaca_heldout_choice"], "limit": 4}
    write_recipe(recipes, "b", DEFAULT, evaluation={"lm_eval": settings})
    found = experiments(recipes, ["a", "b"])
    assert [w["which"] for rule, w in found.jobs("b") if rule == "lm_eval"] == ["base", "tuned"]
    assert not [rule for rule, _ in found.jobs("a") if rule == "lm_eval"]
    assert found.base_evaluation_owner("b") == "b", "another evaluation section: its own base evaluation"
    flags = found.lm_eval_flags("b")
    assert flags == "--limit 4 --apply-chat-template --batch-size 8 --task alpaca_heldout_choice --seed 42"
    assert "lm_eval" not in found.evaluation_flags("b") and "lm-eval" not in found.evaluation_flags("b")


def test_own_lm_eval_tasks_are_inputs_and_sources(recipes):
    own = Path("own_tasks/sub")
    own.mkdir(parents=True)
    (own / "mine.yaml").write_text("task: mine\n", encoding="utf-8")
    settings = {"tasks": ["mine"], "include_path": ["own_tasks"]}
    write_recipe(recipes, "b", DEFAULT, evaluation={"lm_eval": settings})
    found = experiments(recipes, ["b"])
    assert found.lm_eval_task_files("b") == ["own_tasks/sub/mine.yaml"]
    assert "own_tasks/sub/mine.yaml" in found.sources("b")
    assert "--include-path own_tasks" in found.lm_eval_flags("b")


def test_layout_defines_each_output_once():
    patterns = [pattern for outputs in layout.OUTPUTS.values() for pattern in outputs.values()]
    assert len(patterns) == len(set(patterns))
    assert set(layout.STEP_KEYS) == set(layout.OUTPUTS)
    assert all(pattern.startswith("results/") for pattern in patterns)
    known = {"dataset", "split", "model", "part", "experiment", "which"}
    for pattern in patterns + list(layout.STEP_KEYS.values()):
        assert set(re.findall(r"\{(\w+)\}", pattern)) <= known, pattern
    assert layout.glob("evaluate", "metrics") == "results/*/eval/*/metrics.json"
    assert layout.files("train_lora", experiment="x")["adapter"] == "results/x/train/adapter"


def test_flags_and_names():
    assert cli_flags({"trim_whitespace": False, "format": "auto", "max_record_chars": None}) == (
        "--no-trim-whitespace --format auto"
    )
    assert cli_flags({"placeholder_inputs": ["N/A", "No input"]}) == (
        "--placeholder-inputs N/A --placeholder-inputs 'No input'"
    )
    assert cli_flags({"targets": ["q", "v"], "packing": True}) == "--targets q v --packing"
    assert [grid_value_text(v) for v in (True, 3e-4, ["q_proj", "v_proj"])] == [
        "true",
        "0.0003",
        "q_proj+v_proj",
    ]
    assert split_id({"split": {"seed": 7, "eval_size": 0.1}}) == "seed7-eval0.1"


def test_data_sources_reach_the_step_as_flags(recipes):
    sources = [
        {"path": "a.json", "columns": {"instruction": "prompt"}},
        {"hub": {"repo_id": "org/set", "revision": "abc", "split": "train"}, "sample": 0.5},
    ]
    recipe = copy.deepcopy(DEFAULT)
    del recipe["data"]["path"]
    write_recipe(recipes, "mix", recipe, data={"name": "mix", "sources": sources, "roles": {"user": ["q"]}})
    found = experiments(recipes, ["a", "mix"])
    mix, sample = found["mix"].dataset, found["a"].dataset
    assert found.data_files(mix) == ["a.json"] and found.data_files(sample) == [DEFAULT["data"]["path"]]
    assert found.sources("mix")[0] == "a.json"
    flags = found.conversion_flags(mix)
    assert flags.startswith(
        """--source '{"columns": {"instruction": "prompt"}, "path": "a.json"}' --source"""
    )
    assert """--roles '{"user": ["q"]}'""" in flags and "--input" not in flags
    assert found.conversion_flags(sample).startswith(f"--input {DEFAULT['data']['path']} ")
    recipe["data"]["path"] = "b.json"
    write_recipe(recipes, "both", recipe, data={"name": "both", "sources": sources})
    with pytest.raises(ConfigError, match="data"):
        experiments(recipes, ["both"])


def test_sources_that_cannot_work_are_named_before_any_job(recipes, tmp_path):
    """check_sources (run when the DAG is built): the data file, eval_size against its records, the model."""
    Path("data.json").write_text('[{"instruction": "a", "output": "b"}, {"instruction": "c", "output": "d"}]')
    Path("folder").mkdir()
    cases = {
        "dir": ({"data": {"path": "folder"}}, "data.path: folder is a directory, not a data file"),
        "gone": ({"data": {"path": "gone.json"}}, "data.path: gone.json does not exist"),
        "big": (
            {"data": {"path": "data.json"}, "split": {"eval_size": 2}},
            "split.eval_size: 2 records held out, but data.json has 2; give fewer, or a fraction below 1",
        ),
        "model": (
            {"model": {"source": {"kind": "local", "path": "folder"}}},
            "model.source.path: folder is not a model folder (no config.json there)",
        ),
        "package": (
            {
                "model": {
                    "source": {
                        "kind": "gguf",
                        "package": "no_such_package_xyz",
                        "file": "m.gguf",
                        "sha256": "0" * 64,
                    }
                }
            },
            "model.source.package: no_such_package_xyz is not installed",
        ),
    }
    for name, (changes, message) in cases.items():
        sample = str(ROOT / "data/raw/alpaca_zh_en_sample.json")
        write_recipe(recipes, name, DEFAULT, data={"name": name, "path": sample}, model={"name": name})
        recipe = yaml.safe_load((recipes / f"{name}.yaml").read_text(encoding="utf-8"))
        for section, values in changes.items():
            recipe[section].update(values)
        (recipes / f"{name}.yaml").write_text(yaml.safe_dump(recipe, allow_unicode=True), encoding="utf-8")
        found = experiments(recipes, [name])
        with pytest.raises(ConfigError) as raised:
            found.check_sources()
        assert str(raised.value).startswith(f"recipe {recipes / name}.yaml: {message}"), str(raised.value)
    (Path("data.json")).write_text(json.dumps([{"instruction": "a", "output": "b"}] * 3))
    experiments(recipes, ["big"]).check_sources()  # 2 of 3 held out: fine


def test_a_missing_source_file_is_named_before_any_job(recipes):
    recipe = copy.deepcopy(DEFAULT)
    del recipe["data"]["path"]
    sources = [{"path": str(ROOT / "data/raw/alpaca_zh_en_sample.json")}, {"path": "gone.json"}]
    write_recipe(recipes, "mix", recipe, data={"name": "mix", "sources": sources})
    with pytest.raises(ConfigError, match=r"data.sources\[1\].path: gone.json does not exist"):
        experiments(recipes, ["mix"]).check_sources()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"problems": ["HumanEval/0", "HumanEval/999"]},
            "problems: 'HumanEval/999' is not a HumanEval task id",
        ),
        ({"problems": ["MBPP/1"]}, "problems[0]: 'MBPP/1' does not match"),
        ({"problems": 200}, "problems: 200 asked for, HumanEval has 164"),
        ({"n": 4, "k": [1, 10]}, "k: pass@10 needs at least 10 samples per problem, n is 4"),
        ({"temperature": 0}, "temperature: 0 is less than or equal to the minimum of 0"),
        ({"top_p": 1.5}, "top_p: 1.5 is greater than the maximum of 1"),
        ({"n": -1}, "n: -1 is less than the minimum of 0"),
    ],
)
def test_humaneval_mistakes_stop_before_any_job_with_file_and_key(recipes, change, message):
    recipe = copy.deepcopy(DEFAULT)
    recipe["evaluation"]["humaneval"].update(change)
    write_recipe(recipes, "bad", recipe)
    with pytest.raises(ConfigError) as raised:
        experiments(recipes, ["bad"])
    text = str(raised.value)
    assert "\n" not in text and text.startswith(f"recipe {recipes / 'bad.yaml'}: evaluation.humaneval."), text
    assert message in text, text


def test_humaneval_settings_reach_generation_and_scoring(recipes):
    recipe = copy.deepcopy(DEFAULT)
    recipe["evaluation"]["humaneval"].update(n=4, k=[1, 2])
    write_recipe(recipes, "a", recipe)
    found = experiments(recipes, ["a"])
    flags = shlex.split(found.evaluation_flags("a"))
    settings = json.loads(flags[flags.index("--humaneval") + 1])
    assert settings == recipe["evaluation"]["humaneval"] and "--bootstrap-resamples" not in flags
    scoring = shlex.split(found.scoring_flags("a"))
    assert scoring[scoring.index("--pass-at-k") + 1 : scoring.index("--pass-at-k") + 3] == ["1", "2"]
