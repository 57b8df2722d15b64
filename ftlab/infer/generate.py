"""Generating replies from a base model with an optional LoRA adapter.

`ChatModel` is the local `ChatBackend`: it loads a base model (and merges an adapter into it, which keeps
generation at base speed: an unmerged LoRA costs ~40% at batch 8 on the CPU), renders conversations with the
model's own chat template and generates in left-padded batches through transformers' `generate`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from transformers import GenerationConfig, StoppingCriteria, TextIteratorStreamer

from ftlab.data.tools import apply_template
from ftlab.infer.backend import Completion
from ftlab.infer.refs import ModelRef
from ftlab.models import Precision, best_precision, cpu_has_bf16, default_device, load_model, load_tokenizer

if TYPE_CHECKING:
    from ftlab.infer.constrained import Constraint


class StopOnStrings(StoppingCriteria):
    """Stop a row once its generated text contains a stop string.

    Hand-written because transformers' `stop_strings` also matches text that straddles the prompt (a prompt
    ending in "\\n" plus a generated "\\n" stops on "\\n\\n"), which OpenAI's `stop` never does.
    """

    def __init__(self, tokenizer, stops: list[str], prompt_width: int) -> None:
        self.tokenizer, self.stops, self.prompt_width = tokenizer, stops, prompt_width

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_width :], skip_special_tokens=True)
        return torch.tensor([any(stop in text for stop in self.stops) for text in texts], device=input_ids.device)


def inference_precision(device: torch.device) -> Precision:
    """bf16 weights where the hardware has bf16 (half the memory traffic per token), else fp32."""
    base = best_precision(device)
    if device.type == "cuda" or cpu_has_bf16():
        return Precision(weights=torch.bfloat16, autocast=None, attention=base.attention)
    return Precision(weights=torch.float32, autocast=None, attention=base.attention)


class ChatModel:
    """A chat model ready to generate: base weights, an optional adapter merged in, and its tokenizer."""

    local = True
    concurrency = 1  # one model, one batch at a time: the batch is where the speed comes from

    def __init__(
        self,
        model: str,
        adapter: str | Path | None = None,
        device: torch.device | None = None,
        merge: bool = True,
        *,
        revision: str | None = None,
        name: str | None = None,
        batch_size: int = 8,
    ) -> None:
        self.device = device or default_device()
        self.name = name or (model if adapter is None else f"{model}+{adapter}")
        self.batch_size = batch_size
        self.tokenizer = load_tokenizer(model, revision)
        self.tokenizer.padding_side = "left"
        precision = inference_precision(self.device)
        if adapter is None:
            self.model = load_model(model, self.device, precision, revision)
        else:
            from peft import PeftModel

            # Merge in fp32, then cast: merging into bf16 weights would round the small LoRA delta away.
            fp32 = Precision(weights=torch.float32, autocast=None, attention=precision.attention)
            base = load_model(model, self.device, fp32, revision)
            peft_model = PeftModel.from_pretrained(base, str(adapter))
            self.model = peft_model.merge_and_unload() if merge else peft_model
            self.model = self.model.to(precision.weights).eval()

    @classmethod
    def from_ref(cls, ref: ModelRef, device: torch.device | None = None, batch_size: int = 8) -> ChatModel:
        """The local model a resolved `ModelRef` names."""
        return cls(ref.model, ref.adapter, device, revision=ref.revision, name=ref.name, batch_size=batch_size)

    @classmethod
    def around(cls, model, tokenizer, device: torch.device, *, name: str = "in training",
               batch_size: int = 8) -> ChatModel:
        """Generation with weights already in memory, loading nothing: the training recipe's model (adapter
        unmerged, in eval mode) replying to the validation set. The caller owns the model's mode and precision."""
        chat = cls.__new__(cls)
        chat.device, chat.name, chat.batch_size, chat.model, chat.tokenizer = device, name, batch_size, model, tokenizer
        return chat

    def prompt_ids(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> list[int]:
        """Token ids of a conversation (and the tools it may call) rendered by the chat template, as training
        renders them (`ftlab.data.tools.apply_template`), ending with the assistant prompt."""
        return apply_template(self.tokenizer, messages, tools, generation_prompt=True, tokenize=True)

    @torch.inference_mode()
    def rank_labels(self, messages: list[dict[str, Any]], labels: Sequence[str]) -> torch.Tensor:
        """The log-likelihood of each label as the reply to `messages` (see `constrained.rank_labels`)."""
        from ftlab.infer.constrained import rank_labels

        return rank_labels(self.model, self.tokenizer, self.prompt_ids(messages), labels)

    def constraint(self, labels: list[str] | None, json_schema: dict[str, Any] | None) -> Constraint | None:
        """What holds decoding to `labels` or to `json_schema` (None for neither), built once per request."""
        from ftlab.infer import constrained

        if labels and json_schema is not None:
            raise ValueError("labels and a JSON schema constrain the output in two different ways: pick one")
        if labels:
            return constrained.label_constraint(self.tokenizer, labels)
        if json_schema is not None:
            return constrained.json_schema_constraint(self.tokenizer, json_schema,
                                                      vocab_size=self.model.config.vocab_size)  # fmt: skip
        return None

    def _generation_config(self, max_new_tokens: int, temperature: float, top_p: float) -> GenerationConfig:
        """Sampling settings; `stop` is handled by `StopOnStrings`, not by transformers."""
        sample = temperature > 0
        return GenerationConfig(
            max_new_tokens=max_new_tokens,
            do_sample=sample,
            temperature=temperature if sample else None,
            top_p=top_p if sample else None,
            top_k=None,
            eos_token_id=self.tokenizer.eos_token_id,
            pad_token_id=self.tokenizer.pad_token_id,
        )

    @torch.inference_mode()
    def generate(
        self,
        conversations: list[list[dict[str, Any]]],
        *,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float = 1.0,
        stop: list[str] | None = None,
        seed: int | None = None,
        labels: list[str] | None = None,
        json_schema: dict[str, Any] | None = None,
        tools: list[dict[str, Any]] | None = None,
        constraint: Constraint | None = None,
        batch_size: int | None = None,
        on_done: Callable[[int], object] | None = None,
    ) -> list[Completion]:
        """One completion per conversation (greedy unless temperature > 0), in the input order.

        `labels` / `json_schema` hold the reply to one label / to JSON valid under the schema; a caller that built
        a `constraint` of its own (from `ftlab.infer.constrained`) passes it instead. `tools`: the tool
        definitions every conversation may call (the replies' `<tool_call>` blocks are read with
        `ftlab.data.tools.parse`). Conversations are batched by prompt length (`batch_size`, default the
        model's) so little work goes to padding. `on_done(n)` is told as each batch of n replies is finished.
        """
        if labels or json_schema is not None:
            constraint = self.constraint(labels, json_schema)
            if labels:
                from ftlab.infer.constrained import max_label_tokens

                max_new_tokens = max_label_tokens(self.tokenizer, labels)
        batch_size = batch_size or self.batch_size
        if seed is not None:
            torch.manual_seed(seed)
        prompts = [self.prompt_ids(conversation, tools) for conversation in conversations]
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        config = self._generation_config(max_new_tokens, temperature, top_p)
        results: list[Completion | None] = [None] * len(prompts)
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            for index, completion in zip(
                batch, self._generate_batch([prompts[i] for i in batch], config, stop, constraint), strict=True
            ):
                results[index] = completion
            if on_done is not None:
                on_done(len(batch))
        return [r for r in results if r is not None]

    def _generate_batch(
        self, prompts: list[list[int]], config: GenerationConfig, stop: list[str] | None, constraint: Constraint | None
    ):
        width = max(len(p) for p in prompts)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=self.device)
        attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.device)
        output = self.model.generate(
            input_ids=input_ids,
            attention_mask=attention,
            generation_config=config,
            stopping_criteria=[StopOnStrings(self.tokenizer, stop, width)] if stop else None,
            **(constraint.generate_kwargs(width) if constraint else {}),
        )
        for prompt, row in zip(prompts, output[:, width:].tolist(), strict=True):
            yield self._completion(prompt, row, stop)

    def _completion(self, prompt: list[int], row: list[int], stop: list[str] | None) -> Completion:
        eos = self.tokenizer.eos_token_id
        pad = self.tokenizer.pad_token_id
        finish = "length"
        if eos in row:
            row = row[: row.index(eos)]
            finish = "stop"
        while row and row[-1] == pad:  # rows that finished early are padded to the batch's length
            row = row[:-1]
            finish = "stop"
        text = self.tokenizer.decode(row, skip_special_tokens=True)
        cuts = [text.find(s) for s in stop or [] if s in text]
        if cuts:
            text, finish = text[: min(cuts)], "stop"
        return Completion(text=text, prompt_tokens=len(prompt), completion_tokens=len(row), finish_reason=finish)

    def stream(
        self,
        messages: list[dict[str, Any]],
        *,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float = 1.0,
        stop: list[str] | None = None,
        seed: int | None = None,
        tools: list[dict[str, Any]] | None = None,
        constraint: Constraint | None = None,
    ) -> Iterator[str]:
        """Text deltas of one reply as they are generated (for server-sent events)."""
        if seed is not None:
            torch.manual_seed(seed)
        prompt = self.prompt_ids(messages, tools)
        config = self._generation_config(max_new_tokens, temperature, top_p)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        inputs = torch.tensor([prompt], device=self.device)
        constrain = constraint.generate_kwargs(inputs.shape[1]) if constraint else {}

        def run() -> None:
            with torch.inference_mode():
                self.model.generate(
                    input_ids=inputs,
                    attention_mask=torch.ones_like(inputs),
                    generation_config=config,
                    stopping_criteria=[StopOnStrings(self.tokenizer, stop, inputs.shape[1])] if stop else None,
                    streamer=streamer,
                    **constrain,
                )

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        emitted = ""
        for delta in streamer:
            emitted += delta
            if stop and any(s in emitted for s in stop):
                cut = min(emitted.find(s) for s in stop if s in emitted)
                tail = emitted[:cut][len(emitted) - len(delta) :]
                if tail:
                    yield tail
                break
            if delta:
                yield delta
        thread.join()
