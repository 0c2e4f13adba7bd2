"""The real Snakemake workflow, end to end, on a tiny model and tiny data in a temporary folder."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from alpaca_lora.common import sha256_file
from alpaca_lora.lockfiles import LOCKFILES
from alpaca_lora.testing import (
    SNAKEMAKE,
    jobs_planned,
    make_workdir,
    snakemake,
    tiny_recipe,
    workflow_env,
)
from conftest import HUB_COMMIT, ROOT, git


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_llama, small_alpaca) -> Path:
    recipe = tiny_recipe("smollm2-135m-alpaca-sample.yaml", tiny_llama, small_alpaca)
    workdir = make_workdir(tmp_path_factory.mktemp("e2e"), {"tiny": recipe})
    snakemake(workdir)
    return workdir


def test_end_to_end_run_writes_every_artifact(finished_run):
    run = finished_run / "results" / "tiny"
    report = (run / "report" / "report.md").read_text(encoding="utf-8")
    base = json.loads((run / "eval" / "base" / "metrics.json").read_text())
    tuned = json.loads((run / "eval" / "tuned" / "metrics.json").read_text())
    assert f"{base['eval_loss']:.4f}" in report and f"{tuned['eval_loss']:.4f}" in report
    assert "写一个Python函数计算阶乘" in report
    # The factorial question's test result for both models, and the metrics with what they were computed on.
    factorial = next(line for line in report.splitlines() if line.startswith("| 写一个Python函数计算阶乘 |"))
    assert factorial.count("/4 tests)") == 2
    assert "| pass@1 (code probes) |" in report and "| chrF |" in report and "| ROUGE-L F1 (x100) |" in report
    assert "first 4 eval records; greedy, max_new_tokens 6" in report
    scores = json.loads((run / "eval" / "tuned" / "scores.json").read_text())
    assert scores["reference"]["records"] == 4 and scores["code"]["problems"] == 5
    assert len((run / "eval" / "base" / "eval_answers.jsonl").read_text().splitlines()) == 4
    # HumanEval on the recipe's subset (2 problems in the tiny recipe), per problem, linked from the report.
    for which in ("base", "tuned"):
        problems = [
            json.loads(line) for line in (run / "eval" / which / "humaneval.jsonl").read_text().splitlines()
        ]
        assert [p["task_id"] for p in problems] == ["HumanEval/0", "HumanEval/1"]
        assert all(p["passed"] or p["failure"] for p in problems)
    assert "| HumanEval pass@1 (greedy) |" in report and "(../eval/tuned/humaneval.jsonl)" in report
    # Every difference carries its paired interval and n, in the report and the summary.
    eval_loss = next(line for line in report.splitlines() if line.startswith("| eval loss (answer tokens) |"))
    assert eval_loss.count("[") == 3 and "| 8 |" in eval_loss
    page = (run / "report" / "report.html").read_text(encoding="utf-8")
    assert "pass@1" in page and "data:image/png;base64," in page
    summary = (finished_run / "results" / "summary" / "summary.csv").read_text().splitlines()
    assert len(summary) == 2 and summary[1].startswith("tiny,")
    assert "eval_loss_difference_low" in summary[0] and "humaneval_pass@1_tuned" in summary[0]
    assert (run / "report" / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    [converted] = (finished_run / "results/data/small").glob("*/convert_summary.json")
    summary = json.loads(converted.read_text())
    assert summary["read"] == summary["kept"] + summary["rejected"] == 40
    # The recipe's tracker (dvclive) and the merged model with its card.
    assert json.loads((run / "train/tracking/dvclive/metrics.json").read_text())["eval"]["loss"] > 0
    check = json.loads((run / "export/merge_check.json").read_text())
    assert check["max_abs_logit_difference"] <= check["tolerance"]
    assert "## Merge check" in (run / "export/merged/README.md").read_text()
    for step in ["convert_to_messages", "prepare_base_model", "train_lora", "evaluate.base", "make_report"]:
        logs = list((finished_run / "results" / "logs").rglob(f"{step}.log"))
        assert logs and " - INFO - " in logs[0].read_text(), f"no log for {step}"


def test_second_run_has_nothing_to_do(finished_run):
    assert jobs_planned(finished_run) == {}


def test_another_experiment_run_alone_overwrites_nothing_and_keeps_every_row(finished_run, tmp_path):
    """After the finished run, a second recipe with the same data.name but other cleaning, run alone with
    --config: the first experiment's data is untouched, and the summary keeps the first experiment's row."""
    workdir = tmp_path / "work"
    shutil.copytree(finished_run, workdir)  # modification times kept: Snakemake sees a finished run
    recipe = yaml.safe_load((workdir / "config/recipes/tiny.yaml").read_text())
    recipe["data"]["trim_whitespace"] = not recipe["data"]["trim_whitespace"]
    recipe["training"]["max_steps"] = 2
    (workdir / "config/recipes/other.yaml").write_text(yaml.safe_dump(recipe, allow_unicode=True))
    before = {p: p.read_bytes() for p in (workdir / "results/data").rglob("*") if p.is_file()}
    snakemake(workdir, "--config", "experiments=[other]")
    assert all(path.read_bytes() == content for path, content in before.items())
    assert len(list((workdir / "results/data/small").glob("*/messages.jsonl"))) == 2
    with open(workdir / "results/summary/summary.csv", newline="") as handle:
        assert [row["experiment"] for row in csv.DictReader(handle)] == ["other", "tiny"]


def test_changing_an_evaluation_setting_reruns_evaluation_not_training(finished_run, tmp_path):
    recipe_file = finished_run / "config" / "recipes" / "tiny.yaml"
    original = recipe_file.read_text()
    recipe = yaml.safe_load(original)
    recipe["evaluation"]["max_new_tokens"] = 5
    recipe_file.write_text(yaml.safe_dump(recipe, allow_unicode=True))
    try:
        planned = jobs_planned(finished_run)
        assert planned.get("evaluate") == 2 and planned.get("report") == 1
        assert "train_lora" not in planned and "apply_chat_template" not in planned
    finally:
        recipe_file.write_text(original)


def test_editing_a_probes_tests_rescores_without_generating_again(finished_run):
    probes_file = finished_run / "config" / "probes.yaml"
    original = probes_file.read_text(encoding="utf-8")
    probes = yaml.safe_load(original)
    probes["probes"][0]["tests"].append("assert factorial(3) == 6")
    probes_file.write_text(yaml.safe_dump(probes, allow_unicode=True), encoding="utf-8")
    try:
        planned = jobs_planned(finished_run)
    finally:
        probes_file.write_text(original, encoding="utf-8")
    assert planned.get("score_answers") == 2 and planned.get("report") == 1 and planned.get("summary") == 1
    assert "evaluate" not in planned


def test_a_hostile_answer_fails_and_leaks_nothing_into_any_file(finished_run, tmp_path):
    """A model answer that reads a planted file and /etc/shadow: its tests fail, and nothing the workflow
    writes after it (scores, report, summary, manifest, logs) holds what it tried to read."""
    secret = tmp_path / "planted" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("TOP-SECRET-FROM-THE-WORKFLOW-TEST\n")
    hidden = [b"TOP-SECRET-FROM-THE-WORKFLOW-TEST"]
    try:
        hidden += [
            line.encode() for line in Path("/etc/shadow").read_text().splitlines()[:3] if len(line) > 8
        ]
    except OSError:
        pass
    workdir = tmp_path / "copy"
    shutil.copytree(finished_run, workdir, symlinks=True)
    generations = workdir / "results/tiny/eval/tuned/generations.jsonl"
    records = [json.loads(line) for line in generations.read_text(encoding="utf-8").splitlines()]
    hostile = next(record for record in records if record["prompt"] == "写一个Python函数计算阶乘")
    hostile["answer"] = (
        "```python\ndef factorial(n):\n"
        f"    return len(open({str(secret)!r}).read() + open('/etc/shadow').read())\n```"
    )
    generations.write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8"
    )
    snakemake(workdir)

    scores = json.loads((workdir / "results/tiny/eval/tuned/scores.json").read_text(encoding="utf-8"))
    probe = next(p for p in scores["code"]["per_probe"] if p["id"] == "factorial-zh")
    assert probe["status"] == "failed" and probe["tests_passed"] == 0 and probe["kind"] == "PermissionError"
    layers = " + ".join(scores["code"]["isolation"]["layers"])
    assert f"layers: {layers})" in (workdir / "results/tiny/report/report.md").read_text(encoding="utf-8")
    for path in workdir.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            assert not any(text in content for text in hidden), f"{path} holds what the answer read"


def test_a_bad_probe_file_stops_before_any_job(finished_run):
    probes_file = finished_run / "config" / "probes.yaml"
    original = probes_file.read_text(encoding="utf-8")
    probes_file.write_text(original.replace("- assert factorial(0) == 1", "- factorial(0) == 1", 1))
    try:
        result = snakemake(finished_run, "--dry-run", check=False)
    finally:
        probes_file.write_text(original, encoding="utf-8")
    assert result.returncode != 0
    assert "probes.yaml" in result.stdout + result.stderr and "assert" in result.stdout + result.stderr


def test_html_report(finished_run):
    snakemake(finished_run, "--report", "results/report.html")
    page = (finished_run / "results" / "report.html").read_text(encoding="utf-8")
    assert len(page) > 10_000
    for shown in ("report.html", "metrics.csv", "loss_curve.png", "eval_answers.csv", "summary.tex"):
        assert shown in page, shown


class Said(list):
    """A logger that keeps what it was told."""

    def info(self, message: str) -> None:
        self.append(("info", message))

    def warning(self, message: str) -> None:
        self.append(("warning", message))


def test_a_cluster_run_ends_with_the_report_and_a_partial_one_warns(finished_run, tmp_path):
    from alpaca_lora.hooks import report_after_cluster_run

    said = Said()
    argv = ["snakemake", "--directory", str(finished_run), "--snakefile", str(finished_run / "Snakefile")]
    (finished_run / "results" / "report.html").unlink(missing_ok=True)
    assert not report_after_cluster_run(True, argv, said) and said == []  # local: make run writes it
    assert report_after_cluster_run(False, argv, said)
    assert (finished_run / "results" / "report.html").stat().st_size > 10_000
    # Nothing run yet (as after an --until run): a warning with the command, not a failure.
    empty = make_workdir(
        tmp_path, {"tiny": yaml.safe_load((finished_run / "config/recipes/tiny.yaml").read_text())}
    )
    argv = ["snakemake", "--directory", str(empty), "--snakefile", str(empty / "Snakefile")]
    assert not report_after_cluster_run(False, argv, said)
    assert said[-1][0] == "warning" and "--report results/report.html" in said[-1][1]
    assert not (empty / "results" / "report.html").exists()


def test_a_bad_recipe_value_stops_before_any_job(finished_run):
    recipe_file = finished_run / "config" / "recipes" / "tiny.yaml"
    original = recipe_file.read_text()
    recipe = yaml.safe_load(original)
    recipe["training"]["learning_rte"] = 0.1
    recipe_file.write_text(yaml.safe_dump(recipe, allow_unicode=True))
    try:
        result = snakemake(finished_run, "--dry-run", check=False)
    finally:
        recipe_file.write_text(original)
    assert result.returncode != 0
    # One line: the file, the key, what is wrong, the closest valid key; no traceback, no heading.
    said = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if "workflow specific profile" not in line
    ]
    assert said == [
        "recipe config/recipes/tiny.yaml: training.learning_rte: unknown key; did you mean learning_rate?"
    ]


def test_grid_values_on_the_command_line_read_as_yaml_1_2(finished_run):
    """--config gives Snakemake every value as a string, and YAML 1.1 reads 1e-4 as one: both are numbers."""
    grid = 'grids=[{"recipe": "tiny", "vary": {"training.learning_rate": [1e-4], "lora.r": [4]}}]'
    result = snakemake(finished_run, "--dry-run", "--config", grid)
    assert "results/tiny--training.learning_rate=0.0001--lora.r=4/train/adapter" in result.stdout


def test_an_unknown_experiment_is_named(finished_run):
    result = snakemake(finished_run, "--dry-run", "--config", "experiments=[nope]", check=False)
    assert result.returncode != 0
    assert "nope" in result.stdout + result.stderr and "does not exist" in result.stdout + result.stderr


def test_a_grid_on_a_setting_the_recipe_lacks_is_named(finished_run):
    grid = finished_run / "config" / "bad-grid.yaml"
    grid.write_text(yaml.safe_dump({"grids": [{"recipe": "tiny", "vary": {"lora.rank": [2, 4]}}]}))
    result = snakemake(finished_run, "--dry-run", "--configfile", str(grid), check=False)
    assert result.returncode != 0
    assert "'lora.rank' is not a setting of" in result.stdout + result.stderr


# ---- repeatability, provenance, secrets, bad data and interruption -------------------------------------

FAKE_TOKEN = "hf_FakeTokenForTheLeakTest0123456789abcd"


@pytest.fixture(scope="module")
def second_run(tmp_path_factory, tiny_llama, small_alpaca) -> tuple[Path, str]:
    """The finished run's experiment again, from a clean git work tree, with a (fake) Hub token set."""
    recipe = tiny_recipe("smollm2-135m-alpaca-sample.yaml", tiny_llama, small_alpaca)
    workdir = make_workdir(tmp_path_factory.mktemp("e2e-again"), {"tiny": recipe})
    (workdir / ".gitignore").write_text("results/\n.snakemake/\n__pycache__/\n")
    git(workdir, "init", "-q")
    git(workdir, "add", ".")
    git(workdir, "commit", "-q", "-m", "pipeline under test")
    result = snakemake(workdir, env=workflow_env(HF_TOKEN=FAKE_TOKEN))
    return workdir, result.stdout + result.stderr


def test_two_runs_of_the_same_config_are_byte_identical(finished_run, second_run):
    """Messages, split, templated text, the CPU-trained adapter and the greedy answers, byte for byte.

    The adapter is compared as the safetensors file itself, not tensor by tensor: equal bytes mean equal
    names, dtypes, shapes and values (safetensors writes no timestamps and orders tensors by name), and the
    file is what a user ships.
    """
    workdir, _ = second_run
    data = sorted((finished_run / "results" / "data" / "small").rglob("*.jsonl"))
    adapter = sorted((finished_run / "results" / "tiny" / "train" / "adapter").iterdir())
    answers = sorted((finished_run / "results" / "tiny" / "eval").rglob("generations.jsonl"))
    names = {path.name for path in data + adapter}
    assert {"messages.jsonl", "train.jsonl", "eval.jsonl", "train.templated.jsonl"} <= names
    assert "adapter_model.safetensors" in names
    for path in data + adapter + answers:
        relative = path.relative_to(finished_run)
        assert (workdir / relative).read_bytes() == path.read_bytes(), f"{relative} differs between runs"


def test_manifest_hashes_every_input_and_output(second_run, small_alpaca, tiny_llama):
    from importlib import metadata

    workdir, _ = second_run
    manifest = json.loads((workdir / "results/tiny/manifest.json").read_text(encoding="utf-8"))
    produced = [
        path
        for folder in ("results/data/small", "results/models/tiny", "results/tiny")
        for path in (workdir / folder).rglob("*")
        if path.is_file() and path.name != "manifest.json"
    ]
    assert set(manifest["outputs"]) == {str(path.relative_to(workdir)) for path in produced}
    for name, digest in manifest["outputs"].items():
        assert sha256_file(workdir / name) == digest, name
    assert manifest["inputs"][str(small_alpaca)] == sha256_file(small_alpaca)
    assert manifest["inputs"]["config/recipes/tiny.yaml"] == sha256_file(workdir / "config/recipes/tiny.yaml")
    scripts = {Path(name).name for name in manifest["inputs"] if name.endswith(".py")}
    assert {"convert_to_messages.py", "train_lora.py", "common.py", "write_manifest.py"} <= scripts

    written = yaml.safe_load((workdir / "config/recipes/tiny.yaml").read_text(encoding="utf-8"))
    assert manifest["recipe"] == written, "the shipped recipe states every key, so resolved = written"
    assert manifest["model"]["kind"] == "local" and manifest["model"]["path"] == str(tiny_llama)
    assert manifest["model"]["trust_remote_code"] is False
    assert manifest["code"] == {
        "commit": git(workdir, "rev-parse", "HEAD"),
        "dirty": False,
        "changed_paths": 0,
    }
    versions = manifest["packages"]["distributions"]
    for package in ("torch", "transformers", "trl", "peft", "snakemake"):
        assert versions[package] == metadata.version(package)
    steps = manifest["timings"]
    assert len(steps) == 13 and all(step["seconds"] >= 0 for step in steps.values())
    assert {"tiny/export_model"} <= set(steps)
    assert set(manifest["environment"]["lockfiles"]) == set(LOCKFILES)
    assert {"tiny/train_lora", "tiny/evaluate.base", "models/tiny/prepare_base_model"} <= set(steps)
    assert {"tiny/score_answers.base", "tiny/score_answers.tuned"} <= set(steps)
    report = (workdir / "results/tiny/report/report.md").read_text(encoding="utf-8")
    assert "[manifest.json](../manifest.json)" in report


def test_the_report_is_the_same_on_two_machines(finished_run, second_run):
    """The same run in another folder (another machine, another speed): the same report, byte for byte, and
    no path of either machine in the report, the manifest or the model's source.json."""
    workdir, _ = second_run
    report = Path("results/tiny/report")
    for name in ("report.md", "report.html", "loss_curve.png", "metrics.csv", "metrics.json"):
        assert (workdir / report / name).read_bytes() == (finished_run / report / name).read_bytes(), name
    for path in (report / "report.md", report / "report.html", "results/tiny/manifest.json"):
        text = (workdir / path).read_text(encoding="utf-8")
        assert str(workdir) not in text and "/.venv/" not in text and "site-packages" not in text, path
    assert str(workdir) not in (workdir / "results/models/tiny/source.json").read_text()


@pytest.mark.browser
def test_the_report_of_a_real_run_renders_in_a_browser(finished_run, browser):
    run = finished_run / "results" / "tiny"
    page = browser(run / "report" / "report.html")
    generations = {
        which: [
            json.loads(line) for line in (run / "eval" / which / "generations.jsonl").read_text().splitlines()
        ]
        for which in ("base", "tuned")
    }
    probes, records = page["answers"]
    assert [[cell["text"] for cell in row] for row in probes] == [
        [base["prompt"], base["answer"], tuned["answer"]]
        for base, tuned in zip(generations["base"], generations["tuned"], strict=True)
    ]
    assert len(records) == 4 and all(len(row) == 4 for row in records)
    assert all(cell["pre"] == 1 for row in probes + records for cell in row)
    assert page["images"] and all(image["complete"] and image["width"] > 0 for image in page["images"])


def test_manifest_outside_git_says_so(finished_run):
    manifest = json.loads((finished_run / "results/tiny/manifest.json").read_text(encoding="utf-8"))
    assert manifest["code"]["commit"] is None and "not a git work tree" in manifest["code"]["note"]


def test_older_recipes_get_the_data_defaults(second_run):
    """A recipe without the data format and cleaning keys: schema defaults reach the step and manifest."""
    workdir, _ = second_run
    recipe_file = workdir / "config/recipes/tiny.yaml"
    original = recipe_file.read_text(encoding="utf-8")
    recipe = yaml.safe_load(original)
    for key in ("format", "trim_whitespace", "placeholder_inputs", "drop_duplicates", "max_record_chars"):
        del recipe["data"][key]
    recipe_file.write_text(yaml.safe_dump(recipe, allow_unicode=True))
    try:
        planned = snakemake(workdir, "--dry-run", "--printshellcmds").stdout
    finally:
        recipe_file.write_text(original)
    assert '"drop_duplicates": "none"' in planned and '"trim_whitespace": false' in planned
    assert "--format auto" in planned and "--no-trim-whitespace" in planned


def test_the_hub_token_never_reaches_a_file_or_the_console(second_run):
    """HF_TOKEN is in the environment of every step; no log, output, report or manifest may hold it."""
    workdir, console = second_run
    secrets = [FAKE_TOKEN, FAKE_TOKEN[3:20]]
    assert not any(secret in console for secret in secrets)
    files = [path for path in workdir.rglob("*") if path.is_file()]
    assert any(path.name == "manifest.json" for path in files) and any(
        path.suffix == ".log" for path in files
    )
    for path in files:
        content = path.read_bytes()
        assert not any(secret.encode() in content for secret in secrets), f"{path} holds the token"


def test_bad_data_stops_the_run_before_training(tmp_path, tiny_llama):
    bad = ROOT / "tests" / "bad_inputs" / "missing_output.json"
    recipe = tiny_recipe("smollm2-135m-alpaca-sample.yaml", tiny_llama, bad)
    recipe["split"]["eval_size"] = 0.5  # the file has 3 records: a count of 8 would stop the run earlier
    workdir = make_workdir(tmp_path, {"bad": recipe})
    result = snakemake(workdir, check=False)
    assert result.returncode != 0
    expected = f"{bad}: record 1: field 'output': missing"
    assert expected in result.stdout + result.stderr
    [log] = (workdir / "results/logs/data/small").glob("*/convert_to_messages.log")
    assert expected in log.read_text()
    assert not (workdir / "results" / "bad" / "train" / "adapter").exists()
    assert not list(workdir.rglob("train_lora.log")), "training must not have started"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"data": {"path": "data"}}, "data.path: data is a directory, not a data file"),
        ({"split": {"eval_size": 40}}, "split.eval_size: 40 records held out, but "),
        (
            {"model": {"source": {"kind": "local", "path": "no/such/model"}}},
            "model.source.path: no/such/model is",
        ),
    ],
)
def test_a_value_that_cannot_work_stops_before_any_job(tmp_path, tiny_llama, small_alpaca, change, message):
    """Values that pass the schema but cannot work stop the run when the DAG is built: one line, no job."""
    recipe = tiny_recipe("smollm2-135m-alpaca-sample.yaml", tiny_llama, small_alpaca)
    for section, values in change.items():
        recipe[section].update(values)
    workdir = make_workdir(tmp_path, {"bad": recipe})
    (workdir / "data").mkdir()
    result = snakemake(workdir, check=False)
    said = [line for line in (result.stdout + result.stderr).splitlines() if "workflow specific" not in line]
    assert result.returncode == 1 and len(said) == 1 and message in said[0], said
    assert not (workdir / "results").exists(), "no job ran"


def dataset_of(workdir: Path, experiment: str) -> str:
    """The keyed data folder name (results/data/<name>/<key>) the workflow gives an experiment's data."""
    from alpaca_lora.experiments import Experiments

    config = {"experiments": [experiment], "recipes_dir": str(workdir / "config/recipes")}
    return Experiments(config, schemas=workdir / "workflow/schemas")[experiment].wildcards["dataset"]


def test_a_step_killed_mid_write_leaves_nothing_trusted(tmp_path, tiny_llama):
    """SIGKILL (no cleanup at all) while the conversion writes: no output appears; a rerun redoes the step."""
    records = [
        {"instruction": f"Describe town {i}.", "input": "", "output": f"Town {i} is small and quiet. " * 8}
        for i in range(100_000)
    ]
    data = tmp_path / "big.json"
    data.write_text(json.dumps(records), encoding="utf-8")
    workdir = make_workdir(
        tmp_path, {"big": tiny_recipe("smollm2-135m-alpaca-sample.yaml", tiny_llama, data)}
    )
    dataset = dataset_of(workdir, "big")
    folder = workdir / "results" / "data" / dataset
    target = f"results/data/{dataset}/messages.jsonl"
    process = subprocess.Popen(
        [SNAKEMAKE, "--cores", "1", target],
        cwd=workdir,
        env=workflow_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while (
        process.poll() is None and time.monotonic() < deadline and not list(folder.glob(".messages.jsonl.*"))
    ):
        time.sleep(0.005)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert list(folder.glob(".messages.jsonl.*")), (
        "the kill should have come while messages.jsonl was written"
    )
    assert not (folder / "messages.jsonl").exists(), "a half-written output must never get its real name"
    assert not (folder / "convert_summary.json").exists()

    snakemake(workdir, "--unlock")  # a hard kill leaves Snakemake's lock behind
    assert jobs_planned(workdir).get("convert_to_messages") == 1
    snakemake(workdir, target)
    summary = json.loads((folder / "convert_summary.json").read_text())
    assert summary["read"] == summary["kept"] == len(records)
    assert summary["output_sha256"] == sha256_file(folder / "messages.jsonl")
    assert len((folder / "messages.jsonl").read_text(encoding="utf-8").splitlines()) == len(records)


def test_several_sources_and_a_hub_dataset_make_one_dataset(tmp_path, tiny_llama, small_alpaca, hub_cache):
    """data.sources: a JSON file, a CSV under other column names sampled to half, a pinned Hub dataset."""
    table = tmp_path / "extra.csv"
    table.write_text("Question,Reply\n" + "".join(f"Q{i},R{i}\n" for i in range(10)), encoding="utf-8")
    recipe = tiny_recipe("smollm2-135m-alpaca-sample.yaml", tiny_llama, small_alpaca)
    del recipe["data"]["path"]
    recipe["data"]["sources"] = [
        {"path": str(small_alpaca)},
        {"path": str(table), "columns": {"instruction": "Question", "output": "Reply"}, "sample": 0.5},
        {"hub": {"repo_id": "tester/tiny-alpaca", "revision": HUB_COMMIT, "split": "train"}},
    ]
    workdir = make_workdir(tmp_path, {"mix": recipe})
    dataset = dataset_of(workdir, "mix")
    target = f"results/data/{dataset}/messages.jsonl"
    snakemake(workdir, target, env=workflow_env(HF_DATASETS_CACHE=str(hub_cache)))
    summary = json.loads(
        (workdir / f"results/data/{dataset}/convert_summary.json").read_text(encoding="utf-8")
    )
    assert [s["kept"] for s in summary["sources"]] == [40, 5, 5]
    assert summary["sources"][2]["resolved_commit"] == HUB_COMMIT
    assert (summary["read"], summary["kept"], summary["sampled_out"]) == (55, 50, 5)
    assert "Nothing to be done" in snakemake(workdir, target, "--dry-run").stdout
    table.write_text(table.read_text(encoding="utf-8") + "Q10,R10\n", encoding="utf-8")
    assert jobs_planned(workdir).get("convert_to_messages") == 1, "a changed source file reruns the step"
