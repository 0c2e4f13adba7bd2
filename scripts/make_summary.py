#!/usr/bin/env python
"""Summarize experiments in one table: a row per experiment with its key settings (and every setting a grid
varies), data counts, training loss and time, and the base and tuned value of each metric of its report's
metrics.csv.

The rows are this run's experiments (--experiment-json / --metrics-csv, in the config's order) and, with
--keep-finished, every other experiment whose report is under results/ (a run that selects a few experiments
with --config keeps the rows of the others).

Writes the table as CSV (every column, full precision), Markdown and HTML (rounded; a column of settings,
counts or base-model metrics with the same value in every row moves to a note under the table, the tuned
model's metrics always stay), and a LaTeX `tabular` (booktabs) sized for a paper: the experiment, the settings
that differ between rows and the headline metrics of the tuned model; the rest as comments above it. A note
says what each metric was computed on.

Example:
  python scripts/make_summary.py --experiment-json results/a/report/experiment.json \\
      results/b/report/experiment.json --metrics-csv results/a/report/metrics.csv \\
      results/b/report/metrics.csv --csv summary.csv --markdown summary.md --latex summary.tex \\
      --html summary.html
"""

from __future__ import annotations

import argparse
import csv
import html
import logging

from alpaca_lora import layout
from alpaca_lora.common import add_log_argument, atomic_path, read_json, step
from alpaca_lora.document import Column, Table, md_escape, md_table, number, plain, to_latex
from alpaca_lora.document import html_table as table_html

log = logging.getLogger("make_summary")

KEY_SETTINGS = [
    "model.name",
    "data.name",
    "lora.r",
    "lora.lora_alpha",
    "training.learning_rate",
    "training.num_train_epochs",
    "training.max_steps",
    "training.per_device_train_batch_size",
    "training.gradient_accumulation_steps",
    "training.max_length",
    "training.seed",
]
COUNTS = ["train_records", "eval_records", "optimizer_steps"]
# From the training summary (experiment.json "training"), with how they are shown.
TRAINING = {"train_loss": number(4), "train_runtime_s": number(0)}
# How each metric (a `key` of metrics.csv) is rounded in the Markdown, LaTeX and HTML tables.
METRIC_FORMATS = {
    "eval_loss": number(4),
    "perplexity": number(2),
    "chrf": number(2),
    "bleu": number(2),
    "rougeL": number(2),
    "pass@1": number(3),
    "eval_hit_max": number(0),
    "probe_hit_max": number(0),
}
# The LaTeX table's metrics (the tuned model's; base values that differ between rows too), and every
# lm-evaluation-harness metric (keys lm_eval:<task>:<metric>, shown with 4 decimals).
LATEX_METRICS = ["eval_loss", "chrf", "bleu", "rougeL", "pass@1"]
LM_EVAL_PREFIX = "lm_eval:"
# metrics.csv columns that are not values of a model.
DESCRIPTIVE = {"key", "metric", "difference", "computed_on"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--experiment-json", nargs="+", required=True, help="experiment.json per experiment")
    parser.add_argument(
        "--metrics-csv", nargs="+", required=True, help="metrics.csv per experiment, same order"
    )
    parser.add_argument(
        "--keep-finished",
        action="store_true",
        help="add a row for every other experiment whose report is under results/",
    )
    parser.add_argument("--csv", required=True, help="summary CSV to write")
    parser.add_argument("--markdown", required=True, help="summary Markdown to write")
    parser.add_argument("--latex", required=True, help="summary LaTeX tabular to write")
    parser.add_argument("--html", required=True, help="summary HTML table to write")
    add_log_argument(parser)
    return parser.parse_args(argv)


def read_metrics(path: str) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def value(text: str) -> int | float | str | None:
    """A metrics.csv cell: counts stay integers, an empty cell (no value) is None."""
    if text == "":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def metric_format(key: str):
    return METRIC_FORMATS.get(key, number(4) if key.startswith(LM_EVAL_PREFIX) else plain)


def in_latex(key: str) -> bool:
    return key in LATEX_METRICS or key.startswith(LM_EVAL_PREFIX)


def summary_table(experiments: list[dict], tables: list[list[dict]]) -> tuple[Table, dict[str, list[str]]]:
    """Every column (settings, counts, training, each metric's value per model), and per metric the distinct
    descriptions of what it was computed on."""
    varied = [k for e in experiments for k in e["overrides"] if k not in KEY_SETTINGS]
    settings = KEY_SETTINGS + list(dict.fromkeys(varied))
    columns = [Column("experiment", "experiment")]
    columns += [Column(key, key) for key in settings]
    columns += [Column(key, key, numeric=True) for key in COUNTS]
    columns += [Column(key, key, shown, numeric=True) for key, shown in TRAINING.items()]
    rows, computed_on = [], {}
    for experiment, table in zip(experiments, tables, strict=True):
        row = {"experiment": experiment["experiment"]}
        row.update({key: experiment["settings"].get(key) for key in settings})
        row.update({key: experiment["counts"][key] for key in COUNTS})
        row.update({key: experiment.get("training", {}).get(key) for key in TRAINING})
        for metric in table:
            for side in (name for name in metric if name not in DESCRIPTIVE):
                row[f"{metric['key']}_{side}"] = value(metric[side])
                if not any(column.key == f"{metric['key']}_{side}" for column in columns):
                    shown = metric_format(metric["key"])
                    columns.append(Column(f"{metric['key']}_{side}", f"{metric['key']}_{side}", shown, True))
            described = computed_on.setdefault(metric["key"], [])
            if metric["computed_on"] not in described:
                described.append(metric["computed_on"])
        rows.append(row)
    return Table(columns, rows), computed_on


def split_constant(table: Table, keep: set[str]) -> tuple[Table, list[str]]:
    """The table without the columns (except `keep`) that show one value in every row, and a note of them."""
    shown = dict(zip((c.key for c in table.columns), zip(*table.cells(), strict=True), strict=True))
    constant = [c for c in table.columns[1:] if c.key not in keep and len(set(shown[c.key])) == 1]
    kept = Table([c for c in table.columns if c not in constant], table.rows)
    if not constant:
        return kept, []
    title = "Same in every row" if len(table.rows) > 1 else "Settings, counts and base-model values"
    return kept, [f"{title}: " + ", ".join(f"{c.title} = {shown[c.key][0]}" for c in constant)]


def computed_notes(computed_on: dict[str, list[str]]) -> list[str]:
    return [f"{key}: computed on {' | '.join(texts)}" for key, texts in computed_on.items()]


def latex_table(table: Table, computed_on: dict[str, list[str]]) -> str:
    """The experiment, the settings that differ, the tuned model's headline metrics; the rest as comments."""
    metrics = {c.key for c in table.columns if c.key.endswith("_tuned") and in_latex(c.key[: -len("_tuned")])}
    headline = [c for c in table.columns if c.key in metrics or in_latex(c.key.removesuffix("_base"))]
    settings = [c for c in table.columns if c not in headline and "." in c.key]
    narrow = Table([table.columns[0], *settings, *headline], table.rows)
    narrow, notes = split_constant(narrow, keep=metrics)
    comments = [
        "% Needs \\usepackage{booktabs}. The full table: summary.csv.",
        *notes,
        *computed_notes(computed_on),
    ]
    return "\n".join(f"% {line.removeprefix('% ')}" for line in comments) + "\n" + to_latex(narrow)


def write_text(path: str, text: str) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def write_tables(args: argparse.Namespace, table: Table, computed_on: dict[str, list[str]]) -> None:
    with atomic_path(args.csv) as temporary, open(temporary, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=[c.key for c in table.columns])
        writer.writeheader()
        writer.writerows({c.key: row.get(c.key) for c in table.columns} for row in table.rows)
    results = {c.key for c in table.columns if c.key.endswith("_tuned")} | set(TRAINING)
    shown, notes = split_constant(table, keep=results)
    notes += computed_notes(computed_on)
    markdown = md_table(shown.header(), shown.cells())
    write_text(args.markdown, "\n".join(markdown) + "\n\n" + "".join(f"- {md_escape(n)}\n" for n in notes))
    notes_html = "".join(f"<li>{html.escape(note)}</li>" for note in notes)
    write_text(args.html, table_html(shown, "summary") + f"\n<ul>{notes_html}</ul>\n")
    write_text(args.latex, latex_table(table, computed_on))


def finished_elsewhere(given: list[str]) -> list[tuple[str, str]]:
    """(experiment.json, metrics.csv) of every finished experiment under results/ that is not given."""
    found = layout.finished_reports()
    return [(f["experiment"], f["metrics"]) for f in found.values() if f["experiment"] not in given]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with step("make_summary", args.log_file):
        pairs = list(zip(args.experiment_json, args.metrics_csv, strict=True))
        if args.keep_finished:
            earlier = finished_elsewhere(args.experiment_json)
            if earlier:
                log.info("Keeping the rows of %d experiments finished earlier", len(earlier))
            pairs += earlier
        experiments = [read_json(experiment) for experiment, _ in pairs]
        tables = [read_metrics(metrics) for _, metrics in pairs]
        table, computed_on = summary_table(experiments, tables)
        write_tables(args, table, computed_on)
        log.info("Summarized %d experiments into %s (and .md, .tex, .html)", len(table.rows), args.csv)


if __name__ == "__main__":
    main()
