"""Generation: batching does not change greedy outputs, adapters reload exactly, stop strings and streaming."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ftlab.config import BUNDLED_MODEL, PLAIN_LORA, TrainConfig
from ftlab.infer.generate import ChatModel
from ftlab.models import load_tokenizer
from ftlab.train.recipe import train

CONVERSATIONS = [
    [{"role": "user", "content": "Hello there"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "A much longer question about soup?"}],
    [{"role": "user", "content": "x"}],
]


def test_batched_greedy_equals_one_by_one(tiny_model_dir: Path) -> None:
    chat = ChatModel(str(tiny_model_dir))
    batched = chat.generate(CONVERSATIONS, max_new_tokens=12, batch_size=3)
    done: list[int] = []  # what a progress bar is told: one call per batch of finished replies
    single = chat.generate(CONVERSATIONS, max_new_tokens=12, batch_size=1, on_done=done.append)
    assert done == [1, 1, 1]
    assert [c.text for c in batched] == [c.text for c in single]
    assert all(c.completion_tokens <= 12 and c.prompt_tokens > 5 for c in batched)
    assert {c.finish_reason for c in batched} <= {"stop", "length"}


def test_stream_matches_generate_and_stop_cuts(tiny_model_dir: Path) -> None:
    chat = ChatModel(str(tiny_model_dir))
    greedy = chat.generate([CONVERSATIONS[0]], max_new_tokens=16)[0].text
    assert "".join(chat.stream(CONVERSATIONS[0], max_new_tokens=16)) == greedy
    # Sampled from the random tiny model the text is varied (greedy it writes newlines), so a stop string taken
    # from its middle is a real test of where the cut falls, in generate and in stream alike.
    sampled = {"max_new_tokens": 16, "temperature": 1.0, "seed": 3}
    full = chat.generate([CONVERSATIONS[0]], **sampled)[0].text
    assert "".join(chat.stream(CONVERSATIONS[0], **sampled)) == full
    stop = full[len(full) // 2 : len(full) // 2 + 2]
    assert len(set(full)) > 4 and full.find(stop) > 0, full
    cut = chat.generate([CONVERSATIONS[0]], stop=[stop], **sampled)[0]
    assert cut.text == full[: full.find(stop)] and cut.finish_reason == "stop"
    assert "".join(chat.stream(CONVERSATIONS[0], stop=[stop], **sampled)) == cut.text


def test_sampling_with_seed_is_reproducible(tiny_model_dir: Path) -> None:
    chat = ChatModel(str(tiny_model_dir))
    a = chat.generate(CONVERSATIONS, max_new_tokens=10, temperature=1.0, top_p=0.9, seed=3)
    b = chat.generate(CONVERSATIONS, max_new_tokens=10, temperature=1.0, top_p=0.9, seed=3)
    assert [c.text for c in a] == [c.text for c in b]


def _adapter_roundtrip(model_dir: Path, tmp_path: Path, n_epochs: int = 1) -> None:
    data = tmp_path / "train.jsonl"
    with open(data, "w") as handle:
        for i in range(8):
            handle.write(json.dumps({"messages": [{"role": "user", "content": f"q{i}"},
                                                  {"role": "assistant", "content": f"a{i}"}]}) + "\n")
    config = TrainConfig(model=str(model_dir), n_epochs=n_epochs, batch_size=4, learning_rate_multiplier=10.0,
                         **PLAIN_LORA)  # x10 is a plain LoRA's rate: with auto's LoRA+ B would learn 4 times faster
    result = train(config, data, data, tmp_path / "run", progress=False)
    rows = [line.split(",") for line in result.metrics_csv.read_text().splitlines()[1:]]
    assert float(rows[-1][1]) < float(rows[0][1]), "training loss should fall"
    # the adapter names its base portably: the bundled model by its alias, any other folder by its full path
    recorded = json.loads((result.final_dir / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert recorded == (BUNDLED_MODEL if model_dir.name == BUNDLED_MODEL else str(model_dir.resolve()))

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    # A real chat prompt: on arbitrary special-token ids fp32 itself is off by 0.02 from fp64 on SmolLM2.
    tokenizer = load_tokenizer(str(model_dir))
    ids = torch.tensor([tokenizer.apply_chat_template([{"role": "user", "content": "q3"}],
                                                      add_generation_prompt=True, return_dict=False)])
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager")
    unmerged = PeftModel.from_pretrained(base, str(result.final_dir)).eval()
    with torch.no_grad():
        reloaded = unmerged(ids).logits
        merged = unmerged.merge_and_unload()(ids).logits
        base_only = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)(ids).logits
    assert not torch.allclose(reloaded, base_only, atol=1e-4), "the adapter should change the model"
    torch.testing.assert_close(merged, reloaded, atol=1e-3, rtol=1e-4)  # fp32 rounding over 30 layers


def test_adapter_reloads_and_merges_to_the_same_logits(tiny_model_dir: Path, tmp_path: Path) -> None:
    _adapter_roundtrip(tiny_model_dir, tmp_path)


@pytest.mark.bundled
def test_bundled_model_trains_and_reloads(bundled_model_dir: Path, tmp_path: Path) -> None:
    _adapter_roundtrip(bundled_model_dir, tmp_path, n_epochs=2)
