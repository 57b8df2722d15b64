"""The tiny random Llama the tests (and benchmarks/chaos.py) train: 2 layers, SmolLM2's tokenizer and template."""

from __future__ import annotations

from pathlib import Path


def write_tiny_llama(folder: Path, tokenizer_dir: Path) -> Path:
    """Save a randomly initialised (seed 0) 2-layer Llama with the tokenizer of `tokenizer_dir` into `folder`."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
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
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
