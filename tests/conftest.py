"""Shared fixtures: an isolated FTLAB_HOME per test session and a tiny random Llama with the real tokenizer."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Converted bundled weights are cached across test sessions (a read-only cache; conversion takes ~15 s).
os.environ.setdefault("FTLAB_MODELS_DIR", str(REPO / ".cache" / "models"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session", autouse=True)
def ftlab_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Everything a test run writes goes under a fresh FTLAB_HOME."""
    home = tmp_path_factory.mktemp("ftlab-home")
    os.environ["FTLAB_HOME"] = str(home)
    return home


@pytest.fixture(scope="session")
def bundled_model_dir() -> Path:
    """The bundled SmolLM2 converted to safetensors (cached in FTLAB_MODELS_DIR)."""
    from ftlab.config import BUNDLED_MODEL
    from ftlab.models import resolve_model

    return Path(resolve_model(BUNDLED_MODEL))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, bundled_model_dir: Path) -> Path:
    """A randomly initialised 2-layer Llama with SmolLM2's tokenizer and chat template (loads in <1 s)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(bundled_model_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    folder = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_adapters(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two LoRA adapters and one DoRA adapter (r8, all linear layers) with random, non-zero weights on the tiny
    model: what an adapter costs and how it is served does not depend on what it learnt."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    folders = []
    for i, dora in enumerate([False, False, True]):
        torch.manual_seed(i)
        config = LoraConfig(r=8, target_modules="all-linear", init_lora_weights=False, use_dora=dora)
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), config)
        folders.append(tmp_path_factory.mktemp(f"tiny-{'dora' if dora else 'lora'}-{i}"))
        model.save_pretrained(folders[-1])
    return folders
