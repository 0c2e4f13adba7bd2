"""What a recipe asks of the machine that trains it, checked before any job (and again by the training step).

GPU-only settings (Liger kernels, 4-bit QLoRA, FlashAttention) need their package and a GPU; packing needs
an attention implementation that keeps packed sequences apart. Each problem is one line naming the setting;
`check` raises ValueError with it.
"""

from __future__ import annotations

import importlib.util
import shutil

# Attention implementations (model.attn_implementation) -> the package they need (None: torch's own).
ATTENTION = {"eager": None, "sdpa": None, "flash_attention_2": "flash_attn"}
# With padding-free packing (packing_strategy bfd) several records share one row, told apart only by their
# position_ids. These implementations then mask attention per record; tests/test_packing.py shows the packed
# per-token loss equals the unpacked one for each of them that is installed.
PACKING_SAFE = {"eager", "sdpa", "flash_attention_2"}


def installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def local_gpus() -> int:
    import torch

    return torch.cuda.device_count()


def check(settings: dict, gpus: int | None) -> None:
    """`settings`: a recipe, or the training step's settings (the same `training` and `model` keys).
    `gpus`: this machine's GPUs when the training runs here; None when it runs elsewhere (a cluster, a dry
    run), where only what is the same everywhere (the recipe itself) is checked."""
    training, model = settings["training"], settings.get("model", {})
    attention = model.get("attn_implementation", "sdpa")
    if training.get("packing") and training.get("packing_strategy") == "wrapped":
        raise ValueError(
            "training.packing_strategy: wrapped packing lets each record attend to the records before it in "
            "the same row (attention leaks across records); use bfd"
        )
    if training.get("packing") and attention not in PACKING_SAFE:
        raise ValueError(
            f"model.attn_implementation: {attention} with packing leaks attention across records"
        )
    if gpus is None:
        return
    on_cpu = gpus == 0 or bool(training.get("use_cpu"))
    needs = {
        "model.attn_implementation: flash_attention_2": ("flash_attn", attention == "flash_attention_2"),
        "training.use_liger_kernel": ("liger_kernel", bool(training.get("use_liger_kernel"))),
        "model.quantization.load_in_4bit (QLoRA)": (
            "bitsandbytes",
            bool(model.get("quantization", {}).get("load_in_4bit")),
        ),
    }
    for setting, (package, wanted) in needs.items():
        if wanted and not installed(package):
            raise ValueError(f"{setting} needs the {package} package, which is not installed")
        if wanted and on_cpu:
            raise ValueError(f"{setting} needs a GPU, and this training runs on the CPU")
    if training.get("torch_compile"):
        compiler = "triton" if not on_cpu else None
        if compiler and not installed(compiler):
            raise ValueError(
                "training.torch_compile on a GPU needs the triton package, which is not installed"
            )
        if on_cpu and not (shutil.which("c++") or shutil.which("g++")):
            raise ValueError("training.torch_compile on the CPU needs a C++ compiler (c++ or g++) on PATH")


if __name__ == "__main__":
    from alpaca_lora.common import module_help

    module_help(__doc__ + "\nA library: nothing to run.").parse_args()
