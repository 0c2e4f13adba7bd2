#!/usr/bin/env python
"""Write one experiment's report: base vs tuned on every metric (each saying what it was computed on), data
counts, the model, training curves, probe answers with their test results and eval answers beside their
references, all side by side, and the settings used (the recipe file, plus a grid cell's changes).

Files: report.md (Markdown), report.html (the same, self-contained with the curves embedded: the page that
`snakemake --report` shows), loss_curve.png, metrics.csv, generations.csv, eval_answers.csv, and
experiment.json (settings and counts, read by make_summary.py).

Example:
  python scripts/make_report.py --experiment smollm2-135m-alpaca-sample --recipe config/recipes/x.yaml ...
"""

from __future__ import annotations

import argparse
import base64
import csv
import html
import json
import logging
import os
from pathlib import Path

from alpaca_lora.common import add_log_argument, atomic_path, read_json, read_jsonl, setup_logging, write_json

log = logging.getLogger("make_report")

# The two models every report compares: the base model, and the base model plus the trained adapter.
SIDES = ("base", "tuned")
# Columns of the CSV tables (a table without rows still has its header).
METRIC_COLUMNS = ["key", "metric", "base", "tuned", "difference", "computed_on"]
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
}
OUTPUTS = {
    "markdown": "report.md to write",
    "html": "report.html to write (self-contained)",
    "metrics_csv": "base vs tuned metrics table to write",
    "curve": "training curves PNG to write",
    "generations_csv": "probe answers side by side to write",
    "eval_answers_csv": "eval answers and references side by side to write",
    "experiment_json": "settings and counts of the experiment to write",
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
    add_log_argument(parser)
    return parser.parse_args(argv)


def read_history(path: str) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as handle:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(handle)]


def plot_curves(history: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def series(key: str) -> tuple[list[float], list[float]]:
        rows = [row for row in history if key in row]
        return [row["step"] for row in rows], [row[key] for row in rows]

    figure, (loss_axis, lr_axis) = plt.subplots(
        2, 1, figsize=(7, 5.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    loss_axis.plot(*series("loss"), label="train loss", color="tab:blue")
    loss_axis.plot(*series("eval_loss"), "o--", label="eval loss", color="tab:orange")
    loss_axis.set_ylabel("loss (answer tokens)")
    loss_axis.grid(alpha=0.3)
    loss_axis.legend()
    lr_axis.plot(*series("learning_rate"), color="tab:green")
    lr_axis.set_ylabel("learning rate")
    lr_axis.set_xlabel("optimizer step")
    lr_axis.grid(alpha=0.3)
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=120)
    plt.close(figure)


def decoding_text(metrics: dict, limit: str = "max_new_tokens", code: bool = False) -> str:
    """How answers were decoded; `limit` names the max_new_tokens that applied (probes or eval records)."""
    decoding = metrics["decoding"]
    quote = "`" if code else ""
    stops = " / ".join(f"{quote}{token}{quote}" for token in decoding["stop_tokens"])
    return f"{decoding['strategy']}, max_new_tokens {decoding[limit]}, stop at {stops}"


def isolation_text(scores: dict[str, dict]) -> str:
    """The sandbox layers that ran the code probes (docs/sandbox.md), for both models when they differ."""
    layers = {m: " + ".join(scores[m]["code"]["isolation"]["layers"]) for m in SIDES}
    if layers["base"] == layers["tuned"]:
        return layers["base"]
    return "; ".join(f"{m}: {text}" for m, text in layers.items())


def metric_rows(metrics: dict[str, dict], scores: dict[str, dict], probes_file: str) -> list[dict]:
    """The base-vs-tuned table: key, metric, base, tuned, difference, computed_on (split, count, decoding)."""
    base, reference, code = metrics["base"], scores["base"]["reference"], scores["base"]["code"]
    greedy = decoding_text(base)
    eval_split = f"eval split: {base['records']} records, {base['answer_tokens']} answer tokens"
    answered = f"first {reference['records']} eval records; {decoding_text(base, 'reference_max_new_tokens')}"

    def row(key: str, label: str, values: dict, computed_on: str) -> dict:
        both = [values[m] for m in SIDES]
        difference = both[1] - both[0] if None not in both else None
        return {"key": key, "metric": label, **values, "difference": difference, "computed_on": computed_on}

    def from_metrics(key: str) -> dict:
        return {m: metrics[m][key] for m in SIDES}

    def from_scores(part: str, key: str) -> dict:
        return {m: scores[m][part][key] for m in SIDES}

    signatures = reference.get("signatures", {})
    return [
        row("eval_loss", "eval loss (answer tokens)", from_metrics("eval_loss"), eval_split),
        row("perplexity", "perplexity", from_metrics("perplexity"), eval_split),
        row("chrf", "chrF", from_scores("reference", "chrf"), f"{answered}; {signatures.get('chrf', '')}"),
        row("bleu", "BLEU", from_scores("reference", "bleu"), f"{answered}; {signatures.get('bleu', '')}"),
        row(
            "rougeL",
            "ROUGE-L F1 (x100)",
            from_scores("reference", "rougeL"),
            f"{answered}; {signatures.get('rougeL', '')}",
        ),
        row(
            "pass@1",
            "pass@1 (code probes)",
            from_scores("code", "pass@1"),
            f"{code['problems']} probes with tests in {probes_file}; {greedy}; one answer each, run in the "
            f"sandbox ({code['limits']['timeout_s']:g} s, {code['limits']['memory_mb']} MB; "
            f"layers: {isolation_text(scores)})",
        ),
        row(
            "eval_hit_max",
            "eval answers that hit max_new_tokens",
            from_metrics("eval_answers_hit_max_new_tokens"),
            f"{base['eval_answers']} eval answers; {decoding_text(base, 'reference_max_new_tokens')}",
        ),
        row(
            "probe_hit_max",
            "probe answers that hit max_new_tokens",
            from_metrics("probes_hit_max_new_tokens"),
            f"{base['probes']} probe answers; {greedy}",
        ),
    ]


def write_csv(path: str, rows: list[dict], columns: list[str]) -> None:
    with atomic_path(path) as temporary, open(temporary, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def cell(value) -> str:
    """A Markdown table cell: numbers to 4 decimals, None as n/a, pipes escaped (<|im_end|>)."""
    if value is None:
        return "n/a"
    text = f"{value:.4f}" if isinstance(value, float) else str(value)
    return text.replace("|", "\\|")


def markdown_table(rows: list[dict], columns: list[str]) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row[k]) for k in columns) + " |" for row in rows]
    return lines


def test_result(result: dict | None) -> str:
    if result is None:
        return ""
    verdict = "pass" if result["passed"] else "fail"
    return f"{verdict} ({result['tests_passed']}/{result['tests']} tests; {result['status']})"


def with_note(answer: str, note: str) -> str:
    return f"{answer}\n\n[{note}]" if note else answer


def html_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["<table>", "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"]
    for cells in rows:
        lines.append("<tr>" + "".join(f"<td><pre>{html.escape(c)}</pre></td>" for c in cells) + "</tr>")
    lines.append("</table>")
    return lines


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


def cleaning(converted: dict) -> list[str]:
    """The data step's format and cleaning, with what each changed (older summaries have neither)."""
    settings = converted.get("normalisations")
    if not settings:
        return []
    trim = "on" if settings["trim_whitespace"] else "off"
    return [
        f"- Format {converted['format']} ({converted['format_chosen']}). Cleaning: trim_whitespace {trim} "
        f"({converted['trimmed']} records trimmed), {len(settings['placeholder_inputs'])} placeholder "
        f"inputs ({converted['placeholder_inputs_emptied']} emptied), drop_duplicates "
        f"{settings['drop_duplicates']} ({converted['rejected_duplicate']} dropped); rejected records are "
        "listed in `rejects.jsonl` with their reasons.",
    ]


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
    }


def build_markdown(
    args: argparse.Namespace,
    recipe: dict,
    overrides: dict,
    rows: list[dict],
    probes: list[dict],
    answers: list[dict],
    metrics: dict[str, dict],
) -> str:
    source = read_json(args.model_source)
    converted = read_json(args.convert_summary)
    split = read_json(args.split_summary)
    trained = read_json(args.train_summary)
    base = metrics["base"]
    tokens_per_s = trained["train_tokens"] / trained["train_runtime_s"] if trained["train_runtime_s"] else 0
    curve = os.path.relpath(args.curve, Path(args.markdown).parent)
    changed = ", ".join(f"`{key}` = `{value}`" for key, value in overrides.items())
    notices = []
    if args.manifest:
        manifest = os.path.relpath(args.manifest, Path(args.markdown).parent)
        notices += [
            f"Provenance: [manifest.json]({manifest}) (sha256 of inputs and outputs, versions, timings).",
            "",
        ]
    if source["trust_remote_code"]:
        notices += [
            "> **trust_remote_code is on**: the base model's own code ran in every step that loaded it.",
            "",
        ]
    lines = [
        f"# Experiment `{args.experiment}`",
        "",
        recipe["description"].strip(),
        "",
        *notices,
        "## Base vs tuned",
        "",
        f"- base: `{base['model']}`; tuned: the same plus the LoRA adapter `{metrics['tuned']['adapter']}`.",
        f"- Eval split `{base['eval_file']}` (sha256 `{base['eval_sha256'][:16]}…`), held out from training.",
        f"- Decoding: {decoding_text(base, code=True)} (probes); max_new_tokens "
        f"{base['decoding']['reference_max_new_tokens']} for eval records; prompts rendered with the chat "
        "template's generation prompt.",
        "",
        *markdown_table(rows, ["metric", "base", "tuned", "difference", "computed_on"]),
        "",
        "### Code probes",
        "",
        *markdown_table([r for r in probes if r["base_tests"]], ["prompt", "base_tests", "tuned_tests"]),
        "",
        "## Data",
        "",
        f"- Raw file `{converted['input']}` (sha256 `{converted['input_sha256'][:16]}…`): "
        f"{converted['read']} records read, {converted['kept']} kept, {converted['rejected']} rejected; "
        f"{converted['kept_with_input']} kept records have an `input`.",
        *cleaning(converted),
        f"- Split (seed {split['seed']}, eval size {split['eval_size']:g}): "
        f"{split['train']} train, {split['eval']} eval.",
        "",
        "## Model",
        "",
        f"- Source: {source['kind']} — "
        + ", ".join(
            f"{k} `{v}`"
            for k, v in source.items()
            if k in ("package", "file", "repo_id", "revision", "resolved_commit", "path") and v
        ),
        f"- {source['architecture']}, {source['parameters'] / 1e6:.1f}M parameters, "
        f"saved as {source['dtype']}; "
        f"trust_remote_code {'**on**' if source['trust_remote_code'] else 'off'}.",
        *[f"- sha256 of `{name}`: `{digest}`" for name, digest in source["sha256"].items()][:5],
        "",
        "## Training",
        "",
        f"- {trained['global_step']} optimizer steps, {trained['train_tokens']:.0f} tokens in "
        f"{trained['train_runtime_s']:.0f} s ({tokens_per_s:.0f} tokens/s); "
        f"{trained['trainable_parameters']:,} trainable of {trained['total_parameters']:,} parameters.",
        f"- Final train loss {trained['train_loss']:.4f}; final eval loss as the trainer reports it "
        f"{trained['final_eval_loss']:.4f} (a mean of per-batch means, where the table above weights every "
        "answer token equally)"
        + (f"; resumed from `{trained['resumed_from']}`." if trained["resumed_from"] else "."),
        "",
        f"![training curves]({curve})",
        "",
        "## Probe answers",
        "",
        *html_table(
            ["prompt", "base", "tuned"],
            [
                [r["prompt"], with_note(r["base"], r["base_tests"]), with_note(r["tuned"], r["tuned_tests"])]
                for r in probes
            ],
        ),
        "",
        f"## Eval answers (first {len(answers)} eval records)",
        "",
        *html_table(
            ["prompt", "reference", "base", "tuned"],
            [
                [
                    a["prompt"],
                    a["reference"],
                    with_note(a["base"], f"chrF {a['base_chrf']:.1f}"),
                    with_note(a["tuned"], f"chrF {a['tuned_chrf']:.1f}"),
                ]
                for a in answers
            ],
        ),
        "",
        "## Settings",
        "",
        f"`{args.recipe}`" + (f", grid cell changing {changed}" if overrides else "") + ":",
        "",
        "```yaml",
        Path(args.recipe).read_text(encoding="utf-8").rstrip(),
        "```",
        "",
    ]
    return "\n".join(lines)


def markdown_to_html(markdown: str, title: str, curve: str, curve_link: str) -> str:
    """The Markdown report as one self-contained page (the curves embedded as a data URI)."""
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark", {"html": True}).enable("table").render(markdown)
    png = base64.b64encode(Path(curve).read_bytes()).decode("ascii")
    body = body.replace(f'src="{html.escape(curve_link)}"', f'src="data:image/png;base64,{png}"')
    style = (
        "body{font-family:sans-serif;max-width:75em;margin:auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px;vertical-align:top}pre{white-space:pre-wrap;margin:0}"
    )
    return (
        f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body>\n{body}</body></html>\n"
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    setup_logging("make_report", args.log_file)
    import yaml

    if args.settings:
        settings = json.loads(args.settings)
        recipe, overrides = settings["recipe"], settings["overrides"]
    else:
        recipe, overrides = yaml.safe_load(Path(args.recipe).read_text(encoding="utf-8")), {}
    metrics = {m: read_json(getattr(args, f"{m}_metrics")) for m in SIDES}
    scores = {m: read_json(getattr(args, f"{m}_scores")) for m in SIDES}
    generations = {m: list(read_jsonl(getattr(args, f"{m}_generations"))) for m in SIDES}
    answers = {m: list(read_jsonl(getattr(args, f"{m}_eval_answers"))) for m in SIDES}
    tests = {m: {p["prompt"]: p for p in scores[m]["code"]["per_probe"]} for m in SIDES}

    rows = metric_rows(metrics, scores, scores["base"]["probes_file"])
    probes = probe_rows(generations, tests)
    answer_rows = eval_answer_rows(answers, scores)
    plot_curves(read_history(args.history), args.curve)
    write_csv(args.metrics_csv, rows, METRIC_COLUMNS)
    write_csv(args.generations_csv, probes, PROBE_COLUMNS)
    write_csv(args.eval_answers_csv, answer_rows, EVAL_ANSWER_COLUMNS)
    write_json(args.experiment_json, experiment_record(args, recipe, overrides))
    markdown = build_markdown(args, recipe, overrides, rows, probes, answer_rows, metrics)
    with atomic_path(args.markdown) as temporary:
        temporary.write_text(markdown, encoding="utf-8")
    curve_link = os.path.relpath(args.curve, Path(args.markdown).parent)
    with atomic_path(args.html) as temporary:
        temporary.write_text(
            markdown_to_html(markdown, args.experiment, args.curve, curve_link), encoding="utf-8"
        )
    log.info("Wrote %s and %s", args.markdown, args.html)


if __name__ == "__main__":
    main()
