"""make_summary.py on hand-written per-experiment files: the rows, the constant-column notes, LaTeX."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from conftest import ROOT, run_script

METRIC_KEYS = ["eval_loss", "chrf", "pass@1", "eval_hit_max"]


def experiment(folder: Path, name: str, r: int, seed: int, losses: tuple[float, float], chrf) -> dict:
    folder.mkdir()
    settings = {
        "model.name": "tiny",
        "data.name": "small",
        "lora.r": r,
        "lora.lora_alpha": 32,
        "training.learning_rate": 0.0003,
        "training.num_train_epochs": 1,
        "training.max_steps": 4,
        "training.seed": seed,
        "training.max_length": 128,
        "training.per_device_train_batch_size": 4,
        "training.gradient_accumulation_steps": 1,
    }
    record = {
        "experiment": name,
        "recipe_file": "config/recipes/base.yaml",
        "overrides": {"lora.r": r, "training.seed": seed, "training.max_length": 128},
        "settings": settings,
        "counts": {
            "records_read": 40,
            "records_kept": 40,
            "train_records": 32,
            "eval_records": 8,
            "optimizer_steps": 4,
        },
        "training": {"train_loss": losses[1] + 0.5, "train_runtime_s": 12.5 * r, "train_tokens": 1000},
    }
    (folder / "experiment.json").write_text(json.dumps(record))
    rows = [
        {"key": "eval_loss", "base": losses[0], "tuned": losses[1], "computed_on": "eval split: 8 records"},
        {"key": "chrf", "base": 10.0, "tuned": chrf, "computed_on": "first 4 eval records"},
        {"key": "pass@1", "base": 0.0, "tuned": 0.5, "computed_on": "2 probes with tests"},
        {"key": "eval_hit_max", "base": 4, "tuned": 1, "computed_on": "4 eval answers"},
    ]
    with open(folder / "metrics.csv", "w", newline="") as handle:
        writer = csv.DictWriter(
            handle, fieldnames=["key", "metric", "base", "tuned", "difference", "computed_on"]
        )
        writer.writeheader()
        writer.writerows({**row, "metric": row["key"], "difference": ""} for row in rows)
    return {"name": name, "folder": folder, "losses": losses, "chrf": chrf}


def summarize(tmp_path: Path, experiments: list[dict], *extra: str, cwd: Path = ROOT) -> dict[str, Path]:
    out = {ext: tmp_path / f"summary.{ext}" for ext in ("csv", "md", "tex", "html")}
    run_script(
        "make_summary.py",
        *extra,
        "--experiment-json",
        *[e["folder"] / "experiment.json" for e in experiments],
        "--metrics-csv",
        *[e["folder"] / "metrics.csv" for e in experiments],
        "--csv",
        out["csv"],
        "--markdown",
        out["md"],
        "--latex",
        out["tex"],
        "--html",
        out["html"],
        cwd=cwd,
    )
    return out


def test_one_row_per_experiment_with_settings_and_metrics(tmp_path):
    experiments = [
        experiment(tmp_path / "a", "base--lora.r=4--training.seed=1", 4, 1, (2.5, 1.25), 33.3),
        experiment(tmp_path / "b", "base--lora.r=8--training.seed=1", 8, 1, (2.5, 1.125), None),
    ]
    out = summarize(tmp_path, experiments)
    with open(out["csv"], newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["experiment"] for row in rows] == [e["name"] for e in experiments]
    for row, source in zip(rows, experiments, strict=True):
        assert float(row["eval_loss_base"]) == source["losses"][0]
        assert float(row["eval_loss_tuned"]) == source["losses"][1]
        assert row["eval_hit_max_tuned"] == "1" and row["train_records"] == "32"
    assert rows[0]["lora.r"] == "4" and rows[1]["lora.r"] == "8"
    assert float(rows[0]["chrf_tuned"]) == 33.3 and rows[1]["chrf_tuned"] == ""
    assert "training.max_length" in rows[0], "a setting a grid varies gets a column"
    assert float(rows[1]["train_loss"]) == 1.625 and float(rows[1]["train_runtime_s"]) == 100.0
    assert rows[0]["training.per_device_train_batch_size"] == "4"

    markdown = out["md"].read_text()
    header = markdown.splitlines()[0]
    assert "lora.r" in header and "eval_loss_tuned" in header and "chrf_tuned" in header
    assert "eval_loss_base" not in header and "training.seed" not in header
    same = next(line for line in markdown.splitlines() if line.startswith("- Same in every row: "))
    assert "eval_loss_base = 2.5000" in same and "training.seed = 1" in same and "lora.r" not in same
    assert "pass@1_tuned" in header, "the tuned model's results stay columns, even when equal"
    assert "- eval_loss: computed on eval split: 8 records" in markdown
    assert "1.2500" in markdown and "n/a" in markdown


def test_latex_tabular_is_escaped(tmp_path):
    experiments = [
        experiment(tmp_path / "a", "base--lora.r=4", 4, 1, (2.5, 1.25), 33.3),
        experiment(tmp_path / "b", "base--lora.r=8", 8, 2, (2.5, 1.0), 40.0),
    ]
    latex = summarize(tmp_path, experiments)["tex"].read_text()
    assert "\\begin{tabular}" in latex and "\\end{tabular}" in latex
    assert "base-{}-lora.r=4" in latex, "-- would print as an en dash"
    assert "eval\\_loss\\_tuned" in latex and "chrf\\_tuned" in latex
    body = [line for line in latex.splitlines() if line.endswith("\\\\")]
    assert len(body) == 3, "a header and one row per experiment"
    header = body[0].split(" & ")
    # Readable: the experiment, the two settings that differ, the tuned model's headline metrics (eval loss,
    # chrF, BLEU, ROUGE-L, pass@1: those of them that metrics.csv has).
    assert header == [
        "experiment",
        "lora.r",
        "training.seed",
        "eval\\_loss\\_tuned",
        "chrf\\_tuned",
        "pass@1\\_tuned \\\\",
    ], "eval_hit_max and the base values are not headline columns"
    assert "% Same in every row: model.name = tiny, data.name = small," in latex
    assert "eval\\_loss\\_base" not in latex.split("\\begin{tabular}")[1], (
        "a constant base value is a comment"
    )


def test_one_experiment_gives_a_narrow_table(tmp_path):
    """One row: settings, counts and base values are notes; LaTeX: the experiment and the headline metrics."""
    out = summarize(tmp_path, [experiment(tmp_path / "a", "only", 4, 1, (2.5, 1.25), 33.3)])
    latex = out["tex"].read_text()
    assert "\\begin{tabular}{lrrr}" in latex and "only & 1.2500 & 33.30 & 0.500 \\\\" in latex
    assert "% Settings, counts and base-model values: model.name = tiny" in latex
    header = out["md"].read_text().splitlines()[0]
    assert header.startswith("| experiment | train_loss | train_runtime_s | eval_loss_tuned |")
    assert "lora.r" not in header and "eval_loss_base" not in header


def test_rows_of_experiments_finished_earlier_are_kept(tmp_path):
    """A run that selects one experiment keeps the rows of the others whose reports are under results/."""
    from alpaca_lora import layout

    work = tmp_path / "work"
    earlier = experiment(tmp_path / "earlier", "earlier", 8, 2, (2.5, 1.5), 20.0)
    report = layout.files("report", experiment="earlier")
    for path in report.values():
        (work / path).parent.mkdir(parents=True, exist_ok=True)
        source = earlier["folder"] / Path(path).name
        (work / path).write_bytes(source.read_bytes() if source.exists() else b"")
    unfinished = work / layout.files("report", experiment="unfinished")["experiment"]
    unfinished.parent.mkdir(parents=True)
    unfinished.write_text("{}")  # the rest of its report is missing: not a finished experiment
    now = experiment(tmp_path / "now", "now", 4, 1, (2.5, 1.25), 33.3)
    out = summarize(tmp_path, [now], "--keep-finished", cwd=work)
    with open(out["csv"], newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["experiment"] for row in rows] == ["now", "earlier"]
    assert float(rows[1]["chrf_tuned"]) == 20.0


def test_a_seed_grid_is_summarised_as_mean_and_interval_per_setting(tmp_path):
    """lora.r x training.seed: per r, the tuned eval loss over three seeds as mean ± Student-t half-width in
    seeds.csv and the LaTeX table, and a plot per metric against lora.r."""
    from scipy import stats as scipy_stats

    losses = {4: [1.25, 1.5, 1.0], 8: [1.0, 1.125, 0.875]}
    experiments = [
        experiment(
            tmp_path / f"r{r}s{seed}", f"base--lora.r={r}--training.seed={seed}", r, seed, (2.5, loss), 30.0
        )
        for r, values in losses.items()
        for seed, loss in enumerate(values, start=1)
    ]
    plots = tmp_path / "plots"
    seeds_csv = tmp_path / "seeds.csv"
    out = summarize(tmp_path, experiments, "--seeds-csv", seeds_csv, "--plots", plots)
    with open(seeds_csv, newline="") as handle:
        rows = {row["lora.r"]: row for row in csv.DictReader(handle)}
    assert set(rows) == {"4", "8"} and "training.seed" not in next(iter(rows.values()))
    for r, values in losses.items():
        mean = sum(values) / 3
        half = scipy_stats.t.ppf(0.975, 2) * scipy_stats.sem(values)
        assert rows[str(r)]["seeds"] == "3"
        assert float(rows[str(r)]["eval_loss_tuned_mean"]) == pytest.approx(mean)
        assert float(rows[str(r)]["eval_loss_tuned_half_width"]) == pytest.approx(half)
    latex = out["tex"].read_text()
    body = [line for line in latex.splitlines() if line.endswith("\\\\")]
    assert len(body) == 3, "a header and one row per setting, not per seed"
    half = scipy_stats.t.ppf(0.975, 2) * scipy_stats.sem(losses[4])
    assert body[1].startswith(f"4 & 3 & {sum(losses[4]) / 3:.4f} ± {half:.4f} & "), body[1]
    assert (plots / "eval_loss-vs-lora.r.png").read_bytes()[:4] == b"\x89PNG"


def test_a_seed_plots_dashed_line_is_the_base_models_value():
    """One base evaluation serves a grid: its value is any row's tuned mean minus its mean difference."""
    import make_summary

    tuned = {"eval_loss_tuned_mean": 1.25, "eval_loss_difference_mean": -1.25}
    rows = [{"eval_loss_tuned_mean": None}, tuned]
    assert make_summary.base_value(rows, "eval_loss") == 2.5
    assert make_summary.base_value(rows[:1], "eval_loss") is None
