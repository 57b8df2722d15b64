"""Outputs that stay inside an allowed set: a label trie, label ranking, nearest-label fallback, JSON schemas.

- `constrained_labels_processor`: a transformers logits processor that lets a model write only token sequences
  that spell one of the allowed labels followed by end-of-turn — 100% valid labels by construction. It works on
  token ids, so multi-byte labels (emoji, Japanese) whose bytes span several tokens are handled like any other.
- `rank_labels`: the log-likelihood of every label (with its end-of-turn token) given the prompt; the best wins.
- `nearest_labels`: map free-form outputs to the closest label by embedding cosine (bundled MiniLM).
- `json_schema_processor`: generation constrained to a JSON schema, through xgrammar's grammar engine.
Both processors accept being passed to several `generate` calls (ChatModel reuses one across its batches).

Labels are tokenised on their own (`tokenizer.encode(label, add_special_tokens=False)`), which is how a chat
template renders an assistant turn that starts with the label; the end-of-turn token is the tokenizer's eos.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import LogitsProcessor


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
        self._allowed: dict[int, torch.Tensor] = {}

    def step(self, node: int, token: int) -> int | None:
        """The node after `token`, or None when the sequence leaves the trie."""
        return self.children[node].get(token)

    def allowed(self, node: int) -> torch.Tensor:
        """Token ids that may follow `node` (cached as a tensor)."""
        tensor = self._allowed.get(node)
        if tensor is None:
            tensor = torch.tensor(sorted(self.children[node]), dtype=torch.long)
            self._allowed[node] = tensor
        return tensor


class PerGenerationProcessor(LogitsProcessor):
    """A logits processor with per-row state that follows the tokens each row has generated.

    `ChatModel.generate` passes one processor to every batch, so a new generation is detected (a different
    batch size or prompt) and the state restarted. `prompt_len` is the (padded) prompt length; when None it is
    taken from the first call of each generation. Subclasses say how a row starts, advances and is masked.
    """

    def __init__(self, prompt_len: int | None = None) -> None:
        self.fixed_prompt_len = prompt_len
        self.prompt: torch.Tensor | None = None
        self.seen = 0

    def start(self, batch_size: int) -> None:
        raise NotImplementedError

    def advance(self, row: int, token: int) -> None:
        raise NotImplementedError

    def restrict(self, scores: torch.FloatTensor) -> torch.FloatTensor:
        raise NotImplementedError

    def _continues(self, input_ids: torch.LongTensor) -> bool:
        if self.prompt is None or input_ids.shape[0] != self.prompt.shape[0] or input_ids.shape[1] < self.seen:
            return False
        return bool(torch.equal(input_ids[:, : self.prompt.shape[1]], self.prompt))

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if not self._continues(input_ids):
            prompt_len = self.fixed_prompt_len if self.fixed_prompt_len is not None else input_ids.shape[1]
            self.prompt = input_ids[:, :prompt_len].clone()
            self.seen = prompt_len
            self.start(input_ids.shape[0])
        for position in range(self.seen, input_ids.shape[1]):  # the tokens added since the last call
            for row in range(input_ids.shape[0]):
                self.advance(row, int(input_ids[row, position]))
        self.seen = input_ids.shape[1]
        return self.restrict(scores)


class LabelTrieProcessor(PerGenerationProcessor):
    """Masks every token that would leave the label trie; once a label is complete only end-of-turn remains."""

    def __init__(self, trie: LabelTrie, eos_token_id: int, prompt_len: int | None = None) -> None:
        super().__init__(prompt_len)
        self.trie = trie
        self.eos = eos_token_id
        self.states: list[int | None] = []

    def start(self, batch_size: int) -> None:
        self.states = [0] * batch_size

    def advance(self, row: int, token: int) -> None:
        node = self.states[row]
        if node is not None:
            self.states[row] = self.trie.step(node, token)

    def restrict(self, scores: torch.FloatTensor) -> torch.FloatTensor:
        mask = torch.full_like(scores, float("-inf"))
        for row, node in enumerate(self.states):
            # A finished row (past its end-of-turn, now padding) may only continue with end-of-turn.
            if node is None or not self.trie.children[node]:
                mask[row, self.eos] = 0.0
            else:
                mask[row, self.trie.allowed(node).to(scores.device)] = 0.0
        return scores + mask


def constrained_labels_processor(tokenizer, labels: Sequence[str], prompt_len: int | None = None) -> LabelTrieProcessor:
    """A logits processor restricting generation to exactly one of `labels` then end-of-turn.

    `prompt_len`: the padded length of the prompts in the batch (None: detected at the first step).
    Give generation room for the longest label: `max_label_tokens(tokenizer, labels)` new tokens.
    """
    return LabelTrieProcessor(LabelTrie(label_token_ids(tokenizer, labels)), end_of_turn_id(tokenizer), prompt_len)


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


class JsonSchemaProcessor(PerGenerationProcessor):
    """Masks every token that cannot continue a JSON document valid under the schema (then end-of-turn)."""

    def __init__(self, compiled_grammar, eos_token_id: int, prompt_len: int | None = None) -> None:
        super().__init__(prompt_len)
        self.grammar = compiled_grammar
        self.eos = eos_token_id
        self.matchers: list = []
        self.bitmask: torch.Tensor | None = None

    def start(self, batch_size: int) -> None:
        import xgrammar as xgr

        self.matchers = [xgr.GrammarMatcher(self.grammar) for _ in range(batch_size)]
        self.bitmask = xgr.allocate_token_bitmask(batch_size, self.grammar.tokenizer_info.vocab_size)

    def advance(self, row: int, token: int) -> None:
        matcher = self.matchers[row]
        if matcher is not None and not matcher.is_terminated() and not matcher.accept_token(token):
            self.matchers[row] = None  # cannot happen under the mask; a finished row's padding ends up here

    def restrict(self, scores: torch.FloatTensor) -> torch.FloatTensor:
        import xgrammar as xgr

        live = []
        for row, matcher in enumerate(self.matchers):
            if matcher is not None and not matcher.is_terminated():
                matcher.fill_next_token_bitmask(self.bitmask, row)
                live.append(row)
        masked = scores.float().cpu()
        if live:
            xgr.apply_token_bitmask_inplace(masked, self.bitmask, indices=live,
                                            vocab_size=min(masked.shape[-1], self.grammar.tokenizer_info.vocab_size))
        for row in range(len(self.matchers)):
            if row not in live:  # finished: only end-of-turn
                eos_score = masked[row, self.eos].item()
                masked[row] = float("-inf")
                masked[row, self.eos] = eos_score
        return masked.to(device=scores.device, dtype=scores.dtype)


def json_schema_processor(tokenizer, schema: dict | str, prompt_len: int | None = None,
                          vocab_size: int | None = None) -> JsonSchemaProcessor:
    """A logits processor restricting generation to JSON valid under `schema` (a dict or JSON text).

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
    return JsonSchemaProcessor(grammar, end_of_turn_id(tokenizer), prompt_len)
