"""Batched generation (`ftlab.infer.batching`) on the tiny random Llama with random-init adapters: a batch that
mixes the base, LoRA adapters and a DoRA adapter gives each row what it gets alone; budgets, stop strings and
cancellation hold per row."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from ftlab.infer.batching import Job, Scheduler, SharedBase, mixable

PROMPTS = ["hi", "hello there", "a long question about the weather tomorrow", "what is two plus two?"]


@pytest.fixture(scope="module")
def base(tiny_model_dir: Path) -> SharedBase:
    return SharedBase(str(tiny_model_dir), max_adapters=4)


@pytest.fixture(scope="module")
def scheduler() -> Scheduler:
    return Scheduler(max_batch=16, wait_ms=50)


def prompt(base: SharedBase, text: str) -> list[int]:
    return list(base.tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                                   tokenize=True, return_dict=False))  # fmt: skip


def run(scheduler: Scheduler, jobs: list[Job]) -> list[list]:
    """Submit `jobs` at once; every job's completions (by choice) and the text its deltas added up to."""
    results: list[dict] = [{"completions": {}, "text": {}} for _ in jobs]
    finished = threading.Semaphore(0)
    for job, result in zip(jobs, results, strict=True):

        def sink(event, job=job, result=result) -> None:
            assert event.error is None, event.error
            result["text"][event.index] = result["text"].get(event.index, "") + event.text
            if event.completion is not None:
                result["completions"][event.index] = event.completion
                if len(result["completions"]) == job.n:
                    finished.release()

        job.on_event = sink
    for job in jobs:
        scheduler.submit(job)
    for _ in jobs:
        assert finished.acquire(timeout=300)
    for result in results:  # the streamed deltas add up to the final text
        assert all(result["text"][i] == c.text for i, c in result["completions"].items())
    return [[r["completions"][i] for i in range(len(r["completions"]))] for r in results]


def test_a_mixed_adapter_batch_equals_each_adapter_alone(base: SharedBase, scheduler: Scheduler, tiny_adapters):
    lora_a, lora_b, dora = tiny_adapters
    specs = [(None, 0), (lora_a, 1), (lora_b, 2), (lora_a, 3), (None, 2), (dora, 0), (dora, 1), (lora_b, 0)]

    def jobs() -> list[Job]:
        return [Job(base, prompt(base, PROMPTS[p]), 10, adapter=a, mixable=mixable(a)) for a, p in specs]

    batches_before = scheduler.stats["batches"]
    together = [c[0] for c in run(scheduler, jobs())]
    assert scheduler.stats["batches"] - batches_before == 2  # LoRA and base rows in one batch, DoRA rows in another
    alone = [run(scheduler, [job])[0][0] for job in jobs()]
    assert [c.text for c in together] == [c.text for c in alone]
    assert [c.completion_tokens for c in together] == [c.completion_tokens for c in alone]
    # The adapters do change the replies: otherwise this test could not tell them apart.
    assert len({c.text for c, (_, p) in zip(together, specs, strict=True) if p == 0}) == 3
    assert len(base.adapters) == 3


def test_budgets_stop_strings_and_n_hold_per_row(base: SharedBase, scheduler: Scheduler):
    ids = prompt(base, PROMPTS[2])
    [free] = run(scheduler, [Job(base, ids, 12)])[0]
    assert free.finish_reason == "length" and free.completion_tokens == 12
    stop = free.text[len(free.text) // 2 :][:3]  # a stop string that occurs in the free reply
    short, stopped, several = run(scheduler, [Job(base, ids, 3), Job(base, ids, 12, stop=[stop]),
                                              Job(base, ids, 5, n=3)])  # fmt: skip
    assert short[0].completion_tokens == 3 and short[0].finish_reason == "length"
    assert stopped[0].finish_reason == "stop" and stop not in stopped[0].text
    assert free.text.startswith(stopped[0].text) and len(stopped[0].text) == free.text.find(stop)
    assert [c.text for c in several] == [several[0].text] * 3 and several[0].completion_tokens == 5


def test_sampling_with_a_seed_is_reproducible_and_runs_alone(base: SharedBase, scheduler: Scheduler):
    ids = prompt(base, PROMPTS[1])

    def sampled() -> Job:
        return Job(base, ids, 8, n=2, temperature=1.0, seed=7)

    assert sampled().batch_key() is None and Job(base, ids, 8).batch_key() is not None
    first, second = run(scheduler, [sampled(), sampled()])
    assert [c.text for c in first] == [c.text for c in second]


def test_a_cancelled_job_stops_at_the_next_step(base: SharedBase, scheduler: Scheduler):
    job = Job(base, prompt(base, PROMPTS[0]), 1500)
    seen = threading.Event()
    job.on_event = lambda event: seen.set()
    cancelled = scheduler.stats["cancelled"]
    scheduler.submit(job)
    assert seen.wait(300)
    job.cancel()
    [after] = run(scheduler, [Job(base, prompt(base, PROMPTS[1]), 4)])
    assert after[0].completion_tokens == 4
    assert scheduler.stats["cancelled"] == cancelled + 1


def test_requests_held_to_one_json_schema_share_a_batch_and_each_row_keeps_its_grammar(
    base: SharedBase, scheduler: Scheduler, tiny_adapters
):
    pytest.importorskip("xgrammar")
    import json

    from ftlab.infer.constrained import json_schema_constraint, label_constraint

    schema = {"type": "array", "items": {"type": "string", "maxLength": 6}, "maxItems": 3}
    vocab = base.model.config.vocab_size

    def held(text: str, adapter: Path | None) -> Job:
        constraint = json_schema_constraint(base.tokenizer, schema, vocab_size=vocab)
        return Job(base, prompt(base, text), 40, adapter=adapter, constraint=constraint)

    specs = [(PROMPTS[0], None), (PROMPTS[1], tiny_adapters[0]), (PROMPTS[2], tiny_adapters[1]), (PROMPTS[3], None)]
    jobs = [held(text, adapter) for text, adapter in specs]
    assert len({job.batch_key() for job in jobs}) == 1 and jobs[0].batch_key() is not None
    other = json_schema_constraint(base.tokenizer, {**schema, "maxItems": 2}, vocab_size=vocab)
    assert Job(base, jobs[0].prompt, 40, constraint=other).batch_key() != jobs[0].batch_key()
    labels = label_constraint(base.tokenizer, ["yes", "no"])
    assert Job(base, jobs[0].prompt, 40, constraint=labels).batch_key() is None  # a label trie runs alone
    together = run(scheduler, jobs)
    alone = [run(scheduler, [held(text, adapter)])[0] for text, adapter in specs]
    assert [[c.text for c in r] for r in together] == [[c.text for c in r] for r in alone]
    assert all(len(json.loads(r[0].text)) <= 3 for r in together if r[0].finish_reason == "stop")
