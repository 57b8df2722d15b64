"""`ftlab serve --engine vllm`: a fine-tuned model is registered with vLLM under its ft: name once its job
succeeds, chat completions (plain and streamed) go there through the official client, a deleted model is
unloaded, and what vLLM cannot serve is refused with the way out. vLLM itself needs a GPU: here a fake on
127.0.0.1 speaks its documented HTTP API; the test with the real one runs only where vLLM and a GPU are."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import subprocess
from pathlib import Path

import httpx
import openai
import pytest
from fake_vllm import FakeVLLM
from serve_helpers import EMOJI, REPO, Server, chat_rows, free_port, wait_for, write_jsonl

USER = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def fake_vllm():
    with FakeVLLM() as fake:
        yield fake


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, fake_vllm: FakeVLLM, tiny_model_dir: Path):
    home = tmp_path_factory.mktemp("serve-vllm-home")
    server = Server(home, "--engine", "vllm", "--vllm-url", fake_vllm.url, "--vllm-model", str(tiny_model_dir))
    yield server.start()
    server.stop()


def test_fine_tuned_models_are_registered_with_vllm_and_answered_there(
    server: Server, fake_vllm: FakeVLLM, tiny_model_dir: Path, tiny_adapters, tmp_path: Path
):
    client = server.client()
    training = client.files.create(file=write_jsonl(tmp_path / "t.jsonl", chat_rows(EMOJI[:10])).open("rb"),
                                   purpose="fine-tune")  # fmt: skip
    job = client.fine_tuning.jobs.create(training_file=training.id, model=str(tiny_model_dir),
                                         hyperparameters={"n_epochs": 1})  # fmt: skip
    job = wait_for(lambda: (j := client.fine_tuning.jobs.retrieve(job.id)).status in ("succeeded", "failed") and j)
    assert job.status == "succeeded", job.error
    name = job.fine_tuned_model
    wait_for(lambda: name in fake_vllm.adapters, timeout=60)  # registered as the job succeeded, before any request
    assert Path(fake_vllm.adapters[name]).name == "final"

    reply = client.chat.completions.create(model=name, messages=USER)
    assert reply.choices[0].message.content == f"{name} answers with final"
    streamed = client.chat.completions.create(model=name, messages=USER, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed).strip() == f"{name} answers with final"
    base = client.chat.completions.create(model=str(tiny_model_dir), messages=USER, max_tokens=5, temperature=0)
    assert base.choices[0].message.content == "served-base answers"  # vLLM's name for the base
    assert fake_vllm.requests[-1] == {"model": "served-base", "messages": USER, "max_tokens": 5, "temperature": 0}

    learned = {"type": "array", "items": {"type": "string"}, "maxItems": 3}  # as a run on JSON replies keeps it
    (Path(fake_vllm.adapters[name]) / "reply_schema.json").write_text(json.dumps(learned))
    client.chat.completions.create(model=name, messages=USER)
    assert fake_vllm.requests[-1]["response_format"] == {"type": "json_schema",
                                                        "json_schema": {"name": "reply", "schema": learned}}
    client.chat.completions.create(model=name, messages=USER, response_format={"type": "text"})
    assert fake_vllm.requests[-1]["response_format"] == {"type": "text"}

    with pytest.raises(openai.BadRequestError, match="labels"):
        client.chat.completions.create(model=name, messages=USER, extra_body={"labels": ["a", "b"]})
    tool = {"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}
    with pytest.raises(openai.BadRequestError, match="'tools' is not available with --engine vllm"):
        client.chat.completions.create(model=name, messages=USER, tools=[tool], tool_choice="required")
    client.models.delete(name)
    wait_for(lambda: name not in fake_vllm.adapters, timeout=60)


def test_what_vllm_cannot_serve_is_refused_with_the_way_out(server: Server, tiny_model_dir: Path,
                                                             bundled_model_dir: Path):  # fmt: skip
    client = server.client()
    with pytest.raises(openai.BadRequestError, match="serves .*tiny"):
        client.chat.completions.create(model=str(bundled_model_dir), messages=USER)


def test_dora_full_fine_tunes_and_other_bases_have_no_vllm_adapter(tiny_model_dir: Path, tiny_adapters):
    from ftlab.infer.refs import ModelRef
    from ftlab.serve.vllm import adapter_problem

    lora, _, dora = tiny_adapters
    ref = ModelRef("ft:tiny:personal::abcd1234", str(tiny_model_dir), "ft", adapter=lora)
    assert adapter_problem(ref, str(tiny_model_dir)) is None
    assert "fine-tuned from" in adapter_problem(ref, "smollm2-135m-instruct")
    ref.adapter = dora
    assert "ftlab export --format merged" in adapter_problem(ref, str(tiny_model_dir))
    ref.adapter = None
    assert "full fine-tune" in adapter_problem(ref, str(tiny_model_dir))


@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed (it needs a GPU)")
def test_a_real_vllm_serves_an_adapter_by_its_ft_name(tiny_model_dir: Path, tiny_adapters):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("vLLM needs a GPU and this machine has none")
    from ftlab.infer.refs import ModelRef
    from ftlab.serve.vllm import VLLMEngine, vllm_command, vllm_env

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    vllm = subprocess.Popen(vllm_command(str(tiny_model_dir), "tiny", port), env=vllm_env(), cwd=REPO)

    def healthy() -> bool:
        try:
            return httpx.get(f"{url}/health", timeout=5).status_code == 200
        except httpx.HTTPError:
            return vllm.poll() is not None  # stop waiting for a vLLM that died: the asserts below say so

    try:
        wait_for(healthy, timeout=900)
        ref = ModelRef("ft:tiny:personal::abcd1234", str(tiny_model_dir), "ft", adapter=tiny_adapters[0])
        asyncio.run(VLLMEngine(url, str(tiny_model_dir)).register(ref))
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="none")
        assert ref.name in [m.id for m in client.models.list().data]
        reply = client.chat.completions.create(model=ref.name, messages=USER, max_tokens=3, temperature=0)
        assert reply.usage.completion_tokens <= 3
    finally:
        vllm.terminate()
        vllm.wait(60)
