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
import json
import logging
import math
from pathlib import Path

from alpaca_lora import layout, stats
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
    "humaneval_pass@1": number(3),
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
LATEX_METRICS = ["eval_loss", "chrf", "bleu", "rougeL", "pass@1", "humaneval_pass@1"]
LM_EVAL_PREFIX = "lm_eval:"
# metrics.csv columns that are not values of a model (the difference, its interval bounds and n are kept:
# `<metric>_difference_low` ...).
DESCRIPTIVE = {"key", "metric", "computed_on"}
# The setting a seed grid varies: rows that differ only in it are one setting, summarised over seeds.
SEED = "training.seed"
# What the seed table summarises per metric: the tuned value and the base-vs-tuned difference.
SEED_PARTS = ("tuned", "difference")


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
    parser.add_argument(
        "--seeds-csv",
        help="CSV to write: per setting, each metric's mean over seeds, the half-width of its 95%% CI, n",
    )
    parser.add_argument(
        "--plots",
        help="folder to write a PNG per metric and varied setting into (mean and 95%% CI over seeds)",
    )
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


def seed_groups(experiments: list[dict], table: Table) -> tuple[list[str], list[list[dict]]]:
    """The settings the experiments vary besides the seed, and the rows grouped by their values (and recipe):
    one group per setting, one row per seed."""
    varied = list(dict.fromkeys(k for e in experiments for k in e["overrides"] if k != SEED))
    groups: dict[tuple, list[dict]] = {}
    for experiment, row in zip(experiments, table.rows, strict=True):
        key = (experiment["recipe_file"], *(json_key(experiment["settings"].get(k)) for k in varied))
        groups.setdefault(key, []).append(row)
    return varied, list(groups.values())


def json_key(value: object) -> str:
    return json.dumps(value, sort_keys=True)


def seed_table(experiments: list[dict], table: Table) -> tuple[Table, list[str]]:
    """Per setting: its varied values, the seeds, and per metric (tuned value and difference) the mean over
    seeds and the half-width of its Student-t 95% interval; and the metric keys summarised."""
    varied, groups = seed_groups(experiments, table)
    keys = [c.key for c in table.columns]
    metrics = [m for m in [*LATEX_METRICS, *METRIC_FORMATS] if f"{m}_tuned" in keys]
    metrics = list(dict.fromkeys(metrics))
    columns = [Column(k, k) for k in varied] + [Column("seeds", "seeds", numeric=True)]
    rows = []
    for group in groups:
        row = {k: group[0].get(k) for k in varied}
        row["seeds"] = len(group)
        for metric in metrics:
            for part in SEED_PARTS:
                found = stats.mean_interval([r.get(f"{metric}_{part}") for r in group])
                row[f"{metric}_{part}_mean"] = found["mean"]
                row[f"{metric}_{part}_half_width"] = found["half_width"]
        rows.append(row)
    for metric in metrics:
        shown = METRIC_FORMATS.get(metric, plain)
        for part in SEED_PARTS:
            columns += [
                Column(f"{metric}_{part}_mean", f"{metric}_{part} mean", shown, True),
                Column(f"{metric}_{part}_half_width", f"{metric}_{part} ±", shown, True),
            ]
    return Table(columns, rows), metrics


def mean_pm(row: dict, key: str, shown) -> str:
    """mean ± half-width (the half-width left out when there is one seed)."""
    mean, half = row.get(f"{key}_mean"), row.get(f"{key}_half_width")
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "n/a"
    if half is None or math.isnan(half):
        return shown(mean)
    return f"{shown(mean)} ± {shown(half)}"


def seeds_latex(seeds: Table, metrics: list[str], computed_on: dict[str, list[str]]) -> str:
    """The paper table of a seed grid: per setting, the tuned model's headline metrics as mean ± half-width of
    the 95% interval over seeds."""
    settings = [c for c in seeds.columns if "." in c.key]
    constant = [c for c in settings if len({json_key(row.get(c.key)) for row in seeds.rows}) == 1]
    settings = [c for c in settings if c not in constant] or settings[:1]
    headline = [m for m in metrics if m in LATEX_METRICS]
    rows = [
        {
            **{c.key: row.get(c.key) for c in settings},
            "seeds": row["seeds"],
            **{m: mean_pm(row, f"{m}_tuned", METRIC_FORMATS.get(m, plain)) for m in headline},
        }
        for row in seeds.rows
    ]
    columns = [*settings, Column("seeds", "seeds", numeric=True)]
    columns += [Column(m, f"{m} (tuned)", numeric=True) for m in headline]
    comments = [
        "Needs \\usepackage{booktabs}. Mean over seeds ± half-width of its 95% Student-t interval.",
        "Every setting and metric, tuned and difference: seeds.csv.",
        *(
            ["Same in every row: " + ", ".join(f"{c.key} = {seeds.rows[0].get(c.key)}" for c in constant)]
            * bool(constant)
        ),
        *computed_notes(computed_on),
    ]
    return "\n".join(f"% {line}" for line in comments) + "\n" + to_latex(Table(columns, rows))


def spans_decades(values: list) -> bool:
    """Positive numbers whose largest is at least ten times the smallest: plotted on a log axis."""
    numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    return len(numbers) == len(values) > 1 and min(numbers) > 0 and max(numbers) >= 10 * min(numbers)


def base_value(rows: list[dict], metric: str) -> float | None:
    """The base model's value of a metric (tuned minus difference; one base evaluation serves a grid)."""
    for row in rows:
        tuned, difference = row.get(f"{metric}_tuned_mean"), row.get(f"{metric}_difference_mean")
        if isinstance(tuned, float) and isinstance(difference, float) and not math.isnan(tuned - difference):
            return tuned - difference
    return None


def plot_seeds(seeds: Table, metrics: list[str], folder: str) -> list[str]:
    """A PNG per metric and varied setting: the tuned value (mean over seeds, 95% interval as error bars)
    against the setting, one line per value of the other varied settings, the base model as a dashed line."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    Path(folder).mkdir(parents=True, exist_ok=True)
    varied = [c.key for c in seeds.columns if "." in c.key]
    written = []
    for setting in varied:
        others = [k for k in varied if k != setting]
        for metric in metrics:
            figure, axis = plt.subplots(figsize=(5, 3.5))
            lines: dict[str, list[dict]] = {}
            for row in seeds.rows:
                label = ", ".join(f"{k}={row[k]}" for k in others) or "tuned"
                lines.setdefault(label, []).append(row)
            for label, rows in lines.items():
                rows = sorted(rows, key=lambda r: (isinstance(r[setting], str), r[setting]))
                x = [
                    str(r[setting]) if isinstance(r[setting], str | bool | list) else r[setting] for r in rows
                ]
                y = [r[f"{metric}_tuned_mean"] for r in rows]
                error = [
                    0.0 if math.isnan(r[f"{metric}_tuned_half_width"]) else r[f"{metric}_tuned_half_width"]
                    for r in rows
                ]
                axis.errorbar(x, y, yerr=error, marker="o", capsize=4, label=label)
            base = base_value(seeds.rows, metric)
            if base is not None:
                axis.axhline(base, color="grey", linestyle="--", linewidth=1, label="base model")
            axis.set_xlabel(setting)
            values = [row[setting] for row in seeds.rows]
            if spans_decades(values):
                axis.set_xscale("log")  # learning rates and the like: 1e-4, 3e-4, 1e-3 evenly apart
                ticks = sorted(set(values))  # numbers only here: at the grid's own values
                axis.set_xticks(ticks, [f"{v:g}" for v in ticks])
                axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            axis.set_ylabel(metric)
            axis.set_title(f"{metric} after tuning: mean and 95% CI over seeds", fontsize="medium")
            axis.grid(alpha=0.3)
            axis.legend(fontsize="small")
            figure.tight_layout()
            path = Path(folder) / f"{metric}-vs-{setting}.png".replace("@", "_at_")
            figure.savefig(path, format="png", dpi=100, metadata={"Software": None})
            plt.close(figure)
            written.append(str(path))
    return written


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


def write_seeds_csv(path: str, seeds: Table) -> None:
    with atomic_path(path) as temporary, open(temporary, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=[c.key for c in seeds.columns])
        writer.writeheader()
        writer.writerows({c.key: row.get(c.key) for c in seeds.columns} for row in seeds.rows)


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
        seeds, metrics = seed_table(experiments, table)
        if any(row["seeds"] > 1 for row in seeds.rows):
            # A seed grid: the paper table is per setting, mean ± half-width over seeds.
            write_text(args.latex, seeds_latex(seeds, metrics, computed_on))
        if args.seeds_csv:
            write_seeds_csv(args.seeds_csv, seeds)
        if args.plots:
            plots = plot_seeds(seeds, metrics, args.plots)
            log.info("Wrote %d plots into %s", len(plots), args.plots)
        log.info("Summarized %d experiments into %s (and .md, .tex, .html)", len(table.rows), args.csv)


if __name__ == "__main__":
    main()
