"""Outputs that stay inside an allowed set: a label trie, label ranking, nearest-label fallback, JSON schemas.

- `label_constraint`: lets a model write only token sequences that spell one of the allowed labels followed by
  end-of-turn — 100% valid labels by construction — through transformers' `prefix_allowed_tokens_fn` walking a
  token trie. It works on token ids, so multi-byte labels (emoji, Japanese) whose bytes span several tokens are
  handled like any other.
- `rank_labels`: the log-likelihood of every label (with its end-of-turn token) given the prompt; the best wins.
- `nearest_labels`: map free-form outputs to the closest label by embedding cosine (bundled MiniLM).
- `json_schema_constraint`: generation constrained to a JSON schema, through xgrammar's grammar engine.
- `tool_call_constraint`: tool calls in ftlab's `<tool_call>` blocks (`ftlab.data.tools`) held to their JSON schema,
  through xgrammar's structural tags: required calls and nothing else, or free text whose calls are all valid.

A constraint is built once per request (the trie or the compiled grammar) and is stateless; its
`generate_kwargs(prompt_width)` gives the arguments of ONE `generate` call (one batch), so per-row state lives
exactly as long as the batch it follows.

Labels are tokenised on their own (`tokenizer.encode(label, add_special_tokens=False)`), which is how a chat
template renders an assistant turn that starts with the label; the end-of-turn token is the tokenizer's eos.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import torch
from transformers import LogitsProcessor, LogitsProcessorList


def read_schema(path: str | Path) -> dict:
    """A JSON schema from a file (an OpenAI `response_format` json_schema wrapper is unwrapped)."""
    import json

    from ftlab.data.schema import DataError

    path = Path(path)
    if not path.exists():
        raise DataError("file not found", path=path)
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"not valid JSON ({exc.msg})", path=path, line=exc.lineno) from None
    if not isinstance(schema, dict):
        raise DataError("a JSON schema must be an object", path=path)
    if "json_schema" in schema:
        schema = schema["json_schema"]
    if "schema" in schema and "name" in schema:
        schema = schema["schema"]
    return schema


def end_of_turn_id(tokenizer) -> int:
    """The token that closes an assistant turn (ChatML's `<|im_end|>` is the eos of SmolLM2)."""
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no eos token: cannot tell where a label ends")
    return int(tokenizer.eos_token_id)


def label_token_ids(tokenizer, labels: Sequence[str]) -> list[list[int]]:
    """Each label's token ids followed by the end-of-turn token."""
    eos = end_of_turn_id(tokenizer)
    sequences = []
    for label in labels:
        ids = tokenizer.encode(label, add_special_tokens=False)
        if not ids:
            raise ValueError(f"label {label!r} tokenises to nothing")
        sequences.append([*ids, eos])
    return sequences


class LabelTrie:
    """A prefix tree over token-id sequences; node 0 is the root. `children[node]` maps token → child node."""

    def __init__(self, sequences: Sequence[Sequence[int]]) -> None:
        self.children: list[dict[int, int]] = [{}]
        for sequence in sequences:
            node = 0
            for token in sequence:
                nxt = self.children[node].get(token)
                if nxt is None:
                    nxt = len(self.children)
                    self.children[node][token] = nxt
                    self.children.append({})
                node = nxt
        self._allowed: dict[int, list[int]] = {}

    def step(self, node: int, token: int) -> int | None:
        """The node after `token`, or None when the sequence leaves the trie."""
        return self.children[node].get(token)

    def walk(self, tokens: Sequence[int]) -> int | None:
        """The node `tokens` lead to from the root, or None when they leave the trie."""
        node: int | None = 0
        for token in tokens:
            node = self.children[node].get(token)
            if node is None:
                return None
        return node

    def allowed(self, node: int) -> list[int]:
        """Token ids that may follow `node` (cached)."""
        tokens = self._allowed.get(node)
        if tokens is None:
            tokens = self._allowed[node] = sorted(self.children[node])
        return tokens


class Constraint(Protocol):
    """What holds one request's decoding to an allowed set; `ChatModel` asks it for each `generate` call.
    `share_key`: requests whose constraints have the same key (not None) can share one `generate` call, each row
    held separately (`ftlab.infer.batching`); None: a request with this constraint is generated alone."""

    share_key: str | None

    def generate_kwargs(self, prompt_width: int) -> dict[str, Any]:
        """Keyword arguments for one `model.generate` over prompts left-padded to `prompt_width` tokens."""
        ...


class LabelConstraint:
    """Every token that would leave the label trie is masked; once a label is complete only end-of-turn remains.

    transformers' `PrefixConstrainedLogitsProcessor` calls `allowed_tokens` per row and step: measured as fast as
    the hand-written processor it replaced (benchmarks/decode_speed.py, 1,364 emoji labels, batch 8: 1.03-1.07x
    the unconstrained run with the same budget, against 1.13-1.37x before, same machine under load).
    """

    share_key = None

    def __init__(self, trie: LabelTrie, eos_token_id: int) -> None:
        self.trie = trie
        self.eos = eos_token_id

    def generate_kwargs(self, prompt_width: int) -> dict[str, Any]:
        return {"prefix_allowed_tokens_fn": partial(self.allowed_tokens, prompt_width)}

    def allowed_tokens(self, prompt_width: int, batch_id: int, input_ids: torch.Tensor) -> list[int]:
        """The tokens that keep a row inside the trie; the row's generated tokens are `input_ids[prompt_width:]`."""
        node = self.trie.walk(input_ids[prompt_width:].tolist())
        # A finished row (past its end-of-turn, now padding) may only continue with end-of-turn.
        if node is None or not self.trie.children[node]:
            return [self.eos]
        return self.trie.allowed(node)


def label_constraint(tokenizer, labels: Sequence[str]) -> LabelConstraint:
    """Generation restricted to exactly one of `labels` then end-of-turn.

    Give generation room for the longest label: `max_label_tokens(tokenizer, labels)` new tokens.
    """
    return LabelConstraint(LabelTrie(label_token_ids(tokenizer, labels)), end_of_turn_id(tokenizer))


def max_label_tokens(tokenizer, labels: Sequence[str]) -> int:
    """The most new tokens a constrained label needs, end-of-turn included."""
    return max(len(ids) for ids in label_token_ids(tokenizer, labels))


@torch.inference_mode()
def rank_labels(
    model, tokenizer, prompt_ids: Sequence[int], labels: Sequence[str], chunk_size: int = 64
) -> torch.Tensor:
    """Log-likelihood of each label given the prompt: log p(label tokens, end-of-turn | prompt), summed.

    The prompt runs once; its key/value cache is shared by every chunk of labels, which are right-padded (the
    padding sits after the real tokens, so the causal mask already hides it). Returns one score per label.
    """
    from transformers import DynamicCache

    device = next(model.parameters()).device
    sequences = label_token_ids(tokenizer, labels)
    prompt = torch.tensor([list(prompt_ids)], device=device)
    out = model(input_ids=prompt, use_cache=True)
    first_logprobs = out.logits[0, -1].float().log_softmax(-1)
    prompt_kv = [(layer.keys, layer.values) for layer in out.past_key_values.layers]
    scores = torch.empty(len(sequences))
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))  # similar lengths share a chunk
    for start in range(0, len(order), chunk_size):
        members = order[start : start + chunk_size]
        chunk = [sequences[i] for i in members]
        width = max(len(s) for s in chunk)
        ids = torch.full((len(chunk), width), end_of_turn_id(tokenizer), dtype=torch.long)
        valid = torch.zeros((len(chunk), width), dtype=torch.bool)
        for row, sequence in enumerate(chunk):
            ids[row, : len(sequence)] = torch.tensor(sequence)
            valid[row, : len(sequence)] = True
        ids, valid = ids.to(device), valid.to(device)
        total = first_logprobs[ids[:, 0]]
        if width > 1:
            cache = DynamicCache(ddp_cache_data=[(k.expand(len(chunk), -1, -1, -1), v.expand(len(chunk), -1, -1, -1))
                                                 for k, v in prompt_kv])
            positions = torch.arange(prompt.shape[1], prompt.shape[1] + width - 1, device=device)
            logits = model(
                input_ids=ids[:, :-1], past_key_values=cache, position_ids=positions.expand(len(chunk), -1)
            ).logits.float()
            token_logprobs = logits.log_softmax(-1).gather(-1, ids[:, 1:, None])[..., 0]
            total = total + (token_logprobs * valid[:, 1:]).sum(-1)
        scores[members] = total.cpu()
    return scores


def nearest_labels(texts: Sequence[str], labels: Sequence[str], embedder: str = "minilm") -> list[tuple[str, float]]:
    """For each text, the label with the highest embedding cosine, and that cosine."""
    from ftlab.embed import embed

    if not texts:
        return []
    label_vectors = embed(list(labels), embedder)
    text_vectors = embed(list(texts), embedder)
    similarity = text_vectors @ label_vectors.T
    best = similarity.argmax(axis=1)
    return [(labels[int(i)], float(similarity[row, i])) for row, i in enumerate(best)]


# --- JSON schema -----------------------------------------------------------------------------------------------
# xgrammar (maintained by the MLC team, the grammar engine inside vLLM, SGLang and TensorRT-LLM) compiles a JSON
# schema into a pushdown automaton over the tokenizer's vocabulary; a token mask costs microseconds on the CPU.
# It installs without its GPU-only extra (triton): `pip install --no-deps xgrammar apache-tvm-ffi`.
_COMPILERS: dict[tuple[str, int, int], object] = {}


def _grammar_compiler(tokenizer, vocab_size: int):
    try:
        import xgrammar as xgr
    except ImportError:
        raise ImportError("JSON-schema decoding needs xgrammar: `pip install --no-deps xgrammar apache-tvm-ffi` "
                          "(or `make install`)") from None
    key = (str(tokenizer.name_or_path), len(tokenizer), vocab_size)
    if key not in _COMPILERS:
        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size,
                                                  stop_token_ids=[end_of_turn_id(tokenizer)])
        _COMPILERS[key] = xgr.GrammarCompiler(info)
    return _COMPILERS[key]


class JsonSchemaProcessor(LogitsProcessor):
    """One `generate` call's grammar matchers, one per row: masks every token that cannot continue a JSON document
    valid under the schema (then end-of-turn). Made fresh for each call, so it never mixes two generations.

    Hand-written on xgrammar's matcher because `xgrammar.contrib.hf.LogitsProcessor` fails an assert when a stop
    string ends one row of a batch while the others go on (transformers then feeds that row padding).
    """

    def __init__(self, compiled_grammar) -> None:
        self.grammar = compiled_grammar
        self.matchers: list | None = None
        self.bitmask: torch.Tensor | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        import xgrammar as xgr

        if self.matchers is None:  # the first step: nothing generated yet
            self.matchers = [xgr.GrammarMatcher(self.grammar) for _ in range(input_ids.shape[0])]
            self.bitmask = xgr.allocate_token_bitmask(len(self.matchers), self.grammar.tokenizer_info.vocab_size)
        else:
            for row, matcher in enumerate(self.matchers):
                token = int(input_ids[row, -1])
                if matcher is not None and not matcher.is_terminated() and not matcher.accept_token(token):
                    self.matchers[row] = None  # a row a stop string ended: transformers pads it from now on
        live = [row for row, m in enumerate(self.matchers) if m is not None and not m.is_terminated()]
        for row in live:
            self.matchers[row].fill_next_token_bitmask(self.bitmask, row)
        if live:  # finished rows are left alone: transformers replaces their tokens with padding anyway
            masked = scores.float().cpu()
            xgr.apply_token_bitmask_inplace(masked, self.bitmask, indices=live,
                                            vocab_size=min(masked.shape[-1], self.grammar.tokenizer_info.vocab_size))
            scores = masked.to(device=scores.device, dtype=scores.dtype)
        return scores


class JsonSchemaConstraint:
    """Generation held to a compiled JSON-schema grammar: a fresh `JsonSchemaProcessor` per `generate` call, with
    a matcher per row, so requests held to the same schema (`share_key`, its JSON text) can share a batch."""

    def __init__(self, compiled_grammar, share_key: str | None = None) -> None:
        self.grammar = compiled_grammar
        self.share_key = share_key

    def generate_kwargs(self, prompt_width: int) -> dict[str, Any]:
        return {"logits_processor": LogitsProcessorList([JsonSchemaProcessor(self.grammar)])}


def json_schema_constraint(tokenizer, schema: dict | str, vocab_size: int | None = None) -> JsonSchemaConstraint:
    """Generation restricted to JSON valid under `schema` (a dict or JSON text).

    `vocab_size`: the model's output width when larger than the tokenizer (`model.config.vocab_size`).
    Raises ValueError for a schema xgrammar cannot compile.
    """
    import json

    text = schema if isinstance(schema, str) else json.dumps(schema)
    compiler = _grammar_compiler(tokenizer, vocab_size or len(tokenizer))
    try:
        grammar = compiler.compile_json_schema(text, any_whitespace=False)
    except RuntimeError as exc:
        raise ValueError(f"the JSON schema cannot be compiled: {exc}") from None
    return JsonSchemaConstraint(grammar, share_key=text)


def tool_call_constraint(tokenizer, schema: dict, *, required: bool, parallel: bool = True,
                         vocab_size: int | None = None) -> JsonSchemaConstraint:  # fmt: skip
    """Tool calls written as ftlab writes them (`ftlab.data.tools`), each valid under `schema` (`call_schema`).

    `required`: the reply is calls and nothing else (at least one; exactly one without `parallel`); otherwise the
    model writes freely and every `<tool_call>` block it opens is held to the schema. The JSON is spaced as
    `json.dumps` spaces it, which is how ftlab renders calls for training. Raises ValueError for a schema xgrammar
    cannot compile."""
    import json

    from ftlab.data.tools import CALL_CLOSE, CALL_OPEN

    compiler = _grammar_compiler(tokenizer, vocab_size or len(tokenizer))  # first: it explains a missing xgrammar
    import xgrammar as xgr
    from xgrammar import structural_tag as st

    try:
        call = xgr.Grammar.from_json_schema(json.dumps(schema), any_whitespace=False, separators=(", ", ": "))
        tag = st.TagFormat(begin=CALL_OPEN, content=st.GrammarFormat(grammar=str(call)), end=CALL_CLOSE)
        one = not parallel
        if required:
            calls = st.TagsWithSeparatorFormat(tags=[tag], separator="\n", at_least_one=True, stop_after_first=one)
        else:
            calls = st.TriggeredTagsFormat(triggers=[CALL_OPEN.strip()], tags=[tag], stop_after_first=one)
        grammar = compiler.compile_structural_tag(st.StructuralTag(format=calls))
    except RuntimeError as exc:
        raise ValueError(f"the tools' JSON schemas cannot be compiled: {exc}") from None
    return JsonSchemaConstraint(grammar)
