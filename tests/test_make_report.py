"""make_report.py on hand-written inputs: the table, the curves, the answers side by side, the recipe."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from conftest import ROOT, run_script


def write(path: Path, value) -> Path:
    if isinstance(value, list):
        path.write_text("".join(json.dumps(v, ensure_ascii=False) + "\n" for v in value), encoding="utf-8")
    else:
        path.write_text(json.dumps(value), encoding="utf-8")
    return path


def metrics(loss: float, hit: int) -> dict:
    return {
        "eval_loss": loss,
        "perplexity": 2.718281828**loss,
        "answer_tokens": 500,
        "records": 10,
        "probes_hit_max_new_tokens": hit,
        "decoding": {"strategy": "greedy", "max_new_tokens": 16},
    }


def test_report_shows_base_vs_tuned_curves_and_answers(tmp_path):
    history = tmp_path / "history.csv"
    history.write_text(
        "step,epoch,loss,eval_loss,learning_rate,grad_norm\n1,0.1,2.0,,1e-4,0.5\n2,0.2,1.5,,5e-5,0.4\n"
        "2,0.2,,1.7,,\n"
    )
    inputs = {
        "recipe": ROOT / "config/recipes/smollm2-135m-alpaca-sample.yaml",
        "model_source": write(
            tmp_path / "source.json",
            {
                "kind": "local",
                "path": "/m",
                "architecture": "Llama",
                "parameters": 1e6,
                "dtype": "float32",
                "trust_remote_code": True,
                "sha256": {"config.json": "ab" * 32},
            },
        ),
        "convert_summary": write(
            tmp_path / "c.json",
            {
                "input": "d.json",
                "input_sha256": "cd" * 32,
                "read": 12,
                "kept": 11,
                "rejected": 1,
                "kept_with_input": 4,
                "format": "alpaca",
                "format_chosen": "configured",
                "normalisations": {
                    "trim_whitespace": True,
                    "placeholder_inputs": ["No input"],
                    "drop_duplicates": "exact",
                    "max_record_chars": 0,
                },
                "trimmed": 3,
                "placeholder_inputs_emptied": 2,
                "rejected_duplicate": 1,
            },
        ),
        "split_summary": write(tmp_path / "s.json", {"seed": 3, "eval_size": 2, "train": 9, "eval": 2}),
        "history": history,
        "train_summary": write(
            tmp_path / "t.json",
            {
                "global_step": 2,
                "train_tokens": 100,
                "train_runtime_s": 4.0,
                "trainable_parameters": 10,
                "total_parameters": 100,
                "train_loss": 1.75,
                "final_eval_loss": 1.7,
                "resumed_from": None,
            },
        ),
        "base_metrics": write(tmp_path / "bm.json", metrics(2.5, 2)),
        "tuned_metrics": write(tmp_path / "tm.json", metrics(1.5, 1)),
        "base_generations": write(tmp_path / "bg.jsonl", [{"prompt": "写阶乘", "answer": "base <answer>"}]),
        "tuned_generations": write(tmp_path / "tg.jsonl", [{"prompt": "写阶乘", "answer": "tuned answer"}]),
    }
    outputs = {
        "markdown": tmp_path / "r" / "report.md",
        "metrics_csv": tmp_path / "r" / "metrics.csv",
        "curve": tmp_path / "r" / "loss_curve.png",
        "generations_csv": tmp_path / "r" / "generations.csv",
    }
    arguments = [f"--{k.replace('_', '-')}={v}" for k, v in {**inputs, **outputs}.items()]
    run_script("make_report.py", "--experiment", "demo", *arguments, "--manifest", tmp_path / "manifest.json")

    with open(outputs["metrics_csv"], newline="") as handle:
        rows = {row["metric"]: row for row in csv.DictReader(handle)}
    assert float(rows["eval loss"]["difference"]) == -1.0
    assert float(rows["probes that hit max_new_tokens"]["tuned"]) == 1
    report = outputs["markdown"].read_text(encoding="utf-8")
    assert "| eval loss | 2.5000 | 1.5000 | -1.0000 |" in report
    assert "12 records read, 11 kept, 1 rejected" in report
    assert "trust_remote_code **on**" in report and "> **trust_remote_code is on**" in report
    assert "[manifest.json](../manifest.json)" in report
    assert (
        "(3 records trimmed), 1 placeholder inputs (2 emptied), drop_duplicates exact (1 dropped)" in report
    )
    assert "base &lt;answer&gt;" in report and "tuned answer" in report
    assert "![training curves](loss_curve.png)" in report
    assert "learning_rate: 3.0e-4" in report, "the recipe used is embedded verbatim"
    assert outputs["curve"].read_bytes()[:4] == b"\x89PNG"
