"""Where every file of the pipeline lives: one path pattern per output, defined here once.

The rules (workflow/rules/*.smk) take their outputs, logs and benchmarks from here; the manifest, the DVC
tooling, the docs' map and the tests find the same files through the same patterns. Wildcards:

  {dataset}     <data.name>/<key of the data settings>: Experiments.dataset_id
                                                 {model}  model.name of a recipe
  {split}       seed<split.seed>-eval<eval_size>  {part}   train | eval
  {experiment}  a recipe or grid-cell name        {which}  base | tuned

Outputs live under results/: shared artifacts by what determines them (data by dataset and split, the base
model by name), everything else by experiment. Logs and Snakemake's benchmark files mirror that layout under
results/logs/ and results/benchmarks/.
"""

from __future__ import annotations

RESULTS = "results"
DATASET = "results/data/{dataset}"
SPLIT = DATASET + "/{split}"
MODEL = "results/models/{model}"
RUN = "results/{experiment}"
SUMMARY = "results/summary"
# Snakemake's own HTML report (snakemake --report): `make run` and a cluster run end with it.
WORKFLOW_REPORT = "results/report.html"

# Rule -> its outputs, by the names the rule's shell command uses.
OUTPUTS: dict[str, dict[str, str]] = {
    "convert_to_messages": {
        "messages": f"{DATASET}/messages.jsonl",
        "rejects": f"{DATASET}/rejects.jsonl",
        "summary": f"{DATASET}/convert_summary.json",
    },
    "split_dataset": {
        "train": f"{SPLIT}/train.jsonl",
        "eval": f"{SPLIT}/eval.jsonl",
        "summary": f"{SPLIT}/split_summary.json",
    },
    "prepare_base_model": {"model": MODEL},
    "apply_chat_template": {"templated": SPLIT + "/{model}/{part}.templated.jsonl"},
    "training_settings": {"settings": f"{RUN}/train/settings.json"},
    "train_lora": {
        "adapter": f"{RUN}/train/adapter",
        "history": f"{RUN}/train/history.csv",
        "summary": f"{RUN}/train/summary.json",
        # One subfolder per tracker that training.report_to names (dvclive/, mlruns/, wandb/, tensorboard/).
        "tracking": f"{RUN}/train/tracking",
    },
    "evaluate": {
        "metrics": RUN + "/eval/{which}/metrics.json",
        "generations": RUN + "/eval/{which}/generations.jsonl",
        "eval_answers": RUN + "/eval/{which}/eval_answers.jsonl",
        "humaneval_answers": RUN + "/eval/{which}/humaneval_answers.jsonl",
    },
    "score_answers": {
        "scores": RUN + "/eval/{which}/scores.json",
        "humaneval": RUN + "/eval/{which}/humaneval.jsonl",
    },
    # Only for recipes with evaluation.lm_eval: lm-evaluation-harness results, and the project's task.
    "lm_eval": {
        "results": RUN + "/eval/{which}/lm_eval.json",
        "tasks": RUN + "/eval/{which}/lm_eval_tasks",
    },
    "report": {
        "markdown": f"{RUN}/report/report.md",
        "html": f"{RUN}/report/report.html",
        "metrics": f"{RUN}/report/metrics.csv",
        "metrics_json": f"{RUN}/report/metrics.json",
        "curve": f"{RUN}/report/loss_curve.png",
        "generations": f"{RUN}/report/generations.csv",
        "eval_answers": f"{RUN}/report/eval_answers.csv",
        "experiment": f"{RUN}/report/experiment.json",
    },
    "export": {
        "merged": f"{RUN}/export/merged",
        "check": f"{RUN}/export/merge_check.json",
    },
    "summary": {
        **{
            part: f"{SUMMARY}/summary.{suffix}"
            for part, suffix in {"csv": "csv", "markdown": "md", "latex": "tex", "html": "html"}.items()
        },
        "seeds": f"{SUMMARY}/seeds.csv",
        "plots": f"{SUMMARY}/plots",
    },
    "manifest": {"manifest": f"{RUN}/manifest.json"},
}

# Rule -> the path of its log (results/logs/<key>.log) and benchmark file (results/benchmarks/<key>.tsv).
STEP_KEYS: dict[str, str] = {
    "convert_to_messages": "data/{dataset}/convert_to_messages",
    "split_dataset": "data/{dataset}/{split}/split_dataset",
    "prepare_base_model": "models/{model}/prepare_base_model",
    "apply_chat_template": "data/{dataset}/{split}/{model}/apply_chat_template.{part}",
    "training_settings": "{experiment}/training_settings",
    "train_lora": "{experiment}/train_lora",
    "evaluate": "{experiment}/evaluate.{which}",
    "score_answers": "{experiment}/score_answers.{which}",
    "lm_eval": "{experiment}/lm_eval.{which}",
    "report": "{experiment}/make_report",
    "export": "{experiment}/export_model",
    "summary": "summary/make_summary",
    "manifest": "{experiment}/write_manifest",
}

# Not an output of train_lora: Snakemake deletes the outputs of a failed job, and checkpoints must survive it.
CHECKPOINTS = f"{RUN}/train/checkpoints"


def outputs(rule: str) -> dict[str, str]:
    """The output patterns of a rule, by name."""
    return dict(OUTPUTS[rule])


def output(rule: str, name: str) -> str:
    return OUTPUTS[rule][name]


def log(rule: str) -> str:
    return f"{RESULTS}/logs/{STEP_KEYS[rule]}.log"


def benchmark(rule: str) -> str:
    return f"{RESULTS}/benchmarks/{STEP_KEYS[rule]}.tsv"


def files(rule: str, **wildcards: str) -> dict[str, str]:
    """A rule's outputs for given wildcard values: {name: path}."""
    return {name: pattern.format(**wildcards) for name, pattern in OUTPUTS[rule].items()}


def glob(rule: str, name: str) -> str:
    """An output pattern with every wildcard as `*` (for DVC's metrics and plots, which take globs)."""
    import re

    return re.sub(r"\{[a-z_]+\}", "*", OUTPUTS[rule][name])


def finished_reports(root: str = ".") -> dict[str, dict[str, str]]:
    """Experiment -> its report's files, for every experiment under results/ whose report is complete
    (paths relative to `root`, the working directory of a run)."""
    from pathlib import Path

    found = {}
    for path in sorted(Path(root).glob(glob("report", "experiment"))):
        name = path.relative_to(root).parts[1]
        report = files("report", experiment=name)
        if all((Path(root) / file).exists() for file in report.values()):
            found[name] = report
    return found


def main() -> None:
    """Print every output pattern, log and benchmark file, by rule."""
    from alpaca_lora.common import module_help

    module_help(__doc__ + "\nRun without arguments: every path pattern, by rule.").parse_args()
    for rule, outputs in OUTPUTS.items():
        print(f"{rule}:")
        for name, pattern in {**outputs, "log": log(rule), "benchmark": benchmark(rule)}.items():
            print(f"  {name:14} {pattern}")


if __name__ == "__main__":
    main()
