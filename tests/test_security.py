"""trust_remote_code: off unless the recipe turns it on; then every step that loads the model honours it."""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import pytest

from alpaca_lora.common import trusts_remote_code
from conftest import SCRIPTS, run_script

# A model whose class lives in the folder, not in transformers: loading it runs that folder's code.
CONFIGURATION = """from transformers import LlamaConfig


class RemoteConfig(LlamaConfig):
    model_type = "remote-tiny"
"""
MODELING = """from transformers import LlamaForCausalLM

from .configuration_remote import RemoteConfig


class RemoteForCausalLM(LlamaForCausalLM):
    config_class = RemoteConfig
"""


@pytest.fixture(scope="module")
def remote_code_model(tiny_llama, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("remote") / "model"
    shutil.copytree(tiny_llama, folder)
    (folder / "configuration_remote.py").write_text(CONFIGURATION)
    (folder / "modeling_remote.py").write_text(MODELING)
    config = json.loads((folder / "config.json").read_text())
    config.update(
        model_type="remote-tiny",
        architectures=["RemoteForCausalLM"],
        auto_map={
            "AutoConfig": "configuration_remote.RemoteConfig",
            "AutoModelForCausalLM": "modeling_remote.RemoteForCausalLM",
        },
    )
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def from_pretrained_calls(path: Path) -> list[ast.Call]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "from_pretrained"
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id.startswith("Auto")
    ]


@pytest.mark.parametrize("script", sorted(p.name for p in SCRIPTS.glob("*.py")))
def test_every_auto_from_pretrained_passes_the_recipes_choice(script: str) -> None:
    """trust_remote_code= on every Auto*.from_pretrained, and never a literal: the value is the recipe's."""
    for call in from_pretrained_calls(SCRIPTS / script):
        values = {keyword.arg: keyword.value for keyword in call.keywords}
        where = f"{script}:{call.lineno}"
        assert "trust_remote_code" in values, f"{where} loads without trust_remote_code="
        assert not isinstance(values["trust_remote_code"], ast.Constant), f"{where} hard-codes it"


def test_trust_is_read_from_the_model_folder(tmp_path: Path) -> None:
    assert trusts_remote_code(tmp_path) is False, "no source.json: not trusted"
    for value, expected in [(False, False), (True, True), ("yes", False)]:
        (tmp_path / "source.json").write_text(json.dumps({"trust_remote_code": value}))
        assert trusts_remote_code(tmp_path) is expected


def prepare(model: Path, out: Path, *flags: str, check: bool = True):
    return run_script(
        "prepare_base_model.py", "--kind", "local", "--path", model, "--out", out, *flags, check=check
    )


def test_remote_code_runs_only_when_the_recipe_allows_it(remote_code_model, tmp_path) -> None:
    refused = prepare(remote_code_model, tmp_path / "refused", check=False)
    assert refused.returncode != 0 and "trust_remote_code" in refused.stderr
    assert not (tmp_path / "refused").exists()

    out = tmp_path / "allowed"
    prepare(remote_code_model, out, "--trust-remote-code")
    assert json.loads((out / "source.json").read_text())["trust_remote_code"] is True
    assert (out / "modeling_remote.py").is_file(), "the model's own code travels with it"

    # Every later step loads the saved folder with the recipe's choice, read from source.json.
    steps = later_steps(out, tmp_path)
    for name, arguments in steps.items():
        run_script(name, *arguments)
    assert json.loads((tmp_path / "m.json").read_text())["records"] == 1
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()

    # The same folder marked untrusted is refused by the steps that load the model (the tokenizer of this
    # model is a plain one: templating needs no remote code either way).
    source = json.loads((out / "source.json").read_text())
    (out / "source.json").write_text(json.dumps({**source, "trust_remote_code": False}))
    for name in ("train_lora.py", "evaluate.py"):
        untrusted = run_script(name, *steps[name], check=False)
        assert untrusted.returncode != 0 and "trust_remote_code" in untrusted.stderr, name


def later_steps(model: Path, folder: Path) -> dict[str, list]:
    """The arguments of each step after prepare_base_model that loads the model, on a one-record split."""
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    split = folder / "split.jsonl"
    split.write_text(json.dumps({"id": "a", "messages": messages}) + "\n")
    templated = folder / "templated.jsonl"
    templated.write_text(
        json.dumps(
            {
                "id": "a",
                "messages": messages,
                "prompt": "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
                "completion": "Hello<|im_end|>\n",
            }
        )
        + "\n"
    )
    settings = folder / "settings.json"
    training = {"max_steps": 1, "per_device_train_batch_size": 1, "bf16": False, "seed": 1, "save_steps": 10}
    settings.write_text(json.dumps({"lora": {"r": 2, "target_modules": "all-linear"}, "training": training}))
    evaluation = ["--max-new-tokens", "2", "--prompt", "Hi", "--reference-records", "0"]
    return {
        "apply_chat_template.py": ["--model", model, "--input", split, "--output", folder / "t.jsonl"],
        "train_lora.py": [
            "--model", model, "--train", templated, "--eval", templated, "--settings", settings,
            "--output-dir", folder / "adapter", "--history", folder / "history.csv",
            "--summary", folder / "summary.json", "--checkpoint-dir", folder / "checkpoints",
        ],
        "evaluate.py": [
            "--model", model, "--eval", templated, *evaluation,
            "--metrics", folder / "m.json", "--generations", folder / "g.jsonl",
        ],
    }  # fmt: skip
