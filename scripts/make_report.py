#!/usr/bin/env python
"""Write one experiment's report: Markdown with the base-vs-tuned table, data counts, training curves,
probe answers side by side and the recipe used; plus the curve as PNG and the tables as CSV (the files that
`snakemake --report` shows).

Example:
  python scripts/make_report.py --experiment smollm2-135m-alpaca-sample --recipe config/recipes/x.yaml ...
"""

from __future__ import annotations

import argparse
import csv
import html
import os
from pathlib import Path

from common import add_log_argument, atomic_path, read_json, read_jsonl, setup_logging

log = setup_logging("make_report")

INPUTS = {
    "recipe": "recipe YAML of the experiment",
    "model_source": "source.json of the base model folder",
    "convert_summary": "summary of the Alpaca to messages step",
    "split_summary": "summary of the split step",
    "history": "training log history CSV",
    "train_summary": "training summary JSON",
    "base_metrics": "metrics JSON of the base model",
    "tuned_metrics": "metrics JSON of the tuned model",
    "base_generations": "probe answers of the base model",
    "tuned_generations": "probe answers of the tuned model",
}
OUTPUTS = {
    "markdown": "report.md to write",
    "metrics_csv": "base vs tuned metrics table to write",
    "curve": "training curves PNG to write",
    "generations_csv": "probe answers side by side to write",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--experiment", required=True, help="experiment name (the title)")
    for name, help_text in {**INPUTS, **OUTPUTS}.items():
        parser.add_argument("--" + name.replace("_", "-"), required=True, help=help_text)
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


def metric_rows(base: dict, tuned: dict) -> list[dict]:
    rows = []
    for key, label in [("eval_loss", "eval loss"), ("perplexity", "perplexity")]:
        rows.append(
            {"metric": label, "base": base[key], "tuned": tuned[key], "difference": tuned[key] - base[key]}
        )
    for key, label in [("answer_tokens", "answer tokens scored"), ("records", "eval records")]:
        rows.append({"metric": label, "base": base[key], "tuned": tuned[key], "difference": 0})
    rows.append(
        {
            "metric": "probes that hit max_new_tokens",
            "base": base["probes_hit_max_new_tokens"],
            "tuned": tuned["probes_hit_max_new_tokens"],
            "difference": tuned["probes_hit_max_new_tokens"] - base["probes_hit_max_new_tokens"],
        }
    )
    return rows


def write_csv(path: str, rows: list[dict]) -> None:
    with atomic_path(path) as temporary, open(temporary, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def number(value: float) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def markdown_table(rows: list[dict]) -> list[str]:
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(number(row[k]) for k in header) + " |" for row in rows]
    return lines


def generations_html(base: list[dict], tuned: list[dict]) -> list[str]:
    lines = ["<table>", "<tr><th>prompt</th><th>base</th><th>tuned</th></tr>"]
    for before, after in zip(base, tuned, strict=True):
        cells = [before["prompt"], before["answer"], after["answer"]]
        lines.append("<tr>" + "".join(f"<td><pre>{html.escape(c)}</pre></td>" for c in cells) + "</tr>")
    lines.append("</table>")
    return lines


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


def build_markdown(
    args: argparse.Namespace, rows: list[dict], base_gen: list[dict], tuned_gen: list[dict]
) -> str:
    import yaml

    recipe_text = Path(args.recipe).read_text(encoding="utf-8")
    recipe = yaml.safe_load(recipe_text)
    source = read_json(args.model_source)
    converted = read_json(args.convert_summary)
    split = read_json(args.split_summary)
    trained = read_json(args.train_summary)
    base = read_json(args.base_metrics)
    decoding = base["decoding"]
    tokens_per_s = trained["train_tokens"] / trained["train_runtime_s"] if trained["train_runtime_s"] else 0
    curve = os.path.relpath(args.curve, Path(args.markdown).parent)
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
        f"Eval split: {base['records']} records, {base['answer_tokens']} answer tokens; loss is the mean "
        f"cross-entropy over answer tokens only. Probes decoded {decoding['strategy']}, "
        f"max_new_tokens {decoding['max_new_tokens']}.",
        "",
        *markdown_table(rows),
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
        *generations_html(base_gen, tuned_gen),
        "",
        "## Recipe",
        "",
        f"`{args.recipe}`:",
        "",
        "```yaml",
        recipe_text.rstrip(),
        "```",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    setup_logging("make_report", args.log_file)
    base_gen = list(read_jsonl(args.base_generations))
    tuned_gen = list(read_jsonl(args.tuned_generations))
    rows = metric_rows(read_json(args.base_metrics), read_json(args.tuned_metrics))
    plot_curves(read_history(args.history), args.curve)
    write_csv(args.metrics_csv, rows)
    write_csv(
        args.generations_csv,
        [
            {"prompt": b["prompt"], "base": b["answer"], "tuned": t["answer"]}
            for b, t in zip(base_gen, tuned_gen, strict=True)
        ],
    )
    with atomic_path(args.markdown) as temporary:
        temporary.write_text(build_markdown(args, rows, base_gen, tuned_gen), encoding="utf-8")
    log.info("Wrote %s", args.markdown)


if __name__ == "__main__":
    main()
