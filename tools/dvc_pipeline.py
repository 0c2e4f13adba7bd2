"""Version the pipeline's data and models with DVC while Snakemake stays the only DAG.

  record   after a finished `snakemake --cores all`: write dvc.yaml from Snakemake's own list of the DAG's
           files, hash every artifact into dvc.lock (`dvc commit`), upload them (`dvc push`), stage
           dvc.yaml and dvc.lock for `git commit`.
  dvc-yaml only write dvc.yaml from the DAG (record does this too); dvc.yaml is committed, and a test
           checks that it is current.
  restore  on a fresh clone or after `git checkout`: `dvc pull`, check that the code, config and data are
           exactly those dvc.lock recorded, then `snakemake --touch --forceall` so that Snakemake takes the
           restored files as up to date (DVC gives them new modification times in arbitrary order), and
           check that Snakemake has nothing to do.

DVC never runs a step and never runs inside a job: dvc.yaml has one stage whose command is the whole
workflow (`snakemake --cores all`), used only by `dvc exp run` / `dvc repro`; Snakemake decides which steps
re-run. Run from the repository root: `make record`, `make restore`, or `python tools/dvc_pipeline.py -h`.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path, PurePosixPath

import yaml

from alpaca_lora import layout, tracking
from alpaca_lora.common import load_yaml
from alpaca_lora.experiments import Experiments

STAGE = "snakemake"
STAGE_CMD = "snakemake --cores all"
# What decides the results besides the recipes (params) and the data files (found in the DAG). The tools/
# folder is not among them: recording must not make the pipeline look changed.
CODE_DEPS = ["Snakefile", "workflow", "scripts", "src", "config/config.yaml"]
# Outputs DVC shows with `dvc metrics` (a few numbers per experiment: the report's metrics.json; the step
# summaries hold hashes and settings that would make `dvc metrics show` a table of hashes) and `dvc plots`.
METRICS = [layout.glob("report", "metrics_json")]
PLOTS = {layout.glob("train_lora", "history"): {"x": "step", "y": ["loss", "eval_loss"]}}
HEADER = """\
# Written by `make record` (tools/dvc_pipeline.py) from Snakemake's DAG: edit the workflow, not this file.
# One stage whose command is the whole workflow: Snakemake alone defines the steps and decides which re-run;
# DVC hashes every artifact (dvc.lock), stores and shares them (dvc push / pull), and reads the metrics and
# training curves (dvc metrics, dvc plots). Outputs are `persist` so that DVC never deletes them before
# `dvc exp run` / `dvc repro` runs Snakemake. See docs/versioning.md.
"""


class Failure(Exception):
    """A check failed; the message says what to do."""


def tool(name: str) -> str:
    """The command from this interpreter's environment (as after `source .venv/bin/activate`)."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def run(*args: str, capture: bool = False) -> subprocess.CompletedProcess:
    """Run a command, shown as `+ command`; a non-zero exit status stops with its output."""
    print("+", shlex.join(args), flush=True)
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    result = subprocess.run(
        [tool(args[0]), *args[1:]], text=True, capture_output=capture, env=env, check=False
    )
    if result.returncode != 0:
        details = f"\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}" if capture else ""
        raise Failure(f"`{shlex.join(args)}` failed with exit status {result.returncode}{details}")
    return result


def succeeds(*args: str) -> bool:
    """Whether a command exits with status 0 (a question; its output is not shown)."""
    return subprocess.run([tool(args[0]), *args[1:]], capture_output=True, check=False).returncode == 0


def snakemake_has_nothing_to_do() -> tuple[bool, str]:
    """Whether `snakemake --dry-run` says "Nothing to be done", and what it said."""
    print("+ snakemake --cores 1 --dry-run", flush=True)
    result = subprocess.run(
        [tool("snakemake"), "--cores", "1", "--dry-run"], text=True, capture_output=True, check=False
    )
    said = result.stdout + result.stderr
    return result.returncode == 0 and "Nothing to be done" in result.stdout, said[-6000:]


def dag_files() -> tuple[list[str], list[str], list[str]]:
    """(outputs, logs, source inputs) of every job, from the job list of `snakemake --dry-run --forceall`.

    The DAG itself, not Snakemake's metadata (which `--summary` reads and a fresh clone lacks). Benchmark
    files count as outputs: they are written by the jobs, and the manifest step reads them.
    """
    plan = run("snakemake", "--cores", "1", "--dry-run", "--forceall", capture=True).stdout
    files: dict[str, set[str]] = {"input": set(), "output": set(), "log": set()}
    for line in plan.splitlines():
        key, _, value = line.strip().partition(": ")
        key = "output" if key == "benchmark" else key
        if line.startswith("    ") and key in files:
            files[key].update(value.split(", "))
    if not files["output"]:
        raise Failure(f"found no job in `snakemake --dry-run --forceall`:\n{plan[-3000:]}")
    root = Path.cwd().resolve()
    sources = set()
    for path in files["input"] - files["output"]:
        absolute = (root / path).resolve()
        if absolute.is_relative_to(root):
            sources.add(absolute.relative_to(root).as_posix())
        else:
            print(f"note: {path} is outside the repository; DVC does not version it", file=sys.stderr)
    return sorted(files["output"]), sorted(files["log"] - files["output"]), sorted(sources)


def is_metric(path: str) -> bool:
    return any(PurePosixPath(path).match(pattern) for pattern in METRICS)


def plot_properties(path: str) -> dict | None:
    return next((props for pattern, props in PLOTS.items() if PurePosixPath(path).match(pattern)), None)


def pipeline_definition(config_file: Path = Path("config/config.yaml")) -> dict:
    """dvc.yaml's content for the experiments and grids config/config.yaml lists."""
    config = yaml.safe_load(config_file.read_text(encoding="utf-8"))
    names = config["experiments"] + [grid["recipe"] for grid in config.get("grids", [])]
    recipes = [f"{config['recipes_dir']}/{name}.yaml" for name in dict.fromkeys(names)]
    outputs, logs, sources = dag_files()
    in_code = [
        path for path in sources if any(path == dep or path.startswith(f"{dep}/") for dep in CODE_DEPS)
    ]
    data = [path for path in sources if path not in recipes and path not in in_code]
    stage = {
        "cmd": STAGE_CMD,
        "deps": CODE_DEPS + data,
        "params": [{recipe: None} for recipe in recipes],
        "outs": [{path: {"persist": True}} for path in sorted(outputs + logs) if not is_metric(path)],
        "metrics": [{path: {"persist": True}} for path in outputs if is_metric(path)],
    }
    plots = [
        {path: {"title": f"{PurePosixPath(path).parts[1]}: training curves", **plot_properties(path)}}
        for path in outputs
        if plot_properties(path)
    ]
    # DVCLive's curves as plots; its metrics.json (every logged value, some 25 columns) is not declared, so
    # that `dvc metrics show` and `dvc exp show` stay the report's few numbers (train loss included).
    plots += [{f"{folder}/plots/metrics": {"x": "step"}} for folder in dvclive_folders(config_file, outputs)]
    return {"stages": {STAGE: stage}, "plots": plots}


def dvclive_folders(config_file: Path, outputs: list[str]) -> list[str]:
    """The DVCLive folders (inside the tracking outputs) of the experiments whose training.report_to names
    dvclive: their curves are plots (by step)."""
    experiments = Experiments(
        load_yaml(config_file.read_text(encoding="utf-8")), config_file=str(config_file)
    )
    pattern = layout.glob("train_lora", "tracking")
    return [
        f"{path}/dvclive"
        for path in outputs
        if PurePosixPath(path).match(pattern)
        and "dvclive"
        in tracking.named(experiments[PurePosixPath(path).parts[1]].recipe["training"]["report_to"])
    ]


def check_data_is_versioned(definition: dict) -> None:
    """Each data file the DAG reads must reach a fresh clone: through git, or through a DVC .dvc file."""
    code = set(CODE_DEPS)
    for path in definition["stages"][STAGE]["deps"]:
        if path in code:
            continue
        in_git = succeeds("git", "ls-files", "--error-unmatch", path)
        in_dvc = any(Path(f"{folder}.dvc").exists() for folder in [path, *map(str, Path(path).parents)])
        if not (in_git or in_dvc):
            raise Failure(
                f"{path} is read by the pipeline but neither git nor DVC tracks it, so a clone would lack "
                f'it: run `dvc add {path}` (config/recipes/README.md, "Your own data"), then record again.'
            )


def dvc_yaml_text(definition: dict) -> str:
    return HEADER + yaml.safe_dump(definition, sort_keys=False, allow_unicode=True, width=110)


def write_dvc_yaml(definition: dict, path: Path = Path("dvc.yaml")) -> None:
    text = dvc_yaml_text(definition)
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}")


def record(args: argparse.Namespace) -> None:
    done, plan = snakemake_has_nothing_to_do()
    if not done:
        raise Failure(
            f"{plan}\nThe run is not complete: Snakemake does not say 'Nothing to be done' (above). Run "
            "`snakemake --cores all` (after `dvc pull` if inputs are missing), then record."
        )
    definition = pipeline_definition()
    if Path(".git").exists():
        check_data_is_versioned(definition)
    write_dvc_yaml(definition)
    # --no-relink: leave the workspace files alone, so that their modification times stay in DAG order.
    run("dvc", "commit", "--force", "--no-relink")
    if args.push:
        run("dvc", "push", *(["--remote", args.remote] if args.remote else []))
    if Path(".git").exists():
        run("git", "add", "dvc.yaml", "dvc.lock")
    print("\nRecorded. Commit dvc.lock together with the code, config and *.dvc files that produced it:")
    print('  git commit -m "<what changed>"')


def restore(args: argparse.Namespace) -> None:
    if args.pull:
        run("dvc", "pull", *(["--remote", args.remote] if args.remote else []))
    else:
        run("dvc", "checkout")
    status = json.loads(run("dvc", "status", "--json", capture=True).stdout or "{}")
    if status:
        human = run("dvc", "status", capture=True).stdout
        raise Failure(
            f"{human}\nThe code, config or data differ from what dvc.lock recorded (above), so the restored "
            "results are not theirs; nothing was touched. Restore a recorded commit (`git stash` or "
            "`git checkout <commit>`), or run `snakemake --cores all` to rebuild."
        )
    # DVC wrote the files in arbitrary order; record them for Snakemake as finished, in DAG order, with
    # metadata (parameters, code) for every job so that later changes re-run exactly what they affect.
    run("snakemake", "--cores", "1", "--touch", "--forceall", "--quiet", "all")
    done, plan = snakemake_has_nothing_to_do()
    if not done:
        raise Failure(f"{plan}\nSnakemake does not say 'Nothing to be done' after the restore (above).")
    print("\nRestored: Snakemake has nothing to do.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    record_parser = commands.add_parser("record", help="hash every artifact into dvc.lock and push them")
    record_parser.add_argument("--no-push", dest="push", action="store_false", help="only record locally")
    restore_parser = commands.add_parser("restore", help="pull the recorded artifacts; Snakemake up to date")
    restore_parser.add_argument(
        "--no-pull", dest="pull", action="store_false", help="check out from the local cache, offline"
    )
    commands.add_parser("dvc-yaml", help="only write dvc.yaml from Snakemake's DAG")
    for sub in (record_parser, restore_parser):
        sub.add_argument("--remote", help="DVC remote to use instead of the default one")
    args = parser.parse_args(argv)
    try:
        commands_by_name = {
            "record": record,
            "restore": restore,
            "dvc-yaml": lambda _: write_dvc_yaml(pipeline_definition()),
        }
        commands_by_name[args.command](args)
    except Failure as failure:
        print(f"error: {failure}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
