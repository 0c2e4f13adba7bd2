"""make_report.py on hand-written inputs: the table, the curves, the answers side by side, the recipe."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import yaml

from conftest import ROOT, run_script


def write(path: Path, value) -> Path:
    if isinstance(value, list):
        path.write_text("".join(json.dumps(v, ensure_ascii=False) + "\n" for v in value), encoding="utf-8")
    else:
        path.write_text(json.dumps(value), encoding="utf-8")
    return path


def metrics(loss: float, hit: int, adapter: str | None) -> dict:
    return {
        "eval_loss": loss,
        "perplexity": 2.718281828**loss,
        "answer_tokens": 500,
        "records": 10,
        "probes": 2,
        "probes_hit_max_new_tokens": hit,
        "eval_answers": 2,
        "eval_answers_hit_max_new_tokens": 2 - hit,
        "model": "results/models/m",
        "adapter": adapter,
        "eval_file": "eval.templated.jsonl",
        "eval_sha256": "ef" * 32,
        "decoding": {
            "strategy": "greedy",
            "max_new_tokens": 16,
            "reference_max_new_tokens": 12,
            "stop_tokens": ["<|im_end|>"],
            "batch_size": 8,
        },
    }


def scores(chrf: float, passed: bool) -> dict:
    probe = {
        "id": "f",
        "prompt": "写阶乘",
        "passed": passed,
        "status": "passed" if passed else "failed",
        "tests_passed": 2 if passed else 1,
        "tests": 2,
    }
    return {
        "probes_file": "config/probes.yaml",
        "reference": {
            "records": 2,
            "chrf": chrf,
            "bleu": chrf / 2,
            "rougeL": chrf / 3,
            "signatures": {"chrf": "chrF2|sig", "bleu": "BLEU|tok:zh", "rougeL": "rouge"},
            "per_record": [{"id": i, "chrf": chrf, "bleu": 0.0, "rougeL": 0.0} for i in "ab"],
        },
        "code": {
            "problems": 1,
            "passed": int(passed),
            "pass@1": float(passed),
            "limits": {"timeout_s": 10, "memory_mb": 512},
            "isolation": {"layers": ["process limits", "audit hook", "mount, pid and network namespaces"]},
            "per_probe": [probe],
        },
    }


def answers(model: str) -> list[dict]:
    return [
        {
            "id": i,
            "prompt": f"q{i}",
            "reference": f"ref {i}",
            "answer": f"{model} {i}",
            "hit_max_new_tokens": True,
        }
        for i in "ab"
    ]


def probe_answers(model: str) -> list[dict]:
    return [
        {"prompt": "写阶乘", "answer": f"{model} <answer>", "hit_max_new_tokens": False},
        {"prompt": "Hello", "answer": f"{model} hi", "hit_max_new_tokens": True},
    ]


def report_arguments(tmp_path: Path) -> tuple[dict, dict]:
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
        "base_metrics": write(tmp_path / "bm.json", metrics(2.5, 2, None)),
        "tuned_metrics": write(tmp_path / "tm.json", metrics(1.5, 1, "results/x/train/adapter")),
        "base_scores": write(tmp_path / "bs.json", scores(20.0, False)),
        "tuned_scores": write(tmp_path / "ts.json", scores(50.0, True)),
        "base_generations": write(tmp_path / "bg.jsonl", probe_answers("base")),
        "tuned_generations": write(tmp_path / "tg.jsonl", probe_answers("tuned")),
        "base_eval_answers": write(tmp_path / "be.jsonl", answers("base")),
        "tuned_eval_answers": write(tmp_path / "te.jsonl", answers("tuned")),
    }
    out = tmp_path / "r"
    outputs = {
        "markdown": out / "report.md",
        "html": out / "report.html",
        "metrics_csv": out / "metrics.csv",
        "curve": out / "loss_curve.png",
        "generations_csv": out / "generations.csv",
        "eval_answers_csv": out / "eval_answers.csv",
        "experiment_json": out / "experiment.json",
    }
    return inputs, outputs


def make_report(inputs: dict, outputs: dict, *extra: str) -> None:
    arguments = [f"--{k.replace('_', '-')}={v}" for k, v in {**inputs, **outputs}.items()]
    manifest = outputs["markdown"].parent.parent / "manifest.json"
    run_script("make_report.py", "--experiment", "demo", *arguments, "--manifest", manifest, *extra)


def test_report_shows_base_vs_tuned_curves_and_answers(tmp_path):
    inputs, outputs = report_arguments(tmp_path)
    make_report(inputs, outputs)

    with open(outputs["metrics_csv"], newline="") as handle:
        rows = {row["key"]: row for row in csv.DictReader(handle)}
    assert float(rows["eval_loss"]["difference"]) == -1.0
    assert float(rows["chrf"]["difference"]) == 30.0 and float(rows["pass@1"]["tuned"]) == 1.0
    assert int(rows["probe_hit_max"]["tuned"]) == 1 and int(rows["eval_hit_max"]["base"]) == 0
    assert rows["eval_loss"]["computed_on"] == "eval split: 10 records, 500 answer tokens"
    assert rows["bleu"]["computed_on"].startswith("first 2 eval records; greedy, max_new_tokens 12, stop at")
    assert "max_new_tokens 16" in rows["pass@1"]["computed_on"]
    assert rows["pass@1"]["computed_on"].endswith(
        "(10 s, 512 MB; layers: process limits + audit hook + mount, pid and network namespaces)"
    ), "the isolation line: the layers the scores say were active"
    assert "tok:zh" in rows["bleu"]["computed_on"]
    report = outputs["markdown"].read_text(encoding="utf-8")
    assert "| eval loss (answer tokens) | 2.5000 | 1.5000 | -1.0000 | eval split: 10 records" in report
    assert "| chrF | 20.0000 | 50.0000 | 30.0000 |" in report
    assert "stop at `<|im_end|>`" in report and "<\\|im_end\\|>" in report, "pipes escaped in tables"
    assert "| 写阶乘 | fail (1/2 tests; failed) | pass (2/2 tests; passed) |" in report
    assert "12 records read, 11 kept, 1 rejected" in report
    assert "trust_remote_code **on**" in report and "> **trust_remote_code is on**" in report
    assert "[manifest.json](../manifest.json)" in report
    assert (
        "(3 records trimmed), 1 placeholder inputs (2 emptied), drop_duplicates exact (1 dropped)" in report
    )
    assert "base &lt;answer&gt;" in report and "tuned hi" in report and "ref b" in report
    assert "![training curves](loss_curve.png)" in report
    assert "learning_rate: 3.0e-4" in report, "the recipe used is embedded verbatim"
    assert outputs["curve"].read_bytes()[:4] == b"\x89PNG"
    page = outputs["html"].read_text(encoding="utf-8")
    assert "<td>写阶乘</td>" in page and 'src="data:image/png;base64,' in page
    with open(outputs["eval_answers_csv"], newline="", encoding="utf-8") as handle:
        side_by_side = list(csv.DictReader(handle))
    assert [(r["reference"], r["base"], r["tuned"]) for r in side_by_side] == [
        ("ref a", "base a", "tuned a"),
        ("ref b", "base b", "tuned b"),
    ]
    experiment = json.loads(outputs["experiment_json"].read_text())
    assert experiment["settings"]["lora.r"] == 16 and experiment["overrides"] == {}
    assert experiment["counts"] == {
        "records_read": 12,
        "records_kept": 11,
        "train_records": 9,
        "eval_records": 2,
        "optimizer_steps": 2,
    }


def test_a_grid_cells_settings_are_reported(tmp_path):
    inputs, outputs = report_arguments(tmp_path)
    recipe = yaml.safe_load(Path(inputs["recipe"]).read_text(encoding="utf-8"))
    recipe["lora"]["r"] = 4
    make_report(inputs, outputs, "--settings", json.dumps({"recipe": recipe, "overrides": {"lora.r": 4}}))
    report = outputs["markdown"].read_text(encoding="utf-8")
    assert "grid cell changing `lora.r` = `4`" in report
    assert json.loads(outputs["experiment_json"].read_text())["settings"]["lora.r"] == 4


def test_without_eval_answers_or_code_probes_the_metrics_say_n_a(tmp_path):
    """reference_records 0 and a probe file without tests: the report still builds, saying n/a."""
    from score_answers import code_scores, reference_scores

    inputs, outputs = report_arguments(tmp_path)
    empty = {"probes_file": "p.yaml", "reference": reference_scores([]), "code": code_scores([], [], 10, 512)}
    for which in ("base", "tuned"):
        inputs[f"{which}_scores"] = write(tmp_path / f"{which}-empty.json", empty)
        inputs[f"{which}_eval_answers"] = write(tmp_path / f"{which}-none.jsonl", [])
    make_report(inputs, outputs)
    report = outputs["markdown"].read_text(encoding="utf-8")
    assert "| chrF | n/a | n/a | n/a | first 0 eval records;" in report
    assert "| pass@1 (code probes) | n/a | n/a | n/a | 0 probes with tests" in report
    layers = " + ".join(empty["code"]["isolation"]["layers"])
    assert f"layers: {layers})" in report and layers.startswith("process limits + audit hook")
    header = outputs["eval_answers_csv"].read_text().strip().split(",")
    assert header[:5] == ["id", "prompt", "reference", "base", "tuned"], (
        "a table without rows keeps its header"
    )
