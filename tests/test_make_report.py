"""make_report.py on hand-written inputs: the table, the curves, the answers side by side, the recipe."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from alpaca_lora.humaneval import INSTRUCTION
from conftest import ROOT, recipe_line, run_script


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
        # 10 records of 50 answer tokens whose losses spread around the mean (they sum to it).
        "per_record": [
            {"id": str(i), "loss_sum": loss * (50 + (5.0 if i % 2 else -5.0) * (i // 2 + 1)), "tokens": 50}
            for i in range(10)
        ],
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


TESTS = ["assert factorial(0) == 1", "assert factorial(5) == 120"]
# A tested probe's outcome -> (status, detail, each test's error); score_answers.py writes them this way.
OUTCOMES = {
    "passed": ("passed", "", [None, None]),
    "failed": ("failed", "RecursionError: maximum recursion", ["RecursionError: maximum recursion", None]),
    "wrong function": (
        "wrong function",
        "the code defines no factorial() (it defines sum_power())",
        ["not run", "not run"],
    ),
}


def failure_of(error: str | None) -> dict:
    """ "RecursionError: maximum recursion" -> kind and message; "not run" has no message."""
    if error is None:
        return {"kind": None, "message": ""}
    kind, _, message = error.partition(": ")
    return {"kind": kind, "message": message}


def scores(chrf: float, outcome: str) -> dict:
    status, detail, errors = OUTCOMES[outcome]
    # Each test's result as the sandbox writes it: a failure kind and its bounded message.
    results = [{"test": t, "passed": e is None, **failure_of(e)} for t, e in zip(TESTS, errors, strict=True)]
    probe = {
        "id": "f",
        "prompt": "写阶乘",
        "passed": outcome == "passed",
        "status": status,
        "detail": detail,
        "tests_passed": sum(r["passed"] for r in results),
        "tests": len(TESTS),
        "test_results": results,
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
            "passed": int(outcome == "passed"),
            "pass@1": float(outcome == "passed"),
            "limits": {"timeout_s": 10, "memory_mb": 512},
            "isolation": {"layers": ["process limits", "audit hook", "mount, pid and network namespaces"]},
            "per_probe": [probe],
        },
        "humaneval": {
            "problems": 4,
            "passed": int(chrf > 30),
            "pass@1": int(chrf > 30) / 4,
            "samples": 0,
            "sampled_pass@k": {},
            "failures": {"no code": 3} if chrf > 30 else {"no code": 2, "timeout": 2},
            "instruction": "x",
        },
    }


def humaneval_results(passes: int) -> list[dict]:
    """Per-problem results as score_answers.py writes them: the first `passes` pass."""
    return [
        {
            "task_id": f"HumanEval/{i}",
            "passed": i < passes,
            "failure": None if i < passes else "no code",
            "detail": "",
            "code_shape": "none",
            "samples": 0,
            "correct": 0,
        }
        for i in range(4)
    ]


# Answers as small models write them: leading and inner blank lines, code fences (one never closed), comment
# lines that Markdown would take for headings, HTML that a page would take for markup, entities, table pipes.
ANSWERS = {
    "base": (
        "```python\ndef factorial(n):\n    return n * factorial(n - 1)\n\n# Example usage:\n"
        "print(factorial(5))  # Output: 120\n```\n\nIt returns </pre></td><td><pre> &quot;120&quot; | "
        "<b>done</b> & [x](y) *z*"
    ),
    "tuned": (
        "\n\ndef sum_power(n, k):\n    return n ** k if k &lt; 0 else 0\n```\n\n1. first\n- item\n\n"
        "    indented & <script>document.body.remove()</script> ~~~\n````\n<!-- comment -->"
    ),
}


def answers(model: str) -> list[dict]:
    return [
        {
            "id": i,
            "prompt": f"q{i} <b>bold</b> &amp;",
            "reference": f"ref {i}\n\n# heading?",
            "answer": f"{model} {i}",
            "hit_max_new_tokens": True,
        }
        for i in "ab"
    ]


def probe_answers(model: str) -> list[dict]:
    return [
        {"prompt": "写阶乘", "answer": ANSWERS[model], "hit_max_new_tokens": False},
        {"prompt": "Hello", "answer": f"{model} hi", "hit_max_new_tokens": True},
    ]


def report_arguments(tmp_path: Path) -> tuple[dict, dict]:
    for which in ("base", "tuned"):
        (tmp_path / "eval" / which).mkdir(parents=True)
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
        "base_scores": write(tmp_path / "bs.json", scores(20.0, "failed")),
        "tuned_scores": write(tmp_path / "ts.json", scores(50.0, "wrong function")),
        "base_generations": write(tmp_path / "bg.jsonl", probe_answers("base")),
        "tuned_generations": write(tmp_path / "tg.jsonl", probe_answers("tuned")),
        "base_eval_answers": write(tmp_path / "be.jsonl", answers("base")),
        "tuned_eval_answers": write(tmp_path / "te.jsonl", answers("tuned")),
        "base_humaneval": write(tmp_path / "eval" / "base" / "humaneval.jsonl", humaneval_results(0)),
        "tuned_humaneval": write(tmp_path / "eval" / "tuned" / "humaneval.jsonl", humaneval_results(1)),
    }
    out = tmp_path / "r"
    outputs = {
        "markdown": out / "report.md",
        "html": out / "report.html",
        "metrics_csv": out / "metrics.csv",
        "metrics_json": out / "metrics.json",
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


def rendered_markdown(path: Path):
    """report.md as CommonMark (with tables) renders it: the library that renders Markdown on GitHub too."""
    import lxml.html
    from markdown_it import MarkdownIt

    markup = MarkdownIt("commonmark").enable("table").render(path.read_text(encoding="utf-8"))
    return lxml.html.fromstring(f"<div>{markup}</div>")


def every_answer(outputs: dict) -> list[str]:
    """Each text the report shows verbatim, in order: probe prompts and answers, eval prompts, references and
    answers."""
    with open(outputs["generations_csv"], newline="", encoding="utf-8") as handle:
        probes = [[row["prompt"], row["base"], row["tuned"]] for row in csv.DictReader(handle)]
    with open(outputs["eval_answers_csv"], newline="", encoding="utf-8") as handle:
        records = [[r["prompt"], r["reference"], r["base"], r["tuned"]] for r in csv.DictReader(handle)]
    return [text for row in probes + records for text in row]


def test_report_shows_base_vs_tuned_curves_and_answers(tmp_path):
    inputs, outputs = report_arguments(tmp_path)
    make_report(inputs, outputs)

    with open(outputs["metrics_csv"], newline="") as handle:
        rows = {row["key"]: row for row in csv.DictReader(handle)}
    assert float(rows["eval_loss"]["difference"]) == -1.0
    assert float(rows["chrf"]["difference"]) == 30.0 and float(rows["pass@1"]["tuned"]) == 0.0
    assert int(rows["probe_hit_max"]["tuned"]) == 1 and int(rows["eval_hit_max"]["base"]) == 0
    assert rows["eval_loss"]["computed_on"] == "eval split: 10 records, 500 answer tokens"
    assert rows["bleu"]["computed_on"].startswith("first 2 eval records; greedy, max_new_tokens 12, stop at")
    assert "max_new_tokens 16" in rows["pass@1"]["computed_on"]
    assert rows["pass@1"]["computed_on"].endswith(
        "(10 s, 512 MB; layers: process limits + audit hook + mount, pid and network namespaces)"
    ), "the isolation line: the layers the scores say were active"
    assert "tok:zh" in rows["bleu"]["computed_on"]
    dvc = json.loads(outputs["metrics_json"].read_text())
    assert dvc["base"]["eval_loss"] == 2.5 and dvc["tuned"]["chrf"] == 50.0 and dvc["train_loss"] == 1.75

    page = rendered_markdown(outputs["markdown"])
    text = page.text_content()
    assert (
        "Headline: eval loss on the held-out answers" in text
        and "from 2.5000 for the base model to 1.5000" in text
    )
    table = [[cell.text_content() for cell in row.xpath("td")] for row in page.xpath("//table[1]/tbody/tr")]
    assert [table[0][i] for i in (0, 1, 3, 5, 7, 8)] == [
        "eval loss (answer tokens)",
        "2.5000",
        "1.5000",
        "-1.0000",
        "10",
        rows["eval_loss"]["computed_on"],
    ]
    # Each interval holds its point; the records' losses spread, so the intervals have a width.
    for side, point in (("base", 2.5), ("tuned", 1.5), ("difference", -1.0)):
        low, high = float(rows["eval_loss"][f"{side}_low"]), float(rows["eval_loss"][f"{side}_high"])
        assert low < point < high, side
    assert (
        table[0][2]
        == f"[{float(rows['eval_loss']['base_low']):.4f}, {float(rows['eval_loss']['base_high']):.4f}]"
    )
    assert rows["eval_loss"]["significant"] == "True" and "n.s." not in table[0][6]
    assert [table[2][i] for i in (0, 1, 3, 5)] == ["chrF", "20.0000", "50.0000", "30.0000"]
    assert table[2][6] == "[30.0000, 30.0000]", "every answer's chrF rose by 30: no spread"
    assert "stop at <|im_end|>" in table[2][8], "the stop token shows as written"
    # HumanEval: 0 of 4 and 1 of 4 problems pass; Wilson intervals; a difference of 1 in 4 is not significant.
    humaneval = rows["humaneval_pass@1"]
    assert (float(humaneval["base"]), float(humaneval["tuned"]), humaneval["n"]) == (0.0, 0.25, "4")
    assert float(humaneval["base_low"]) == 0.0 and 0.25 < float(humaneval["tuned_high"]) < 1.0
    assert humaneval["significant"] == "False" and "n.s. (contains 0)" in text
    links = [a.get("href") for a in page.xpath("//a")]
    assert "../eval/base/humaneval.jsonl" in links and "../eval/tuned/humaneval.jsonl" in links
    assert "Complete the following Python function" in text, "the instruction wrapper is stated"
    # Why each code probe failed: the failed test and its error; code for another function, not "no code".
    probes = [[cell.text_content() for cell in row.xpath("td")] for row in page.xpath("//table[2]/tbody/tr")]
    assert probes == [
        [
            "写阶乘",
            "fail (1/2 tests): assert factorial(0) == 1 → RecursionError: maximum recursion",
            "fail (0/2 tests): the code defines no factorial() (it defines sum_power())",
        ]
    ]
    assert "12 records read, 11 kept, 1 rejected" in text
    assert "trust_remote_code is on" in text and "trust_remote_code on." in text
    assert page.xpath("//a")[0].get("href") == "../manifest.json"
    assert "(3 records trimmed), 1 placeholder inputs (2 emptied), drop_duplicates exact (1 dropped)" in text
    assert [img.get("src") for img in page.xpath("//img")] == ["loss_curve.png"]
    # Every answer is one code block holding exactly the answer: nothing in it became markup.
    blocks = [block.text_content() for block in page.xpath("//pre/code")]
    assert blocks[0] == f"{INSTRUCTION}\n", "the HumanEval instruction, verbatim"
    assert blocks[1:-1] == [f"{answer}\n" for answer in every_answer(outputs)]
    assert recipe_line(Path(inputs["recipe"]), "learning_rate") in blocks[-1], "the recipe, verbatim"
    headings = [h.text_content() for h in page.xpath("//h1|//h2|//h3|//h4")]
    assert not any("Example usage" in h or "heading?" in h for h in headings), headings
    assert not page.xpath("//script|//b|//ol"), "no answer text became HTML or a list"

    assert outputs["curve"].read_bytes()[:4] == b"\x89PNG"
    html = outputs["html"].read_text(encoding="utf-8")
    assert 'src="data:image/png;base64,' in html and "<script>" not in html
    with open(outputs["eval_answers_csv"], newline="", encoding="utf-8") as handle:
        side_by_side = list(csv.DictReader(handle))
    assert [(r["reference"], r["base"], r["tuned"]) for r in side_by_side] == [
        ("ref a\n\n# heading?", "base a", "tuned a"),
        ("ref b\n\n# heading?", "base b", "tuned b"),
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
    assert experiment["training"] == {"train_loss": 1.75, "train_runtime_s": 4.0, "train_tokens": 100}


@pytest.mark.browser
def test_the_html_report_renders_in_a_browser(tmp_path, browser):
    """report.html in headless chromium: one cell per answer holding exactly the answer, no markup or
    entity shown as text anywhere else, every image loaded, every table row complete."""
    inputs, outputs = report_arguments(tmp_path)
    make_report(inputs, outputs)
    page = browser(outputs["html"])

    probes, records = page["answers"]
    texts = every_answer(outputs)
    assert [len(row) for row in probes] == [3, 3] and [len(row) for row in records] == [4, 4]
    assert all(cell["pre"] == 1 for row in probes + records for cell in row), "one block per answer cell"
    assert [cell["text"] for row in probes + records for cell in row] == texts
    assert [cell["note"] for cell in probes[0][1:]] == [
        "fail (1/2 tests): assert factorial(0) == 1 → RecursionError: maximum recursion",
        "fail (0/2 tests): the code defines no factorial() (it defines sum_power())",
    ]
    outside = page["text_outside_answers"]
    for markup in ("</pre>", "<td>", "<b>", "&quot;", "&lt;", "&amp;", "```"):
        assert markup not in outside, f"{markup!r} shows as text outside the answers"
    assert not any("Example usage" in heading for heading in page["headings"])
    assert page["images"] and all(image["complete"] and image["width"] > 0 for image in page["images"])
    assert page["values"][0] == {"header": 9, "cells": [9] * 9}, "the metrics table: 9 rows of 9 cells"


def test_the_report_is_the_same_wherever_it_is_made(tmp_path):
    """Two machines (folders), the same results but different speeds: byte-identical report.md and .html."""
    made = []
    for place, seconds in (("one", 4.0), ("two", 9.5)):
        folder = tmp_path / place
        folder.mkdir()
        inputs, outputs = report_arguments(folder)
        trained = json.loads(inputs["train_summary"].read_text())
        write(inputs["train_summary"], {**trained, "train_runtime_s": seconds})
        make_report(inputs, outputs)
        made.append(outputs)
    for name in ("markdown", "html", "curve", "metrics_csv"):
        assert made[0][name].read_bytes() == made[1][name].read_bytes(), name
    assert str(tmp_path) not in made[0]["markdown"].read_text(encoding="utf-8")


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
    assert "| chrF | n/a |  | n/a |  | n/a |  | 0 | first 0 eval records;" in report
    assert "| pass@1 (code probes) | n/a |  | n/a |  | n/a |  | 0 | 0 probes with tests" in report
    assert "HumanEval pass" not in report and "### HumanEval" not in report, (
        "no HumanEval: no row, no section"
    )
    layers = " + ".join(empty["code"]["isolation"]["layers"])
    assert f"layers: {layers})" in report and layers.startswith("process limits + audit hook")
    header = outputs["eval_answers_csv"].read_text().strip().split(",")
    assert header[:5] == ["id", "prompt", "reference", "base", "tuned"], (
        "a table without rows keeps its header"
    )
