"""train_lora.py and evaluate.py on a tiny local model: outputs, consistency, resume."""

from __future__ import annotations

import csv
import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from alpaca_lora.common import read_jsonl
from alpaca_lora.testing import build_tiny_model
from conftest import SAMPLE_DATA, SCRIPTS, run_script

# The settings file train_lora.py reads: PEFT LoraConfig and TRL SFTConfig fields, as a recipe has them.
TRAIN_SETTINGS = {
    "lora": {"r": 4, "lora_alpha": 8, "lora_dropout": 0.05, "target_modules": "all-linear"},
    "training": {
        "learning_rate": 5e-3,
        "max_steps": 6,
        "per_device_train_batch_size": 4,
        "per_device_eval_batch_size": 64,
        "max_length": 256,
        "packing": False,
        "bf16": False,
        "completion_only_loss": True,
        "logging_steps": 1,
        "eval_strategy": "steps",
        "eval_steps": 3,
        "save_steps": 3,
        "seed": 7,
    },
}


def train_settings(lora: dict | None = None, **training) -> dict:
    """TRAIN_SETTINGS with some values changed."""
    return {
        "lora": {**TRAIN_SETTINGS["lora"], **(lora or {})},
        "training": {**TRAIN_SETTINGS["training"], **training},
    }


def templated_splits(folder: Path, model: Path, alpaca: Path) -> dict[str, Path]:
    run_script(
        "convert_to_messages.py",
        "--input",
        alpaca,
        "--output",
        folder / "messages.jsonl",
        "--rejects",
        folder / "rejects.jsonl",
        "--summary",
        folder / "convert.json",
    )
    run_script(
        "split_dataset.py",
        "--input",
        folder / "messages.jsonl",
        "--train",
        folder / "train.jsonl",
        "--eval",
        folder / "eval.jsonl",
        "--summary",
        folder / "split.json",
        "--eval-size",
        "8",
        "--seed",
        "1",
    )
    paths = {}
    for part in ("train", "eval"):
        paths[part] = folder / f"{part}.templated.jsonl"
        run_script(
            "apply_chat_template.py",
            "--model",
            model,
            "--input",
            folder / f"{part}.jsonl",
            "--output",
            paths[part],
        )
    return paths


def train_arguments(
    folder: Path, model: Path, splits: dict[str, Path], settings: dict = TRAIN_SETTINGS, *extra: str
) -> list[str]:
    """train_lora.py's arguments, with `settings` written to folder/settings.json."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "settings.json").write_text(json.dumps(settings), encoding="utf-8")
    return [
        "--model",
        str(model),
        "--train",
        str(splits["train"]),
        "--eval",
        str(splits["eval"]),
        "--settings",
        str(folder / "settings.json"),
        "--output-dir",
        str(folder / "adapter"),
        "--history",
        str(folder / "history.csv"),
        "--summary",
        str(folder / "summary.json"),
        "--checkpoint-dir",
        str(folder / "checkpoints"),
        *extra,
    ]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_llama, small_alpaca) -> dict:
    folder = tmp_path_factory.mktemp("train")
    splits = templated_splits(folder, tiny_llama, small_alpaca)
    run_script("train_lora.py", *train_arguments(folder, tiny_llama, splits))
    return {"folder": folder, "model": tiny_llama, **splits}


def evaluate(folder: Path, model: Path, eval_file: Path, *extra: str) -> tuple[dict, list[dict]]:
    metrics, generations = folder / "metrics.json", folder / "generations.jsonl"
    run_script(
        "evaluate.py",
        "--model",
        model,
        "--eval",
        eval_file,
        "--metrics",
        metrics,
        "--generations",
        generations,
        "--eval-answers",
        folder / "eval_answers.jsonl",
        "--reference-records",
        "3",
        "--prompt",
        "写一个Python函数计算阶乘",
        "--prompt",
        "Add 2 and 3.",
        "--max-new-tokens",
        "12",
        *extra,
    )
    lines = generations.read_text(encoding="utf-8").splitlines()
    return json.loads(metrics.read_text()), [json.loads(line) for line in lines]


def test_training_writes_adapter_history_and_summary(trained):
    folder = trained["folder"]
    adapter_config = json.loads((folder / "adapter" / "adapter_config.json").read_text())
    assert adapter_config["r"] == 4 and adapter_config["lora_alpha"] == 8
    assert (folder / "adapter" / "adapter_model.safetensors").stat().st_size > 0
    with open(folder / "history.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    train_rows = [row for row in rows if row.get("loss")]
    assert [int(row["step"]) for row in train_rows] == list(range(1, 7))
    assert all(row["learning_rate"] and row["grad_norm"] for row in train_rows)
    assert len([row for row in rows if row.get("eval_loss")]) >= 2
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["global_step"] == 6 and summary["resumed_from"] is None
    assert not (folder / "checkpoints").exists(), "checkpoints are removed after a successful run"


def test_evaluation_of_base_and_tuned(trained, tmp_path):
    (tmp_path / "base").mkdir()
    (tmp_path / "tuned").mkdir()
    base, base_answers = evaluate(tmp_path / "base", trained["model"], trained["eval"])
    tuned, _ = evaluate(
        tmp_path / "tuned", trained["model"], trained["eval"], "--adapter", str(trained["folder"] / "adapter")
    )
    assert base["records"] == tuned["records"] == 8
    assert base["answer_tokens"] == tuned["answer_tokens"] > 0
    assert math.isclose(base["perplexity"], math.exp(base["eval_loss"]), rel_tol=1e-9)
    assert tuned["eval_loss"] < base["eval_loss"], "a high learning rate on the same data must lower the loss"
    assert [answer["prompt"] for answer in base_answers] == ["写一个Python函数计算阶乘", "Add 2 and 3."]
    assert all(answer["new_tokens"] <= 12 for answer in base_answers)
    assert base["probes_hit_max_new_tokens"] == sum(a["hit_max_new_tokens"] for a in base_answers)
    assert base["decoding"]["stop_tokens"][0] == "<|im_end|>"


def test_eval_answers_are_the_first_eval_records_beside_their_references(trained, tmp_path):
    extra = ["--generation-batch-size", "2", "--reference-max-new-tokens", "5"]
    metrics, _ = evaluate(tmp_path, trained["model"], trained["eval"], *extra)
    answers = list(read_jsonl(tmp_path / "eval_answers.jsonl"))
    records = list(read_jsonl(trained["eval"]))[:3]
    assert metrics["eval_answers"] == len(answers) == 3
    assert [a["id"] for a in answers] == [r["id"] for r in records]
    assert [a["reference"] for a in answers] == [r["messages"][-1]["content"] for r in records]
    assert [a["prompt"] for a in answers] == [r["messages"][-2]["content"] for r in records]
    assert metrics["eval_answers_hit_max_new_tokens"] == sum(a["hit_max_new_tokens"] for a in answers)
    assert all(a["new_tokens"] <= 5 for a in answers) and metrics["decoding"]["reference_max_new_tokens"] == 5


@pytest.mark.parametrize("architecture, end_of_turn", [("llama", "<|im_end|>"), ("phi3", "<|end|>")])
def test_answers_stop_at_the_chat_templates_end_of_turn(architecture, end_of_turn, request):
    """Phi-3's end of turn (<|end|>) is not its EOS token (<|endoftext|>): both must stop an answer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import evaluate as step

    folder = request.getfixturevalue(f"tiny_{architecture}")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    stops = step.stop_token_ids(tokenizer, model)
    assert tokenizer.convert_ids_to_tokens(stops)[0] == end_of_turn
    assert tokenizer.eos_token_id in stops

    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "写一个Python函数计算阶乘"}], tokenize=False, add_generation_prompt=True
    )
    free = step.generate(tokenizer, model, [prompt], max_new_tokens=6, batch_size=1, stops=[-1])[0]
    assert free["hit_max_new_tokens"] and free["new_tokens"] == 6
    # Make the third greedy token a stop token: the answer must end there, and not count as cut off.
    encoded = tokenizer([prompt], add_special_tokens=False, return_tensors="pt")
    output = model.generate(**encoded, max_new_tokens=6, do_sample=False, eos_token_id=[-1])
    third = output[0, encoded["input_ids"].shape[1] + 2].item()
    stopped = step.generate(tokenizer, model, [prompt], max_new_tokens=6, batch_size=1, stops=[third])[0]
    assert not stopped["hit_max_new_tokens"] and stopped["new_tokens"] <= 3


def test_evaluation_loss_matches_the_trainers_eval_loss(trained, tmp_path):
    """evaluate.py scores exactly the answer tokens the trainer scores (one eval batch, no dropout)."""
    tuned, _ = evaluate(
        tmp_path,
        trained["model"],
        trained["eval"],
        "--adapter",
        str(trained["folder"] / "adapter"),
        "--batch-size",
        "64",
        "--max-length",
        "256",
    )
    summary = json.loads((trained["folder"] / "summary.json").read_text())
    assert math.isclose(tuned["eval_loss"], summary["final_eval_loss"], rel_tol=2e-3)


def test_answer_tokens_are_the_completion_tokens(trained, tmp_path):
    from transformers import AutoTokenizer

    from alpaca_lora.common import loss_pair, read_jsonl

    tokenizer = AutoTokenizer.from_pretrained(trained["model"])
    expected = 0
    for record in read_jsonl(trained["eval"]):
        prompt, completion = loss_pair(record, tokenizer.eos_token)
        whole = tokenizer(prompt + completion, add_special_tokens=False)["input_ids"]
        expected += len(whole) - len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    metrics, _ = evaluate(tmp_path, trained["model"], trained["eval"])
    # The first answer token is predicted from the prompt, so every answer token is scored.
    assert metrics["answer_tokens"] == expected


# Columns of history.csv that depend on the run's content, not on its timing.
HISTORY_COLUMNS = [
    "step",
    "epoch",
    "loss",
    "eval_loss",
    "learning_rate",
    "grad_norm",
    "num_input_tokens_seen",
]


def read_history(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return [{key: row.get(key) for key in HISTORY_COLUMNS} for row in csv.DictReader(handle)]


def test_interrupted_training_resumes_exactly(tmp_path, small_alpaca):
    """Killed after a checkpoint and run again, training ends exactly where an uninterrupted run ends.

    Same seed, same settings (LoRA dropout on, so the restored random state matters): the resumed run's
    adapter file is byte-identical and every logged loss, learning rate and gradient norm is equal.
    """
    # Wide enough that the run is still training when the test sees the first checkpoint and kills it.
    model = build_tiny_model(tmp_path / "model", SAMPLE_DATA, "llama", hidden_size=64)
    splits = templated_splits(tmp_path, model, small_alpaca)
    settings = train_settings({"lora_dropout": 0.1}, max_steps=8, save_steps=2)
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    run_script("train_lora.py", *train_arguments(straight, model, splits, settings))

    arguments = [
        sys.executable,
        str(SCRIPTS / "train_lora.py"),
        *train_arguments(resumed, model, splits, settings),
    ]
    process = subprocess.Popen(arguments, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first_checkpoint = resumed / "checkpoints" / "checkpoint-2" / "checkpoint-complete.txt"
    deadline = time.monotonic() + 300
    while not first_checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert first_checkpoint.exists(), "the first run should have saved checkpoint-2"
    assert not (resumed / "adapter").exists(), "an interrupted run must not leave an adapter"
    assert not (resumed / "summary.json").exists()

    result = run_script("train_lora.py", *train_arguments(resumed, model, splits, settings))
    assert "Resuming from checkpoint" in result.stderr
    after, before = (json.loads((folder / "summary.json").read_text()) for folder in (resumed, straight))
    assert after["resumed_from"] and "checkpoint-" in after["resumed_from"]
    assert before["resumed_from"] is None
    for key in ("global_step", "final_eval_loss", "train_loss", "train_tokens", "settings_fingerprint"):
        assert after[key] == before[key], key
    assert after["global_step"] == 8
    assert read_history(resumed / "history.csv") == read_history(straight / "history.csv")
    adapter = Path("adapter") / "adapter_model.safetensors"
    assert (resumed / adapter).read_bytes() == (straight / adapter).read_bytes()


def test_checkpoints_of_other_settings_are_not_resumed(tmp_path):
    import train_lora

    stale = tmp_path / "checkpoints"
    (stale / "checkpoint-4").mkdir(parents=True)
    (stale / "fingerprint.txt").write_text("other settings\n")
    assert train_lora.resumable_checkpoint(stale, "these settings") is None
    assert not (stale / "checkpoint-4").exists()
    assert (stale / "fingerprint.txt").read_text().strip() == "these settings"


def test_a_half_written_checkpoint_is_never_resumed(tmp_path):
    """What the out-of-memory killer (SIGKILL, no handler runs) leaves while a checkpoint is being written."""
    import train_lora

    folder = tmp_path / "checkpoints"
    for step in (4, 6):
        (folder / f"checkpoint-{step}").mkdir(parents=True)
    (folder / "checkpoint-4" / train_lora.COMPLETE_MARKER).write_text("step 4\n")
    (folder / "fingerprint.txt").write_text("same\n")
    assert train_lora.resumable_checkpoint(folder, "same") == str(folder / "checkpoint-4")
    assert not (folder / "checkpoint-6").exists()


def test_sigterm_saves_a_checkpoint_that_the_next_run_resumes(tmp_path, small_alpaca):
    """SLURM's warning before a time limit, scancel and preemption all send SIGTERM first."""
    model = build_tiny_model(tmp_path / "model", SAMPLE_DATA, "llama", hidden_size=256)
    splits = templated_splits(tmp_path, model, small_alpaca)
    # No periodic checkpoint before the end: the only one to resume from is the one SIGTERM saves.
    settings = train_settings(max_steps=10, save_steps=1000)
    log_file = tmp_path / "train.log"
    arguments = [
        sys.executable,
        str(SCRIPTS / "train_lora.py"),
        *train_arguments(tmp_path, model, splits, settings, "--log-file", str(log_file)),
    ]
    process = subprocess.Popen(arguments, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while process.poll() is None and time.monotonic() < deadline:
        if log_file.exists() and "step 1/10" in log_file.read_text():
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == 128 + signal.SIGTERM
    log = log_file.read_text()
    assert "SIGTERM received: saving a checkpoint at step" in log
    saved = [folder for folder in (tmp_path / "checkpoints").glob("checkpoint-*")]
    assert len(saved) == 1 and (saved[0] / "checkpoint-complete.txt").exists()
    step = int(saved[0].name.split("-")[1])
    assert 1 <= step < 10
    assert not (tmp_path / "adapter").exists() and not (tmp_path / "summary.json").exists()

    run_script("train_lora.py", *train_arguments(tmp_path, model, splits, settings))
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["resumed_from"] == str(saved[0]) and summary["global_step"] == 10
