"""Build tiny, randomly initialised chat models with a tokenizer trained locally by `tokenizers`.

Tests use them instead of anything from the Hub: a 2-layer Llama with a ChatML template (like SmolLM2) and a
2-layer Phi3 with the Phi-3.5 chat format. Both train in seconds on a CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

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


def build_tokenizer(corpus: list[str], architecture: str):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    spec = ARCHITECTURES[architecture]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=spec["special"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token=spec["eos"], pad_token=spec["pad"], bos_token=None
    )
    fast.chat_template = spec["template"]
    return fast


def build_tiny_model(
    folder: Path, data_file: Path, architecture: str = "llama", seed: int = 0, hidden_size: int = 32
) -> Path:
    """Save a tiny random model + tokenizer to `folder` and return it."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Phi3Config, Phi3ForCausalLM

    torch.manual_seed(seed)
    tokenizer = build_tokenizer(training_corpus(data_file), architecture)
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
        bos_token_id=None,
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
