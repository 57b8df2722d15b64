"""Time per example of free, constrained (label trie) and rank decoding on the bundled model with 1,364 labels.

    python benchmarks/decode_speed.py [--examples 16] [--rank-examples 4] [--batch-size 8]

Free generation gets the token budget `ftlab eval` gives it on a label task (the longest label plus a quarter,
plus 16 tokens); constrained generation stops by itself after a label. Prints seconds per example and per
generated token of each mode and the ratios. Run it on a quiet machine: two CPU-heavy processes at once slow
each other down many times over.
"""

from __future__ import annotations

import argparse
import time
import unicodedata

import torch

from ftlab.config import BUNDLED_MODEL
from ftlab.infer.constrained import LabelConstraint, label_constraint, label_token_ids, max_label_tokens, rank_labels
from ftlab.infer.generate import ChatModel
from ftlab.models import set_threads

TEXTS = [
    "I finally passed my driving test!", "My flight got cancelled again.", "Pizza night with friends",
    "The cat knocked my coffee over", "Snow is falling outside", "Deadline moved up by a week", "Happy birthday!",
    "I can't find my keys anywhere", "We won the match 3-0", "It's raining and I forgot my umbrella",
    "New puppy just arrived", "Exam results come out tomorrow", "Just finished a marathon",
    "The wifi is down again", "Sunset at the beach", "Baking bread for the first time",
]


def emoji_labels(n: int = 1364) -> list[str]:
    """`n` distinct single-code-point emoji (pictographs, emoticons, transport, supplemental symbols)."""
    ranges = [(0x1F300, 0x1F5FF), (0x1F600, 0x1F64F), (0x1F680, 0x1F6FF), (0x1F900, 0x1F9FF), (0x1FA70, 0x1FAFF),
              (0x2600, 0x27BF)]
    labels = [chr(c) for lo, hi in ranges for c in range(lo, hi + 1) if unicodedata.name(chr(c), "")]
    if len(labels) < n:
        raise SystemExit(f"only {len(labels)} emoji in the ranges")
    return labels[:n]


def conversations(n: int) -> list[list[dict[str, str]]]:
    system = "Reply with the single emoji that best fits the message."
    return [[{"role": "system", "content": system}, {"role": "user", "content": TEXTS[i % len(TEXTS)]}]
            for i in range(n)]


class Timed(LabelConstraint):
    """The label constraint, adding up the time spent in its per-row step function (its own cost, apart from the
    model's and from transformers' masking)."""

    def __init__(self, inner: LabelConstraint) -> None:
        super().__init__(inner.trie, inner.eos)
        self.seconds, self.calls = 0.0, 0

    def allowed_tokens(self, prompt_width: int, batch_id: int, input_ids: torch.Tensor) -> list[int]:
        started = time.perf_counter()
        tokens = super().allowed_tokens(prompt_width, batch_id, input_ids)
        self.seconds += time.perf_counter() - started
        self.calls += 1
        return tokens


def log(message: str) -> None:
    print(message, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=BUNDLED_MODEL)
    parser.add_argument("--examples", type=int, default=16)
    parser.add_argument("--rank-examples", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    set_threads()
    labels = emoji_labels()
    model = ChatModel(args.model)
    tokenizer = model.tokenizer
    lengths = [len(ids) - 1 for ids in label_token_ids(tokenizer, labels)]
    log(f"model {model.name} · {len(labels)} labels, {min(lengths)}–{max(lengths)} tokens each "
          f"(mean {sum(lengths) / len(lengths):.1f}) · {torch.get_num_threads()} threads")
    convs = conversations(args.examples)
    free_budget = int((max(lengths) + 1) * 1.25) + 16
    model.generate(convs[: args.batch_size], max_new_tokens=4, batch_size=args.batch_size)  # warm-up

    log("timing free generation …")
    started = time.perf_counter()
    free = model.generate(convs, max_new_tokens=free_budget, batch_size=args.batch_size)
    free_s = time.perf_counter() - started

    log(f"  {free_s:.1f} s; timing constrained generation …")
    started = time.perf_counter()
    constraint = Timed(label_constraint(tokenizer, labels))
    build_s = time.perf_counter() - started
    started = time.perf_counter()
    constrained = model.generate(convs, max_new_tokens=max_label_tokens(tokenizer, labels), batch_size=args.batch_size,
                                 constraint=constraint)
    constrained_s = time.perf_counter() - started

    log(f"  {constrained_s:.1f} s; timing free generation with the constrained budget …")
    # The same budget without the constraint: what the trie itself costs per step.
    started = time.perf_counter()
    model.generate(convs, max_new_tokens=max_label_tokens(tokenizer, labels), batch_size=args.batch_size)
    short_free_s = time.perf_counter() - started

    log(f"  {short_free_s:.1f} s; timing rank …")
    started = time.perf_counter()
    for messages in convs[: args.rank_examples]:
        rank_labels(model.model, tokenizer, model.prompt_ids(messages), labels)
    rank_s = time.perf_counter() - started

    n = args.examples
    free_tokens = sum(c.completion_tokens for c in free)
    constrained_tokens = sum(c.completion_tokens for c in constrained)
    valid_free = sum(c.text.strip() in set(labels) for c in free)
    valid_constrained = sum(c.text in set(labels) for c in constrained)
    print(f"free         {free_s / n:7.3f} s/example  {free_s / max(1, free_tokens) * 1000:6.1f} ms/token  "
          f"({free_tokens / n:.1f} tokens/example, budget {free_budget}; valid labels {valid_free}/{n})")
    print(f"constrained  {constrained_s / n:7.3f} s/example  "
          f"{constrained_s / max(1, constrained_tokens) * 1000:6.1f} ms/token  "
          f"({constrained_tokens / n:.1f} tokens/example; valid labels {valid_constrained}/{n}; "
          f"trie built in {build_s:.2f} s)")
    print(f"label-trie walk itself: {constraint.seconds / max(1, constraint.calls) * 1e6:.0f} µs per row and step, "
          f"{constraint.seconds / constrained_s:.1%} of constrained generation")
    print(f"same budget, unconstrained {short_free_s / n:7.3f} s/example")
    print(f"rank         {rank_s / args.rank_examples:7.3f} s/example  (all {len(labels)} labels scored)")
    per_token = (constrained_s / max(1, constrained_tokens)) / (free_s / max(1, free_tokens))
    print(f"constrained / free: {constrained_s / free_s:.2f}× per example (goal < 1.5×); per token {per_token:.2f}×")
    print(f"constrained / same-budget free: {constrained_s / short_free_s:.2f}× (same number of model steps)")
    print(f"rank / free: {rank_s / args.rank_examples / (free_s / n):.2f}× per example")


if __name__ == "__main__":
    main()
