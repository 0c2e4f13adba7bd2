"""score_answers.py: reference-based metrics on known inputs (Chinese too), code extraction, pass@1."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from conftest import run_script
from score_answers import ZhTokenizer, code_scores, extract_code, reference_scores

FACTORIAL = "def factorial(n):\n    return 1 if n == 0 else n * factorial(n - 1)"


def record(answer: str, reference: str, id_: str = "r") -> dict:
    return {"id": id_, "answer": answer, "reference": reference}


# ---- reference-based metrics ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["The cat sat on the mat.", "猫坐在垫子上。", "用Python写一个factorial函数，n=5时返回120。"],
)
def test_an_answer_equal_to_its_reference_scores_100_on_every_metric(text):
    scores = reference_scores([record(text, text)])
    assert scores["records"] == 1
    for key in ("chrf", "bleu", "rougeL"):
        assert math.isclose(scores[key], 100.0), key


def test_an_answer_sharing_nothing_with_its_reference_scores_0():
    scores = reference_scores([record("今天下雨", "apple banana cherry")])
    assert scores["chrf"] == scores["bleu"] == scores["rougeL"] == 0.0


def test_rouge_l_counts_chinese_characters_and_english_words():
    # LCS 5 of 5 answer tokens and 6 reference tokens: F1 = 2 * 1 * 5/6 / (1 + 5/6) = 10/11.
    chinese = reference_scores([record("猫在垫子上", "猫坐在垫子上")])
    english = reference_scores([record("the cat on the mat", "The cat sat on the mat.")])
    assert math.isclose(chinese["rougeL"], 100 * 10 / 11)
    assert math.isclose(english["rougeL"], 100 * 10 / 11)


def test_rouge_scores_default_tokenizer_would_drop_chinese():
    """Why the custom tokenizer: rouge-score's own one leaves nothing of a Chinese sentence."""
    from rouge_score import rouge_scorer

    default = rouge_scorer.RougeScorer(["rougeL"]).score("猫坐在垫子上", "猫在垫子上")
    assert default["rougeL"].fmeasure == 0.0
    assert ZhTokenizer().tokenize("用Python写Factorial函数, n-1!") == [
        "用",
        "python",
        "写",
        "factorial",
        "函",
        "数",
        "n-1",
    ]


def test_bleu_tokenizes_chinese_by_character_and_english_like_13a():
    from sacrebleu.metrics import BLEU

    # One wrong character out of six: 13a sees one unmatched "word", zh sees five matching characters.
    chinese = reference_scores([record("猫坐在垫子下", "猫坐在垫子上")])
    assert (
        chinese["bleu"] > 50 > BLEU(tokenize="13a").corpus_score(["猫坐在垫子下"], [["猫坐在垫子上"]]).score
    )
    answer, reference = "The cat is on the mat today.", "The cat sat on the mat today, again."
    english = reference_scores([record(answer, reference)])
    standard = BLEU(tokenize="13a").corpus_score([answer], [[reference]]).score
    assert math.isclose(english["bleu"], standard) and 0 < standard < 100
    assert "tok:zh" in english["signatures"]["bleu"]


def test_corpus_scores_and_per_record_scores():
    records = [
        record("猫坐在垫子上", "猫坐在垫子上", "a"),
        record("The dog barks loudly.", "The dog barks loudly.", "b"),
        record("完全不同的回答", "The sky is blue.", "c"),
    ]
    scores = reference_scores(records)
    assert scores["records"] == 3
    assert [r["id"] for r in scores["per_record"]] == ["a", "b", "c"]
    assert scores["per_record"][0]["rougeL"] == scores["per_record"][1]["rougeL"] == 100.0
    assert scores["per_record"][2]["chrf"] == 0.0
    assert 0 < scores["chrf"] < 100 and 0 < scores["bleu"] < 100
    assert math.isclose(scores["rougeL"], 200 / 3)


def test_no_eval_answers_means_no_reference_scores():
    assert reference_scores([])["chrf"] is None


# ---- code extraction -------------------------------------------------------------------------------------


def test_fenced_code_with_prose_around_it():
    answer = f"当然！下面是代码：\n\n```python\n{FACTORIAL}\n\nprint(factorial(5))\n```\n\n这个函数使用递归。"
    extracted = extract_code(answer, "factorial")
    assert extracted["shape"] == "fenced" and extracted["defines_entry_point"]
    assert "print" not in extracted["code"], "example calls are not part of the function"


@pytest.mark.parametrize("fence", ["```", "```py", "~~~python", "``` Python"])
def test_other_fences(fence):
    closing = fence[:3]
    extracted = extract_code(f"Code:\n{fence}\n{FACTORIAL}\n{closing}\nDone.", "factorial")
    assert extracted["defines_entry_point"]


def test_blocks_of_other_languages_are_ignored():
    answer = f"```bash\npip install math\n```\n```python\n{FACTORIAL}\n```\n```text\nfactorial(5) = 120\n```"
    extracted = extract_code(answer, "factorial")
    assert extracted["defines_entry_point"] and "pip" not in extracted["code"]


def test_helpers_from_several_blocks_are_combined():
    answer = (
        "First a helper:\n```python\nimport math\ndef check(n):\n    return n >= 0\n```\n"
        "Then:\n```python\ndef factorial(n):\n    assert check(n)\n    return math.prod(range(1, n + 1))\n```"
    )
    code = extract_code(answer, "factorial")["code"]
    assert "import math" in code and "def check" in code and "def factorial" in code


def test_unfenced_code_between_prose():
    answer = f"Here is a function:\n{FACTORIAL}\nIt calls itself until n reaches 0.\nExample: factorial(5)"
    extracted = extract_code(answer, "factorial")
    assert extracted["shape"] == "unfenced" and extracted["defines_entry_point"]
    assert "It calls" not in extracted["code"]


def test_code_first_with_only_a_closing_fence():
    """Seen from the tuned default model: code straight away, then a fence that closes nothing."""
    answer = f"{FACTORIAL}\n\nprint(factorial(5))  # 120\n```"
    extracted = extract_code(answer, "factorial")
    assert extracted["shape"] == "unfenced" and extracted["defines_entry_point"]


def test_indented_unfenced_code():
    answer = (
        "Solution:\n    def factorial(n):\n        if n == 0:\n            return 1\n"
        + "        return n * factorial(n-1)"
    )
    assert extract_code(answer, "factorial")["defines_entry_point"]


def test_an_answer_cut_off_inside_its_code_block_keeps_what_parses():
    answer = (
        "```python\nimport math\ndef factorial(n):\n    return math.factorial(n)\n"
        + "def unfinished(x):\n    return ("
    )
    extracted = extract_code(answer, "factorial")
    assert extracted["defines_entry_point"] and "unfinished" not in extracted["code"]


def test_input_and_main_guard_are_dropped():
    answer = (
        f"```python\n{FACTORIAL}\n\nn = int(input('n: '))\nprint(factorial(n))\n"
        "if __name__ == '__main__':\n    main()\nLIMIT = 10\n```"
    )
    code = extract_code(answer, "factorial")["code"]
    assert "input" not in code and "__main__" not in code and "LIMIT = 10" in code


def test_an_answer_without_the_function():
    assert extract_code("阶乘就是连乘。", "factorial") == {
        "code": "",
        "shape": "none",
        "defines_entry_point": False,
        "defined": [],
    }
    other = extract_code("```python\ndef fact(n):\n    return 1\n```", "factorial")
    assert other["code"] and not other["defines_entry_point"] and other["defined"] == ["fact"]


# ---- pass@1 ----------------------------------------------------------------------------------------------

PROBES = [
    {"id": "f-zh", "prompt": "写阶乘", "entry_point": "factorial", "tests": ["assert factorial(5) == 120"]},
    {"id": "f-en", "prompt": "Factorial", "entry_point": "factorial", "tests": ["assert factorial(0) == 1"]},
    {"id": "wrong", "prompt": "Wrong", "entry_point": "factorial", "tests": ["assert factorial(3) == 6"]},
    {"id": "none", "prompt": "No code", "entry_point": "factorial", "tests": ["assert factorial(3) == 6"]},
    {"id": "other", "prompt": "Other", "entry_point": "factorial", "tests": ["assert factorial(3) == 6"]},
    {"id": "chat", "prompt": "Hello"},
]
ANSWERS = [
    {"prompt": "写阶乘", "answer": f"```python\n{FACTORIAL}\n```"},
    {"prompt": "Factorial", "answer": f"Sure:\n{FACTORIAL}\nThat is all."},
    {"prompt": "Wrong", "answer": "```python\ndef factorial(n):\n    return n\n```"},
    {"prompt": "No code", "answer": "I cannot write code."},
    {"prompt": "Other", "answer": "```python\ndef sum_power(n, k):\n    return n ** k\n```"},
    {"prompt": "Hello", "answer": "Hi!"},
]


def test_pass_at_1_counts_tested_probes_whose_answer_passes():
    scores = code_scores(ANSWERS, PROBES, timeout_s=5, memory_mb=256)
    assert scores["problems"] == 5 and scores["passed"] == 2 and scores["pass@1"] == 0.4
    by_id = {p["id"]: p for p in scores["per_probe"]}
    assert by_id["f-zh"]["passed"] and by_id["f-en"]["passed"]
    assert by_id["wrong"]["status"] == "failed" and by_id["none"]["status"] == "no code"
    assert scores["isolation"]["layers"][:2] == ["process limits", "audit hook"]
    assert by_id["wrong"]["test_results"] == [
        {"test": "assert factorial(3) == 6", "passed": False, "kind": "AssertionError", "message": ""}
    ]
    # Code that defines another function is not "no code": the detail says what it defines instead.
    assert by_id["other"]["status"] == "wrong function"
    assert by_id["other"]["detail"] == "the code defines no factorial() (it defines sum_power())"


def test_a_tested_probe_without_an_answer_is_an_error():
    with pytest.raises(ValueError, match="f-zh"):
        code_scores(ANSWERS[1:], PROBES, timeout_s=5, memory_mb=256)


def test_command_line_writes_scores(tmp_path):
    probes = tmp_path / "probes.yaml"
    probes.write_text(yaml.safe_dump({"probes": PROBES}, allow_unicode=True), encoding="utf-8")
    answers = tmp_path / "answers.jsonl"
    answers.write_text("".join(json.dumps(a, ensure_ascii=False) + "\n" for a in ANSWERS), encoding="utf-8")
    eval_answers = tmp_path / "eval.jsonl"
    eval_answers.write_text(json.dumps(record("猫坐在垫子上", "猫坐在垫子上"), ensure_ascii=False) + "\n")
    scores_file = tmp_path / "scores.json"
    run_script(
        "score_answers.py",
        "--eval-answers",
        eval_answers,
        "--probe-answers",
        answers,
        "--probes",
        probes,
        "--scores",
        scores_file,
        "--timeout-s",
        "5",
    )
    scores = json.loads(scores_file.read_text(encoding="utf-8"))
    assert scores["reference"]["chrf"] == 100.0 and scores["code"]["pass@1"] == 0.4


# ---- what a hostile answer can leave behind --------------------------------------------------------------


def hostile_answers(secret: Path) -> tuple[list[dict], list[dict]]:
    bodies = {
        "planted": f"raise ValueError(open({str(secret)!r}).read())",
        "shadow": "raise ValueError(open('/etc/shadow').read())",
        "long": "raise ValueError('distinctive-' * 1000)",
    }
    probes = [
        {"id": name, "prompt": name, "entry_point": "factorial", "tests": ["assert factorial(3) == 6"]}
        for name in bodies
    ]
    answers = [
        {"prompt": name, "answer": f"```python\ndef factorial(n):\n    {body}\n```"}
        for name, body in bodies.items()
    ]
    return probes, answers


@pytest.mark.parametrize("log_output", [False, True])
def test_a_hostile_answer_leaves_no_secret_and_only_a_bounded_message(tmp_path, log_output):
    from alpaca_lora.sandbox import MESSAGE_LIMIT

    secret = tmp_path / "planted" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("TOP-SECRET-PLANTED\n")
    hidden = ["TOP-SECRET-PLANTED"]
    try:
        hidden += [line for line in Path("/etc/shadow").read_text().splitlines()[:3] if len(line) > 8]
    except OSError:
        pass
    probes, answers = hostile_answers(secret)
    probes_file = tmp_path / "probes.yaml"
    probes_file.write_text(yaml.safe_dump({"probes": probes}), encoding="utf-8")
    answers_file = tmp_path / "answers.jsonl"
    answers_file.write_text("".join(json.dumps(a) + "\n" for a in answers), encoding="utf-8")
    eval_answers = tmp_path / "eval.jsonl"
    eval_answers.write_text("")
    scores_file, log_file = tmp_path / "scores.json", tmp_path / "score.log"
    arguments = ["--eval-answers", eval_answers, "--probe-answers", answers_file, "--probes", probes_file]
    arguments += ["--scores", scores_file, "--log-file", log_file, "--timeout-s", "5"]
    console = run_script("score_answers.py", *arguments, *(["--log-sandbox-output"] if log_output else []))

    scores = json.loads(scores_file.read_text(encoding="utf-8"))
    by_id = {probe["id"]: probe for probe in scores["code"]["per_probe"]}
    assert scores["code"]["passed"] == 0
    for name in ("planted", "shadow"):
        assert by_id[name]["kind"] == "PermissionError" and "sandbox: open: reading" in by_id[name]["detail"]
    assert by_id["long"]["kind"] == "ValueError" and len(by_id["long"]["detail"]) <= MESSAGE_LIMIT + 12
    log = log_file.read_text(encoding="utf-8")
    for text in (scores_file.read_text(encoding="utf-8"), log, console.stdout + console.stderr):
        assert not any(secret in text for secret in hidden)
    # The full text (capped by the sandbox) is in the log only when asked for.
    assert (log.count("distinctive-") > MESSAGE_LIMIT // len("distinctive-") + 1) == log_output
