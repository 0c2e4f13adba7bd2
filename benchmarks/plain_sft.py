#!/usr/bin/env python
"""The baseline for benchmark 1: the recipe's steps in one plain file, the way one would write it by hand.

Alpaca JSON -> messages -> chat template -> prompt/completion -> TRL SFTTrainer + PEFT LoRA -> save.
No pipeline code is imported: this is what the pipeline's training step is compared against. Settings are
passed so that both runs use the same model, data, hyper-parameters and seed.

Usage: python benchmarks/plain_sft.py --model MODEL_DIR --data ALPACA.json --out OUT_DIR [--max-steps 8]
"""

import argparse
import json
import time

import torch
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig, SFTTrainer

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--model", required=True)
parser.add_argument("--data", required=True, help="Alpaca JSON (the training records)")
parser.add_argument("--eval-data", required=True, help="Alpaca JSON (the validation records)")
parser.add_argument("--out", required=True)
parser.add_argument("--max-steps", type=int, default=8)
parser.add_argument("--batch-size", type=int, default=8)
parser.add_argument("--max-length", type=int, default=512)
parser.add_argument("--learning-rate", type=float, default=3e-4)
parser.add_argument("--lora-r", type=int, default=16)
parser.add_argument("--lora-alpha", type=int, default=32)
parser.add_argument("--group-by-length", action="store_true")
parser.add_argument("--seed", type=int, default=42)
parser.add_argument("--result", required=True, help="JSON file for the timing")
args = parser.parse_args()
started = time.perf_counter()

tokenizer = AutoTokenizer.from_pretrained(args.model)


def load(path):
    rows = []
    for record in json.load(open(path, encoding="utf-8")):
        user = record["instruction"]
        if record.get("input", "").strip():
            user += "\n" + record["input"]
        messages = [{"role": "user", "content": user}, {"role": "assistant", "content": record["output"]}]
        text = tokenizer.apply_chat_template(messages, tokenize=False)
        prompt = tokenizer.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
        rows.append({"prompt": prompt, "completion": text[len(prompt) :].rstrip()})
    return Dataset.from_list(rows)


trainer = SFTTrainer(
    model=AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32),
    args=SFTConfig(
        output_dir=args.out,
        max_steps=args.max_steps,
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=0.05,
        max_length=args.max_length,
        packing=False,
        train_sampling_strategy="group_by_length" if args.group_by_length else "random",
        seed=args.seed,
        data_seed=args.seed,
        logging_steps=4,
        per_device_eval_batch_size=8,
        save_strategy="no",
        report_to="none",
        use_cpu=not torch.cuda.is_available(),
    ),
    train_dataset=load(args.data),
    eval_dataset=load(args.eval_data),
    processing_class=tokenizer,
    peft_config=LoraConfig(
        r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=0.05,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    ),
)
result = trainer.train()
trainer.evaluate()
trainer.save_model(args.out)
tokens = max(row.get("num_tokens", 0) for row in trainer.state.log_history)
with open(args.result, "w") as handle:
    json.dump(
        {
            "wall_s": time.perf_counter() - started,
            "train_runtime_s": result.metrics["train_runtime"],
            "tokens": tokens,
            "loss": result.training_loss,
        },
        handle,
    )
