"""How `ftlab serve` should batch, measured on the bundled model in one process (not a test).

    python benchmarks/serve_batching.py [--requests 16] [--tokens 32] [--rounds 2]

Two questions, each answered by alternating the contenders in the same process (the machine is shared, so
only ratios within one run mean anything):

1. Continuous batching (transformers' `generate_batch`: paged attention, requests join and leave every step)
   against dynamic micro-batching (one left-padded `generate` over the requests that are waiting) and against
   one request at a time, all greedy with the same prompts and token budget.
2. What an unmerged LoRA costs at batch 8: the base alone, one adapter unmerged, four adapters mixed in one
   batch (peft's `adapter_names=`), and the adapter merged into a copy of the base.

Prints generated tokens per second of each, and the ratios. Random-init LoRA adapters (r16, all linear layers)
stand in for trained ones: the cost of an adapter does not depend on what it learnt.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from transformers import GenerationConfig

from ftlab.config import BUNDLED_MODEL
from ftlab.infer.generate import inference_precision
from ftlab.models import default_device, load_model, load_tokenizer, set_threads

QUESTIONS = [
    "What is the capital of France?", "Give me a tip for sleeping better.", "How do plants make food?",
    "Name three primary colours.", "Why is the sky blue?", "Write a haiku about rain.", "What is 12 times 7?",
    "Suggest a name for a cat.", "How far is the Moon?", "What does a bee do?", "Explain gravity simply.",
    "What is a noun?", "How do I boil an egg?", "Who wrote Hamlet?", "What is the boiling point of water?",
    "Describe a rainbow.",
]  # fmt: skip


def prompts(tokenizer, n: int) -> list[list[int]]:
    return [
        list(tokenizer.apply_chat_template([{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}],
                                           add_generation_prompt=True, tokenize=True, return_dict=False))
        for i in range(n)
    ]  # fmt: skip


def padded_generate(model, tokenizer, batch: list[list[int]], config: GenerationConfig, **kwargs) -> int:
    """One left-padded `generate` over `batch`; the number of tokens generated before each row's end."""
    width = max(len(p) for p in batch)
    pad = tokenizer.pad_token_id
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in batch])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch])
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=mask, generation_config=config, **kwargs)
    return sum(_length(row, tokenizer.eos_token_id) for row in out[:, width:].tolist())


def _length(row: list[int], eos: int) -> int:
    return row.index(eos) + 1 if eos in row else len(row)


def timed(label: str, results: dict[str, list[float]], run) -> None:
    started = time.perf_counter()
    tokens = run()
    rate = tokens / (time.perf_counter() - started)
    results.setdefault(label, []).append(rate)
    print(f"  {label:<34} {rate:7.1f} tok/s ({tokens} tokens)", flush=True)


def batching(model, tokenizer, args, config: GenerationConfig) -> dict[str, list[float]]:
    batch = prompts(tokenizer, args.requests)
    results: dict[str, list[float]] = {}
    for round_ in range(args.rounds):
        print(f"round {round_ + 1}: {args.requests} requests x {args.tokens} tokens", flush=True)
        timed("one at a time", results, lambda: sum(padded_generate(model, tokenizer, [p], config) for p in batch))
        timed(f"micro-batch (one generate of {len(batch)})", results,
              lambda: padded_generate(model, tokenizer, batch, config))  # fmt: skip
        timed("micro-batch (batches of 8)", results,
              lambda: sum(padded_generate(model, tokenizer, batch[i : i + 8], config) for i in range(0, len(batch), 8)))

        def continuous() -> int:
            outputs = model.generate_batch(inputs=batch, generation_config=config, progress_bar=False)
            return sum(len(o.generated_tokens) for o in outputs.values())

        timed("continuous (generate_batch)", results, continuous)
        model.set_attn_implementation("eager")  # generate_batch switched it to paged attention
    return results


def adapters(model, tokenizer, args, config: GenerationConfig) -> dict[str, list[float]]:
    from peft import LoraConfig, PeftModel, get_peft_model

    batch = prompts(tokenizer, 8)
    merged_base = copy.deepcopy(model)
    lora = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", init_lora_weights=False, task_type="CAUSAL_LM")
    torch.manual_seed(0)
    peft_model: PeftModel = get_peft_model(model, lora, adapter_name="a0")
    for i in range(1, 4):
        peft_model.add_adapter(f"a{i}", lora)
    peft_model.eval()
    merged = get_peft_model(merged_base, lora, adapter_name="a0")
    merged.load_state_dict(peft_model.state_dict(), strict=False)
    merged = merged.merge_and_unload().eval()
    names = [f"a{i % 4}" for i in range(8)]
    results: dict[str, list[float]] = {}
    for round_ in range(args.rounds):
        print(f"round {round_ + 1}: batch 8 x {args.tokens} tokens", flush=True)
        with peft_model.disable_adapter():
            timed("base", results, lambda: padded_generate(peft_model, tokenizer, batch, config))
        peft_model.set_adapter("a0")
        timed("one adapter, unmerged", results, lambda: padded_generate(peft_model, tokenizer, batch, config))
        timed("4 adapters mixed (adapter_names)", results,
              lambda: padded_generate(peft_model, tokenizer, batch, config, adapter_names=names))  # fmt: skip
        timed("one adapter, merged copy", results, lambda: padded_generate(merged, tokenizer, batch, config))
    return results


def summary(results: dict[str, list[float]], reference: str) -> None:
    base = sum(results[reference]) / len(results[reference])
    for label, rates in results.items():
        mean = sum(rates) / len(rates)
        print(f"  {label:<34} {mean:7.1f} tok/s  {mean / base:5.2f}x {reference}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--only", choices=["batching", "adapters"], default=None)
    args = parser.parse_args()
    set_threads()
    device = default_device()
    tokenizer = load_tokenizer(BUNDLED_MODEL)
    model = load_model(BUNDLED_MODEL, device, inference_precision(device))
    config = GenerationConfig(max_new_tokens=args.tokens, do_sample=False, eos_token_id=tokenizer.eos_token_id,
                              pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    if args.only != "adapters":
        print("\n".join(["", "== batching =="]))
        summary(batching(model, tokenizer, args, config), "one at a time")
    if args.only != "batching":
        print("\n".join(["", "== adapters at batch 8 =="]))
        summary(adapters(model, tokenizer, args, config), "base")


if __name__ == "__main__":
    main()
