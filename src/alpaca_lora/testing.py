"""Try the pipeline small, offline: tiny chat models and a copy of the workflow in a temporary folder.

The tests and the benchmarks use these instead of anything from the Hub: tiny, randomly initialised models
with a tokenizer trained locally by `tokenizers` (a 2-layer Llama with a ChatML template, like SmolLM2, and a
2-layer Phi3 with the Phi-3.5 chat format; both train in seconds on a CPU), and a workflow copy whose recipes
point at them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

# The checkout this package lives in (installed editable by `make setup`).
ROOT = Path(__file__).resolve().parents[2]

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a tiny test assistant.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
PHI3_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' and message['content'] %}"
    "{{ '<|system|>\n' + message['content'] + '<|end|>\n' }}"
    "{% elif message['role'] == 'user' %}{{ '<|user|>\n' + message['content'] + '<|end|>\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ '<|assistant|>\n' + message['content'] + '<|end|>\n' }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
)
# The BOS token of a tokenizer that adds one (build_tokenizer(bos=True)).
BOS = "<|bos|>"
ARCHITECTURES = {
    "llama": {
        "special": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        "eos": "<|im_end|>",
        "pad": "<|endoftext|>",
        "template": CHATML_TEMPLATE,
    },
    "phi3": {
        "special": ["<|endoftext|>", "<|user|>", "<|assistant|>", "<|system|>", "<|end|>"],
        "eos": "<|endoftext|>",
        "pad": "<|endoftext|>",
        "template": PHI3_TEMPLATE,
    },
}


def training_corpus(data_file: Path) -> list[str]:
    records = json.loads(Path(data_file).read_text(encoding="utf-8"))
    texts = [f"{r['instruction']}\n{r.get('input', '')}\n{r['output']}" for r in records]
    return texts + [
        "system user assistant You are a tiny test assistant.",
        "写一个Python函数计算阶乘 factorial",
    ]


def build_tokenizer(corpus: list[str], architecture: str, bos: bool = False):
    """A BPE tokenizer with the architecture's special tokens; with `bos`, one that puts a BOS token before
    every text it encodes with special tokens (as Llama's and Gemma's do)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    spec = ARCHITECTURES[architecture]
    special = spec["special"] + ([BOS] if bos else [])
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    if bos:
        bos_id = tokenizer.token_to_id(BOS)
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
        )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=spec["eos"],
        pad_token=spec["pad"],
        bos_token=BOS if bos else None,
    )
    fast.chat_template = spec["template"]
    return fast


def build_tiny_model(
    folder: Path,
    data_file: Path,
    architecture: str = "llama",
    seed: int = 0,
    hidden_size: int = 32,
    bos: bool = False,
) -> Path:
    """Save a tiny random model + tokenizer (with `bos`, one that adds a BOS token) to `folder`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Phi3Config, Phi3ForCausalLM

    torch.manual_seed(seed)
    tokenizer = build_tokenizer(training_corpus(data_file), architecture, bos)
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.convert_tokens_to_ids(ARCHITECTURES[architecture]["eos"]),
        bos_token_id=tokenizer.bos_token_id,
    )
    if architecture == "llama":
        model = LlamaForCausalLM(LlamaConfig(**common, tie_word_embeddings=True))
    else:
        common["eos_token_id"] = [
            tokenizer.convert_tokens_to_ids("<|endoftext|>"),
            tokenizer.convert_tokens_to_ids("<|end|>"),
        ]
        model = Phi3ForCausalLM(Phi3Config(**common))
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


# ---- a workflow copy on tiny models -------------------------------------------------------------------

SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
# What a workflow copy needs of the checkout (src: the rules name package modules as inputs).
WORKFLOW_FILES = [
    "Snakefile",
    "workflow",
    "scripts",
    "src",
    "config",
    "profiles",
    "pyproject.toml",
    "environment.yml",
    "requirements.txt",
    "requirements-dev.txt",
    "requirements-nodeps.txt",
]


def workflow_env(**extra: str) -> dict[str, str]:
    """The environment of a workflow run: this one, offline."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", **extra}


def snakemake(
    workdir: Path, *args: str, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [SNAKEMAKE, "--cores", "2", *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        env=env or workflow_env(),
        timeout=900,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
        )
    return result


def jobs_planned(workdir: Path) -> dict[str, int]:
    """Rule name -> job count from a dry run's job table."""
    output = snakemake(workdir, "--dry-run").stdout
    if "Nothing to be done" in output:
        return {}
    table = output.split("Job stats:", 1)[1].split("total", 1)[0]
    rows = [line.split() for line in table.splitlines()[3:] if line.strip()]
    return {name: int(count) for name, count in rows}


def tiny_recipe(base: str, model: Path, data: Path) -> dict:
    """A shipped recipe (a file name in config/recipes) on a tiny model and data: few steps, short texts."""
    recipe = yaml.safe_load((ROOT / "config" / "recipes" / base).read_text(encoding="utf-8"))
    recipe["model"].update(name="tiny", source={"kind": "local", "path": str(model)})
    if recipe["model"].get("attn_implementation") == "flash_attention_2":
        recipe["model"]["attn_implementation"] = "sdpa"  # the GPU kernel; tiny models train on the CPU
    recipe["data"].update(name="small", path=str(data))
    recipe["split"]["eval_size"] = 8
    recipe["training"].update(
        max_steps=4,
        max_length=128,
        per_device_train_batch_size=4,
        logging_steps=1,
        eval_strategy="steps",
        eval_steps=2,
        save_steps=2,
    )
    recipe["evaluation"].update(
        max_new_tokens=8,
        max_length=128,
        reference_records=4,
        reference_max_new_tokens=6,
        bootstrap_resamples=999,
    )
    if "lm_eval" in recipe["evaluation"]:  # the Hub's datasets are out of reach: the project's own task
        recipe["evaluation"]["lm_eval"].update(tasks=["alpaca_heldout_choice"], limit=4)
    if "humaneval" in recipe["evaluation"]:
        recipe["evaluation"]["humaneval"].update(problems=2, max_new_tokens=8)
    return recipe


def make_workdir(tmp_path: Path, recipes: dict[str, dict]) -> Path:
    """A copy of the workflow in tmp_path/work whose config runs exactly these recipes (name -> recipe)."""
    workdir = tmp_path / "work"
    workdir.mkdir()
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in WORKFLOW_FILES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, workdir / name, ignore=skip)
        else:
            shutil.copy(source, workdir / name)
    for name, recipe in recipes.items():
        (workdir / "config" / "recipes" / f"{name}.yaml").write_text(
            yaml.safe_dump(recipe, allow_unicode=True)
        )
    config = {"experiments": list(recipes), "recipes_dir": "config/recipes"}
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    return workdir


if __name__ == "__main__":
    from alpaca_lora.common import module_help

    module_help(__doc__ + "\nA library: nothing to run.").parse_args()
