"""Many chat requests answered at once: dynamic micro-batching on shared base models with adapters mixed per row.

One generation thread (`Scheduler`) takes the requests that are waiting, groups the compatible ones and runs
one left-padded `generate` for them; a request that arrives while a batch runs joins the next one. Each row has
its own prompt, token budget, stop strings and adapter, and ends on its own: a `Rows` stopping criterion,
called by transformers after every step, reads each row's new token, sends the text it adds to its request,
and stops the row at end-of-turn, at its budget, at a stop string, or when its client has gone away.

Why micro-batching and not transformers' continuous batching (`generate_batch`, paged attention), measured on
the bundled model in one process with `benchmarks/serve_batching.py` (16 requests x 32 greedy tokens, bf16,
2-core Xeon shared with other work, mean of 2 alternating rounds):

    one request at a time                    1.8 tok/s   1.00x
    micro-batch, one generate of 16          8.5 tok/s   4.65x
    micro-batch, two generates of 8          5.0 tok/s   2.72x
    continuous batching (generate_batch)     2.8 tok/s   1.56x

(The machine ran at a load of 6-12 on 2 cores, so absolute figures are low; the order held in both rounds.)

Continuous batching also cannot do what a served request needs: its model runner packs every request into one
row of tokens, so peft's per-row `adapter_names` (different fine-tuned models in one batch) cannot apply, and
neither can a per-request logits processor (labels, JSON schema) or a per-request seed.

What shares a batch: requests for the same base model with the same sampling (greedy; or the same temperature
and top_p without a seed), whatever their adapters, prompts, budgets, stop strings and `n`. A request with a
constraint (labels, tool calls) or with a seed and sampling runs alone (its `n` rows together), so its logits
processor and its random stream are its own; requests held to the same JSON schema (`response_format`, or a
fine-tuned model's learned reply schema) share a batch, each row with its own grammar matcher.

Adapters are loaded onto one peft model per base, unmerged, in a bounded LRU (`max_adapters`): ten fine-tuned
models cost one base model's memory, and a batch may mix them (`adapter_names=`). Measured at batch 8 with
random-init r16 adapters on all linear layers (same benchmark, `--only adapters`):

    base (adapters disabled)                 3.4 tok/s   1.00x
    one adapter, unmerged                    3.7 tok/s   1.08x
    4 adapters mixed (adapter_names)         4.5 tok/s   1.32x
    one adapter merged into a copy           7.6 tok/s   2.25x

(Same load; the base-through-peft figure is below what a plain base gives, so only the last line's order is
clear: on a quiet machine MEASUREMENTS.md has unmerged 107 vs merged 165 tok/s, 1.54x.)

No merged fast path, although a merged copy is faster for a single hot adapter: (1) a reply would depend on
its batch companions, since a bf16 merged copy rounds the adapter's delta differently from the unmerged path
a mixed batch takes, so one greedy request could answer two ways depending on load; (2) each merged copy costs
a whole base's memory, undoing the bound above; (3) a deployment with one hot model gets base speed from
`ftlab export --format merged`, or from vLLM (`ftlab serve --engine vllm`), whose LoRA kernels make
adapters nearly free.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from transformers import GenerationConfig, StoppingCriteria

from ftlab.infer.backend import Completion
from ftlab.infer.generate import inference_precision
from ftlab.models import default_device, load_model, load_tokenizer

if TYPE_CHECKING:
    from ftlab.infer.constrained import Constraint

log = logging.getLogger("ftlab.infer.batching")

NO_ADAPTER = "__base__"  # peft's name for "the base model alone" in a mixed-adapter batch


class Overloaded(RuntimeError):
    """More requests are waiting than the scheduler accepts; try again after `retry_after` seconds."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class Event:
    """What a request hears from the generation thread: a text delta, a finished choice, or a failure."""

    index: int  # the choice (0 … n-1)
    text: str = ""
    completion: Completion | None = None
    error: str | None = None


@dataclass
class Job:
    """One chat request: `n` choices of one prompt, with its settings. `on_event` runs on the generation thread
    and must not block (the service hands each event to its event loop)."""

    base: SharedBase
    prompt: list[int]
    max_new_tokens: int
    n: int = 1
    adapter: Path | None = None
    temperature: float = 0.0
    top_p: float = 1.0
    stop: list[str] | None = None
    seed: int | None = None
    constraint: Constraint | None = None
    on_event: Callable[[Event], None] = lambda event: None
    cancelled: threading.Event = field(default_factory=threading.Event)
    mixable: bool = True  # whether the adapter may share a batch with other adapters (see `mixable`)

    def cancel(self) -> None:
        """Stop this request's rows at the next step (or drop it from the queue): its client has gone."""
        self.cancelled.set()

    @property
    def sampling(self) -> tuple[bool, float, float]:
        sample = self.temperature > 0
        return (sample, self.temperature, self.top_p) if sample else (False, 0.0, 1.0)

    def batch_key(self) -> tuple | None:
        """Jobs with equal keys can share a `generate` call; None: this job runs alone."""
        shared = self.constraint.share_key if self.constraint is not None else None
        if (self.constraint is not None and shared is None) or (self.sampling[0] and self.seed is not None):
            return None
        return (id(self.base), *self.sampling, None if self.mixable else self.adapter, shared)


def mixable(adapter: Path | None) -> bool:
    """Whether peft can run this adapter beside others in one batch: LoRA can, DoRA cannot (peft 0.21 refuses
    `adapter_names` with DoRA), so a DoRA adapter's requests are batched with requests for it alone."""
    if adapter is None:
        return True
    return not json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8")).get("use_dora", False)


class Row:
    """One generated choice: its tokens, the text sent so far, and how it ended."""

    def __init__(self, job: Job, index: int, tokenizer) -> None:
        self.job, self.index, self.tokenizer = job, index, tokenizer
        self.tokens: list[int] = []
        self.text, self.sent = "", 0
        self.finish: str | None = None

    @property
    def done(self) -> bool:
        return self.finish is not None

    def add(self, token: int) -> None:
        """Take the row's next token: send the text it completes, or end the row."""
        if token == self.tokenizer.eos_token_id:
            return self.close("stop")
        self.tokens.append(token)
        text = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
        stops = self.job.stop or []
        cuts = [text.find(s) for s in stops if s in text]
        if cuts:
            self.text = text[: min(cuts)]
            return self.close("stop")
        self.text = text
        if len(self.tokens) >= self.job.max_new_tokens:
            return self.close("length")
        # Hold back a character whose bytes are not all here yet, and an end that may still become a stop string.
        ready = text.rstrip("\ufffd")
        held = max((k for s in stops for k in range(1, len(s)) if ready.endswith(s[:k])), default=0)
        safe = len(ready) - held
        if safe > self.sent:
            self.job.on_event(Event(self.index, text=text[self.sent : safe]))
            self.sent = safe

    def close(self, finish: str) -> None:
        self.finish = finish
        if self.job.cancelled.is_set():
            return
        if len(self.text) > self.sent:
            self.job.on_event(Event(self.index, text=self.text[self.sent :]))
            self.sent = len(self.text)
        completion = Completion(self.text, len(self.job.prompt), len(self.tokens), finish)
        self.job.on_event(Event(self.index, completion=completion))


class Rows(StoppingCriteria):
    """Every row's bookkeeping for one `generate` call; transformers calls it after each step with the ids so far.

    A row that is done reads as finished, so transformers pads it from then on and stops when all are done.
    """

    def __init__(self, rows: list[Row], scheduler: Scheduler) -> None:
        self.rows, self.scheduler = rows, scheduler

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        for row, token in zip(self.rows, input_ids[:, -1].tolist(), strict=True):
            if row.done:
                continue
            if row.job.cancelled.is_set():
                row.finish = "cancelled"
                self.scheduler.stats["cancelled"] += 1
            else:
                row.add(token)
        return torch.tensor([row.done for row in self.rows], device=input_ids.device)


class SharedBase:
    """One base model in memory and the adapters loaded onto it (one peft model, adapters unmerged, LRU-bounded).

    Adapters are loaded and evicted only by the generation thread, between batches.
    """

    def __init__(self, model: str, revision: str | None = None, *, tokenizer=None, max_adapters: int = 16,
                 device: torch.device | None = None) -> None:  # fmt: skip
        self.name, self.revision, self.max_adapters = model, revision, max(1, max_adapters)
        self.device = device or default_device()
        self.tokenizer = tokenizer or load_tokenizer(model, revision)
        self.model = load_model(model, self.device, inference_precision(self.device), revision)
        self.peft = None  # the peft model around `model`, once an adapter is loaded
        self.adapters: OrderedDict[Path, str] = OrderedDict()  # adapter folder -> its name inside the peft model
        self._loaded = 0

    def ensure_adapters(self, folders: set[Path]) -> None:
        """Load the adapters a batch needs (evicting the least recently used others beyond `max_adapters`)."""
        from peft import PeftModel

        for folder in folders:
            if folder in self.adapters:
                self.adapters.move_to_end(folder)
                continue
            name = f"adapter{self._loaded}"
            self._loaded += 1
            if self.peft is None:
                self.peft = PeftModel.from_pretrained(self.model, str(folder), adapter_name=name)
            else:
                self.peft.load_adapter(str(folder), adapter_name=name)
            self.peft.eval()
            self.adapters[folder] = name
            log.info("loaded adapter %s onto %s as %s", folder, self.name, name)
        while len(self.adapters) > max(self.max_adapters, len(folders)):
            folder, name = next((f, n) for f, n in self.adapters.items() if f not in folders)
            del self.adapters[folder]
            self.peft.delete_adapter(name)

    @torch.inference_mode()
    def generate(self, jobs: list[Job], rows: list[Row], criteria: Rows) -> None:
        """One left-padded `generate` for every row of `jobs` (they share sampling settings)."""
        first = jobs[0]
        prompts = [row.job.prompt for row in rows]
        width = max(len(p) for p in prompts)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=self.device)
        attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.device)
        sample, temperature, top_p = first.sampling
        config = GenerationConfig(
            max_new_tokens=max(job.max_new_tokens for job in jobs), do_sample=sample,
            temperature=temperature if sample else None, top_p=top_p if sample else None, top_k=None,
            eos_token_id=self.tokenizer.eos_token_id, pad_token_id=pad,
        )  # fmt: skip
        kwargs = first.constraint.generate_kwargs(width) if first.constraint is not None else {}
        model = self.model
        if self.peft is not None and not first.mixable:  # one DoRA adapter for the whole batch
            model = self.peft
            model.set_adapter(self.adapters[first.adapter])
        elif self.peft is not None:
            model = self.peft
            kwargs["adapter_names"] = [self.adapters[r.job.adapter] if r.job.adapter else NO_ADAPTER for r in rows]
        if first.seed is not None and sample:
            torch.manual_seed(first.seed)
        model.generate(input_ids=input_ids, attention_mask=attention, generation_config=config,
                       stopping_criteria=[criteria], **kwargs)  # fmt: skip


class Scheduler:
    """The generation thread and its queue: bounded, first come first served, compatible requests batched.

    `max_batch`: rows per `generate` call; `max_queued`: rows waiting before `submit` refuses (`Overloaded`);
    `wait_ms`: how long an idle scheduler waits for companions of a first request.
    """

    def __init__(self, *, max_batch: int = 16, max_queued: int = 256, wait_ms: float = 10.0) -> None:
        self.max_batch, self.max_queued, self.wait_s = max(1, max_batch), max(1, max_queued), wait_ms / 1000
        self._queue: list[Job] = []
        self._cv = threading.Condition()
        self._batch_seconds = 1.0  # a running average, for Retry-After
        self.stats = {"batches": 0, "rows": 0, "largest_batch": 0, "running": 0, "cancelled": 0}
        self._thread = threading.Thread(target=self._loop, name="ftlab-generate", daemon=True)
        self._thread.start()

    def queued_rows(self) -> int:
        with self._cv:
            return sum(job.n for job in self._queue if not job.cancelled.is_set())

    def check_capacity(self, n: int) -> None:
        """Raise `Overloaded` when `n` more rows would not fit in the queue."""
        queued = self.queued_rows()
        if queued + n > self.max_queued:
            batches = math.ceil((queued + n) / self.max_batch)
            retry = max(1, math.ceil(batches * self._batch_seconds))
            raise Overloaded(f"{queued} generations are waiting (this server queues at most {self.max_queued})",
                             retry)  # fmt: skip

    def submit(self, job: Job) -> None:
        with self._cv:
            self.check_capacity(job.n)
            self._queue.append(job)
            self._cv.notify()

    def _next_batch(self) -> list[Job]:
        with self._cv:
            while not self._queue:
                self._cv.wait()
            deadline = time.monotonic() + self.wait_s
            while sum(j.n for j in self._queue) < self.max_batch and (left := deadline - time.monotonic()) > 0:
                self._cv.wait(left)
            self._queue = [job for job in self._queue if not job.cancelled.is_set()]
            if not self._queue:
                return []
            batch, key = [self._queue[0]], self._queue[0].batch_key()
            if key is not None:
                rows = batch[0].n
                for job in self._queue[1:]:
                    if job.batch_key() == key and rows + job.n <= self.max_batch:
                        batch.append(job)
                        rows += job.n
            self._queue = [job for job in self._queue if all(job is not b for b in batch)]
            return batch

    def _loop(self) -> None:
        while True:
            jobs = self._next_batch()
            if not jobs:
                continue
            base = jobs[0].base
            rows = [Row(job, i, base.tokenizer) for job in jobs for i in range(job.n)]
            started = time.monotonic()
            self.stats.update(running=len(rows), batches=self.stats["batches"] + 1, rows=self.stats["rows"] + len(rows),
                              largest_batch=max(self.stats["largest_batch"], len(rows)))  # fmt: skip
            try:
                base.ensure_adapters({job.adapter for job in jobs if job.adapter is not None})
                base.generate(jobs, rows, Rows(rows, self))
                for row in rows:
                    if not row.done:  # generate ended (its budget) before the row saw its last step
                        row.close("length")
            except Exception as exc:  # a failed batch fails its requests, never the thread
                log.exception("generation failed")
                for job in jobs:
                    if not job.cancelled.is_set():
                        job.on_event(Event(-1, error=f"{type(exc).__name__}: {exc}"))
            finally:
                self.stats["running"] = 0
                self._batch_seconds = 0.8 * self._batch_seconds + 0.2 * (time.monotonic() - started)
