"""What generating the validation replies of `select_by` costs, by batch size: the recipe's batch
(`VALIDATION_REPLY_BATCH`) against batches of 8, the reference, measured in the same run.

    python benchmarks/validation_replies.py [--adapter RUN/checkpoint-epoch-5] [--validation VAL.jsonl]

Generates a reply to every validation conversation as an evaluation of the training recipe does (the model with
its adapter unmerged, in eval mode, greedy, the token budget `ftlab eval` gives the references), alternating the
two batch sizes for --repeats rounds, and prints seconds per round and the ratio. Without --adapter the LoRA
adapter is freshly initialised (it leaves the base's replies unchanged: prose until the budget, the worst case).
The replies must be the same text at both batch sizes; the script says so or fails. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model

from ftlab.config import BUNDLED_MODEL
from ftlab.data.schema import read_examples, template_messages
from ftlab.infer.backend import default_max_new_tokens
from ftlab.infer.generate import ChatModel
from ftlab.models import load_model, load_tokenizer, set_threads
from ftlab.train.recipe import VALIDATION_REPLY_BATCH

RECIPES_VAL = Path(__file__).resolve().parents[1] / "examples" / "recipes" / "val.jsonl"
REFERENCE_BATCH = 8  # the batch the recipe generated validation replies in before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=BUNDLED_MODEL)
    parser.add_argument("--adapter", type=Path, help="a run's checkpoint folder (default: a fresh LoRA adapter)")
    parser.add_argument("--validation", type=Path, default=RECIPES_VAL)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    set_threads()
    tokenizer, base = load_tokenizer(args.model), load_model(args.model)
    model = (PeftModel.from_pretrained(base, args.adapter) if args.adapter
             else get_peft_model(base, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear")))  # fmt: skip
    model.eval()
    examples = read_examples(args.validation)
    chat = ChatModel.around(model, tokenizer, torch.device("cpu"))
    budget = default_max_new_tokens(chat, [e.reference() for e in examples])
    conversations = [template_messages(e.prompt_messages()) for e in examples]
    print(f"{len(examples)} validation replies of at most {budget} tokens, {torch.get_num_threads()} threads")

    seconds: dict[int, list[float]] = {REFERENCE_BATCH: [], VALIDATION_REPLY_BATCH: []}
    texts: dict[int, list[str]] = {}
    for _ in range(args.repeats):
        for batch_size in seconds:
            started = time.perf_counter()
            replies = chat.generate(conversations, max_new_tokens=budget, batch_size=batch_size)
            seconds[batch_size].append(time.perf_counter() - started)
            texts[batch_size] = [reply.text for reply in replies]
    for batch_size, values in seconds.items():
        rounds = ", ".join(f"{value:.1f}" for value in values)
        print(f"batch {batch_size:>3}: {statistics.median(values):6.1f} s per round ({rounds})")
    ratio = statistics.median(seconds[REFERENCE_BATCH]) / statistics.median(seconds[VALIDATION_REPLY_BATCH])
    print(f"batch {VALIDATION_REPLY_BATCH} is {ratio:.2f}x batches of {REFERENCE_BATCH}")
    same = texts[REFERENCE_BATCH] == texts[VALIDATION_REPLY_BATCH]
    print("the replies are the same text at both batch sizes" if same else "the replies DIFFER between batch sizes")
    if not same:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
