#!/usr/bin/env python
"""Export the tuned model: the LoRA adapter merged into the base weights (PEFT merge_and_unload), saved as
safetensors with the tokenizer and its chat template, and a model card (README.md).

Before it writes anything final, it checks the merge: on the eval records (prompt and answer, as training
scored them) the merged model, reloaded from the files just written, must give the same logits as the base
model with the adapter, within --tolerance (the largest absolute difference of any logit at any real token).
The measured difference goes into the card and into --check (JSON). A larger difference stops the step and
nothing is written.

The card states the base model and where it came from (the base folder's source.json: Hub repository and
revision, or GGUF package and version, with file hashes), the data (the raw input's and the converted
records' sha256), the recipe as written, the evaluation metrics of the report, and the base model's licence.

GGUF: no maintained HF-to-GGUF converter installs from the package index (llama.cpp's convert_hf_to_gguf.py
ships in no wheel), so the export stops at safetensors; --gguf-hook names an executable that gets the merged
folder and the GGUF path to write (e.g. a wrapper around llama.cpp's converter), run after the checks.

Example:
  python scripts/export_model.py --model results/models/smollm2-135m-instruct \\
      --adapter results/exp/train/adapter --eval eval.templated.jsonl --recipe config/recipes/r.yaml \\
      --convert-summary convert_summary.json --metrics results/exp/report/metrics.json \\
      --experiment exp --output-dir results/exp/export/merged --check results/exp/export/check.json
"""

from __future__ import annotations

import argparse
import logging
import subprocess
from pathlib import Path

from alpaca_lora.common import (
    StepError,
    add_log_argument,
    atomic_directory,
    loss_pair,
    read_json,
    read_jsonl,
    step,
    trusts_remote_code,
    write_json,
)

log = logging.getLogger("export_model")

# The largest |logit difference| allowed, by the base model's dtype when --tolerance is not given. float32:
# merging adds the same products in another order, a rounding-level change (each run's merge_check.json
# states the difference measured); half precision rounds the merged weights to 8 or 11 bits of mantissa,
# which moves logits by far more (not measured here: no GPU run).
TOLERANCE = {"float32": 1e-3, "float16": 0.1, "bfloat16": 0.5}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True, help="base model folder (with source.json)")
    parser.add_argument("--adapter", required=True, help="LoRA adapter folder (train_lora.py)")
    parser.add_argument(
        "--eval", required=True, help="templated eval JSON Lines: the records the check runs on"
    )
    parser.add_argument("--recipe", required=True, help="the experiment's recipe, quoted in the card")
    parser.add_argument(
        "--convert-summary", required=True, help="convert_to_messages.py's summary (data hashes)"
    )
    parser.add_argument("--metrics", required=True, help="the report's metrics.json, quoted in the card")
    parser.add_argument("--experiment", required=True, help="experiment name (the card's title, messages)")
    parser.add_argument(
        "--license", default="unknown", help="the base model's licence (recipe model.license)"
    )
    parser.add_argument("--output-dir", required=True, help="merged model folder to write")
    parser.add_argument("--check", required=True, help="JSON to write: the measured logit difference")
    parser.add_argument(
        "--tolerance", type=float, help="largest |logit difference| allowed (default by dtype)"
    )
    parser.add_argument("--max-length", type=int, default=512, help="tokens per record in the check")
    parser.add_argument("--batch-size", type=int, default=8, help="records per forward pass in the check")
    parser.add_argument("--gguf-hook", help="executable run as HOOK <merged folder> <gguf file> (see above)")
    add_log_argument(parser)
    return parser.parse_args(argv)


def check_texts(path: str, eos_token: str | None) -> list[str]:
    texts = ["".join(loss_pair(record, eos_token)) for record in read_jsonl(path)]
    if not texts:
        raise StepError(f"{path}: no records to check the merged model on")
    return texts


def logits(model, tokenizer, texts: list[str], args: argparse.Namespace) -> list:
    """Per batch: the logits at the real (not padding) tokens, in float32 on the CPU."""
    import torch

    batches = []
    with torch.no_grad():
        for start in range(0, len(texts), args.batch_size):
            batch = tokenizer(
                texts[start : start + args.batch_size],
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=args.max_length,
            ).to(model.device)
            out = model(**batch).logits.float().cpu()
            batches.append(out[batch["attention_mask"].cpu().bool()])
    return batches


def largest_difference(a: list, b: list) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True))


def model_card(args: argparse.Namespace, source: dict, check: dict) -> str:
    """README.md: Hub card metadata (huggingface_hub's ModelCardData) and what produced the weights."""
    import yaml
    from huggingface_hub import ModelCardData

    base = source.get("repo_id") or source.get("package") or source.get("path") or args.model
    data = ModelCardData(
        base_model=source.get("repo_id"),
        license=args.license,
        library_name="transformers",
        pipeline_tag="text-generation",
        tags=["lora", "merged", "trl", "peft"],
    )
    convert = read_json(args.convert_summary)
    metrics = read_json(args.metrics)
    recipe = Path(args.recipe).read_text(encoding="utf-8")
    origin = {k: v for k, v in source.items() if k not in ("saved_sha256",)}
    return (
        f"---\n{data.to_yaml()}\n---\n\n"
        f"# {args.experiment}\n\n"
        f"{base} with a LoRA adapter merged into its weights (PEFT `merge_and_unload`), by the "
        "alpaca-lora-pipeline. The tokenizer carries the base model's chat template.\n\n"
        f"## Base model\n\nLicence: {args.license} (the base model's; this model inherits it).\n\n"
        f"```yaml\n{yaml.safe_dump(origin, sort_keys=True, allow_unicode=True)}```\n\n"
        f"## Data\n\n{convert.get('input')}: sha256 {convert.get('input_sha256')}; converted records: "
        f"sha256 {convert.get('output_sha256')} ({convert.get('kept', '?')} kept).\n\n"
        f"## Recipe\n\n```yaml\n{recipe.rstrip()}\n```\n\n"
        f"## Metrics (base and tuned, on the held-out eval records)\n\n"
        f"```yaml\n{yaml.safe_dump(metrics, sort_keys=True)}```\n\n"
        f"## Merge check\n\nOn {check['records']} eval records ({check['tokens']} tokens), the largest "
        f"difference between a logit of this model and of the base model with the adapter is "
        f"{check['max_abs_logit_difference']:.3g} (allowed: {check['tolerance']:g}).\n"
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with step("export_model", args.log_file, libraries=True):
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if not (Path(args.adapter) / "adapter_config.json").is_file():
            raise StepError(
                f"experiment {args.experiment}: {args.adapter} holds no adapter (adapter_config.json); "
                "train it first (snakemake ... train_lora)"
            )
        provenance = Path(args.model) / "source.json"  # prepare_base_model.py's; a plain folder has none
        source = read_json(provenance) if provenance.is_file() else {"kind": "local", "path": args.model}
        dtype = source.get("dtype", "float32")
        tolerance = (
            args.tolerance if args.tolerance is not None else TOLERANCE.get(dtype, TOLERANCE["float32"])
        )
        trust = trusts_remote_code(args.model)
        tokenizer = AutoTokenizer.from_pretrained(args.model, trust_remote_code=trust)
        texts = check_texts(args.eval, tokenizer.eos_token)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        base = AutoModelForCausalLM.from_pretrained(
            args.model, dtype=getattr(torch, dtype), trust_remote_code=trust
        )
        tuned = PeftModel.from_pretrained(base.to(device), args.adapter).eval()
        expected = logits(tuned, tokenizer, texts, args)
        merged = tuned.merge_and_unload()
        with atomic_directory(args.output_dir) as folder:
            merged.save_pretrained(folder)
            tokenizer.save_pretrained(folder)
            del merged, tuned, base
            reloaded = AutoModelForCausalLM.from_pretrained(
                folder, dtype=getattr(torch, dtype), trust_remote_code=trust
            )
            reloaded = reloaded.to(device).eval()
            difference = largest_difference(expected, logits(reloaded, tokenizer, texts, args))
            check = {
                "records": len(texts),
                "tokens": sum(len(batch) for batch in expected),
                "max_abs_logit_difference": difference,
                "tolerance": tolerance,
                "dtype": dtype,
            }
            log.info(
                "Merged vs base + adapter: largest |logit difference| %.3g (tolerance %g)",
                difference,
                tolerance,
            )
            if not difference <= tolerance:
                raise StepError(
                    f"experiment {args.experiment}: the merged model's logits differ from base + adapter by "
                    f"up to {difference:.3g}, more than the tolerance {tolerance:g}; nothing was exported"
                )
            (folder / "README.md").write_text(model_card(args, source, check), encoding="utf-8")
            if args.gguf_hook:
                subprocess.run([args.gguf_hook, str(folder), str(folder / "model.gguf")], check=True)
        write_json(args.check, check)
        log.info("Wrote the merged model to %s", args.output_dir)


if __name__ == "__main__":
    main()
