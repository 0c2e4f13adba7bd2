#!/usr/bin/env python
"""Summarize experiments in one table: a row per experiment with its key settings (and every setting a grid
varies), data counts, and the base and tuned value of each metric of its report's metrics.csv.

Writes the table as CSV (every column, full precision), Markdown, a LaTeX `tabular` (booktabs rules) and
HTML. In the last three, rounded, a column of settings, counts or base-model metrics with the same value in
every row (of two or more) moves to a note under the table ("same in every row"); the tuned model's metrics
always stay. A note says what each metric was computed on.

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

from alpaca_lora.common import add_log_argument, atomic_path, read_json, setup_logging

log = logging.getLogger("make_summary")

KEY_SETTINGS = [
    "model.name",
    "data.name",
    "lora.r",
    "lora.alpha",
    "training.learning_rate",
    "training.num_train_epochs",
    "training.max_steps",
    "training.seed",
]
COUNTS = ["train_records", "eval_records", "optimizer_steps"]
# How each metric (a `key` of metrics.csv) is rounded in the Markdown, LaTeX and HTML tables.
METRIC_FORMATS = {
    "eval_loss": "{:.4f}",
    "perplexity": "{:.2f}",
    "chrf": "{:.2f}",
    "bleu": "{:.2f}",
    "rougeL": "{:.2f}",
    "pass@1": "{:.3f}",
    "eval_hit_max": "{:.0f}",
    "probe_hit_max": "{:.0f}",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--experiment-json", nargs="+", required=True, help="experiment.json per experiment")
    parser.add_argument(
        "--metrics-csv", nargs="+", required=True, help="metrics.csv per experiment, same order"
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


def value(text: str) -> int | float | None:
    """A metrics.csv cell: counts stay integers, an empty cell (no value) is None."""
    if text == "":
        return None
    try:
        return int(text)
    except ValueError:
        return float(text)


def summary_rows(
    experiments: list[dict], tables: list[list[dict]]
) -> tuple[list[dict], dict[str, list[str]]]:
    """The rows, and per metric the distinct descriptions of what it was computed on."""
    varied = [k for e in experiments for k in e["overrides"] if k not in KEY_SETTINGS]
    settings = KEY_SETTINGS + list(dict.fromkeys(varied))
    rows, computed_on = [], {}
    for experiment, table in zip(experiments, tables, strict=True):
        row = {"experiment": experiment["experiment"]}
        row.update({key: experiment["settings"].get(key) for key in settings})
        row.update({key: experiment["counts"][key] for key in COUNTS})
        for metric in table:
            for model in ("base", "tuned"):
                row[f"{metric['key']}_{model}"] = value(metric[model])
            described = computed_on.setdefault(metric["key"], [])
            if metric["computed_on"] not in described:
                described.append(metric["computed_on"])
        rows.append(row)
    return rows, computed_on


def shown(column: str, cell) -> str:
    if cell is None:
        return "n/a"
    metric = column.rsplit("_", 1)[0]
    if metric in METRIC_FORMATS:
        return METRIC_FORMATS[metric].format(cell)
    return f"{cell:g}" if isinstance(cell, float) else str(cell)


def presentation(rows: list[dict], computed_on: dict[str, list[str]]) -> tuple[list[dict], list[str]]:
    """Rounded rows without the columns that hold one value throughout, and the notes that replace them."""
    columns = list(rows[0])
    # The tuned model's metrics are the results: they stay columns even when equal.
    constant = [
        c
        for c in columns[1:]
        if len(rows) > 1 and not c.endswith("_tuned") and len({shown(c, r[c]) for r in rows}) == 1
    ]
    table = [{c: shown(c, r[c]) for c in columns if c not in constant} for r in rows]
    notes = (
        ["Same in every row: " + ", ".join(f"{c} = {shown(c, rows[0][c])}" for c in constant)]
        if constant
        else []
    )
    notes += [f"{key}: computed on {' | '.join(texts)}" for key, texts in computed_on.items()]
    return table, notes


def write_text(path: str, text: str) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def write_tables(args: argparse.Namespace, rows: list[dict], computed_on: dict[str, list[str]]) -> None:
    import pandas as pd

    with atomic_path(args.csv) as temporary:
        pd.DataFrame(rows).to_csv(temporary, index=False)
    table, notes = presentation(rows, computed_on)
    frame = pd.DataFrame(table)
    markdown = frame.to_markdown(index=False, disable_numparse=True)
    write_text(args.markdown, markdown + "\n\n" + "".join(f"- {note}\n" for note in notes))
    latex = frame.to_latex(index=False, escape=True, column_format="l" + "r" * (len(frame.columns) - 1))
    comments = ["% Needs \\usepackage{booktabs}.", *(f"% {note}" for note in notes)]
    # "--" in a cell (grid cell names) would print as an en dash.
    write_text(args.latex, "\n".join(comments) + "\n" + latex.replace("--", "-{}-"))
    notes_html = "".join(f"<li>{html.escape(note)}</li>" for note in notes)
    write_text(args.html, frame.to_html(index=False) + f"\n<ul>{notes_html}</ul>\n")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    setup_logging("make_summary", args.log_file)
    experiments = [read_json(path) for path in args.experiment_json]
    tables = [read_metrics(path) for path in args.metrics_csv]
    rows, computed_on = summary_rows(experiments, tables)
    write_tables(args, rows, computed_on)
    log.info("Summarized %d experiments into %s (and .md, .tex, .html)", len(rows), args.csv)


if __name__ == "__main__":
    main()
