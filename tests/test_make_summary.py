"""make_summary.py on hand-written per-experiment files: the rows, the constant-column notes, LaTeX."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from conftest import run_script

METRIC_KEYS = ["eval_loss", "chrf", "pass@1", "eval_hit_max"]


def experiment(folder: Path, name: str, r: int, seed: int, losses: tuple[float, float], chrf) -> dict:
    folder.mkdir()
    settings = {
        "model.name": "tiny",
        "data.name": "small",
        "lora.r": r,
        "lora.alpha": 32,
        "training.learning_rate": 0.0003,
        "training.num_train_epochs": 1,
        "training.max_steps": 4,
        "training.seed": seed,
        "training.max_length": 128,
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


def summarize(tmp_path: Path, experiments: list[dict]) -> dict[str, Path]:
    out = {ext: tmp_path / f"summary.{ext}" for ext in ("csv", "md", "tex", "html")}
    run_script(
        "make_summary.py",
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
    assert "% Same in every row: model.name = tiny, data.name = small," in latex
