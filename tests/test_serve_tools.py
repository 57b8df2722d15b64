"""Tool calling through `ftlab serve` with the official `openai` client, LangChain and instructor, on the tiny
random Llama: constrained decoding makes even a random model's calls parse and fit their schema. Also the
`x-request-id` header every response carries."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Literal

import httpx
import openai
import pytest
from pydantic import BaseModel, Field
from serve_helpers import Server, wait_for

from ftlab.data.schema import message_dicts, read_examples
from ftlab.data.tools import apply_template
from ftlab.models import load_tokenizer


class Reservation(BaseModel):
    """Hold a bike at a station."""

    station_id: str = Field(pattern=r"^ST-[0-9]{3}$")
    bike_type: Literal["electric", "classic"]
    hold_minutes: int = Field(ge=5, le=15)


class Search(BaseModel):
    """Find bike stations near a place."""

    near: str = Field(max_length=12)
    electric: bool


SCHEMAS = {"reserve_bike": Reservation, "find_stations": Search}
TOOLS = [{"type": "function", "function": {"name": name, "description": model.__doc__,
                                           "parameters": model.model_json_schema()}}
         for name, model in SCHEMAS.items()]  # fmt: skip
ASK = [{"role": "user", "content": "Hold an e-bike at ST-214 please"}]
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "tools"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    server = Server(tmp_path_factory.mktemp("serve-tools")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    return server.client()


def valid_call(call) -> BaseModel:
    """The call's arguments as an instance of its tool's model (pydantic raises when they do not fit)."""
    assert call.type == "function" and call.id.startswith("call_")
    return SCHEMAS[call.function.name].model_validate_json(call.function.arguments)


def test_required_tool_choice_returns_calls_that_fit_their_schema(client: openai.OpenAI, tiny_model_dir: Path):
    reply = client.chat.completions.create(model=str(tiny_model_dir), messages=ASK, tools=TOOLS, max_tokens=80,
                                           tool_choice="required", parallel_tool_calls=False, temperature=0)
    (choice,) = reply.choices
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls
    valid_call(call)

    several = client.chat.completions.create(model=str(tiny_model_dir), messages=ASK, tools=TOOLS, max_tokens=160,
                                             tool_choice="required", n=3, temperature=1.0, seed=1)
    for choice in several.choices:  # parallel calls allowed: each one parsed is whole and valid
        assert choice.message.tool_calls and all(valid_call(call) for call in choice.message.tool_calls)


def test_a_named_tool_choice_calls_that_tool(client: openai.OpenAI, tiny_model_dir: Path) -> None:
    reply = client.chat.completions.create(
        model=str(tiny_model_dir), messages=ASK, tools=TOOLS, max_tokens=80, n=2, temperature=1.0, seed=3,
        tool_choice={"type": "function", "function": {"name": "find_stations"}},
    )  # fmt: skip
    calls = [call for choice in reply.choices for call in choice.message.tool_calls]
    assert all(choice.finish_reason == "tool_calls" for choice in reply.choices)  # one call each, then the end
    assert len(calls) == 2 and all(c.function.name == "find_stations" and valid_call(c) for c in calls)

    legacy = client.chat.completions.create(  # the legacy spelling answers in the legacy field
        model=str(tiny_model_dir), messages=ASK, max_tokens=80, temperature=0,
        functions=[t["function"] for t in TOOLS], function_call={"name": "reserve_bike"},
    )  # fmt: skip
    (choice,) = legacy.choices
    assert choice.finish_reason == "function_call" and choice.message.tool_calls is None
    assert choice.message.function_call.name == "reserve_bike"
    Reservation.model_validate_json(choice.message.function_call.arguments)


def test_a_streamed_call_reassembles_to_the_whole_one(client: openai.OpenAI, tiny_model_dir: Path) -> None:
    request = {"model": str(tiny_model_dir), "messages": ASK, "tools": TOOLS, "max_tokens": 80, "temperature": 0,
               "tool_choice": "required", "parallel_tool_calls": False}
    whole = client.chat.completions.create(**request).choices[0].message.tool_calls[0]
    chunks = [c for c in client.chat.completions.create(**request, stream=True) if c.choices]
    deltas = [call for c in chunks for call in c.choices[0].delta.tool_calls or []]
    first, rest = deltas[0], deltas[1:]
    assert first.id.startswith("call_") and first.type == "function" and first.function.name == whole.function.name
    assert all(d.index == 0 and d.id is None and d.function.name is None for d in rest)  # then argument fragments
    assert first.function.arguments + "".join(d.function.arguments for d in rest) == whole.function.arguments
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert not "".join(c.choices[0].delta.content or "" for c in chunks)


def test_tool_calls_and_results_in_the_history_reach_the_prompt(client: openai.OpenAI, tiny_model_dir: Path):
    call = {"id": "call_abc", "type": "function",
            "function": {"name": "reserve_bike", "arguments": '{"station_id": "ST-214", "bike_type": "electric", '
                                                              '"hold_minutes": 10}'}}  # fmt: skip
    history = [*ASK, {"role": "assistant", "content": None, "tool_calls": [call]},
               {"role": "tool", "tool_call_id": "call_abc", "content": '{"reservation": "RS-1", "until": "18:42"}'},
               {"role": "user", "content": "Thanks! Until when?"}]  # fmt: skip
    reply = client.chat.completions.create(model=str(tiny_model_dir), messages=history, tools=TOOLS, max_tokens=4,
                                           tool_choice="none", temperature=0)  # fmt: skip
    assert reply.choices[0].message.tool_calls is None
    tokenizer = load_tokenizer(str(tiny_model_dir))
    prompt = apply_template(tokenizer, history, TOOLS, generation_prompt=True)
    assert '{"name": "reserve_bike", "arguments": {"station_id": "ST-214"' in prompt
    assert '<tool_response id="call_abc" name="reserve_bike">\n{"reservation": "RS-1"' in prompt
    assert json.dumps(TOOLS[1]) in prompt
    assert reply.usage.prompt_tokens == len(tokenizer(prompt, add_special_tokens=False)["input_ids"])


def test_a_job_on_the_tool_set_answers_with_calls_by_the_name_users_build(client: openai.OpenAI, tiny_model_dir: Path,
                                                                           tmp_path: Path) -> None:
    """The function-calling example trains as a fine-tuning job, and the tuned model, named as OpenAI users build
    names (`ft:{base}:personal::{id}`), answers a test conversation with calls that validate against its tools."""
    spec = importlib.util.spec_from_file_location("make_tools", EXAMPLE / "make_tools.py")
    make_tools = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_tools)
    subset = tmp_path / "train.jsonl"  # 12 of the 60 conversations: each is ~850 tokens, most of them the tools
    subset.write_text("".join((EXAMPLE / "train.jsonl").read_text(encoding="utf-8").splitlines(True)[:12]),
                      encoding="utf-8")  # fmt: skip
    with open(subset, "rb") as training:
        uploaded = client.files.create(file=training, purpose="fine-tune")
    job = client.fine_tuning.jobs.create(training_file=uploaded.id, model=str(tiny_model_dir),
                                         hyperparameters={"n_epochs": 1, "batch_size": 8})  # fmt: skip
    job = wait_for(lambda: (done := client.fine_tuning.jobs.retrieve(job.id)).status in ("succeeded", "failed")
                   and done)  # fmt: skip
    assert job.status == "succeeded", job.error
    built = f"ft:{tiny_model_dir.name}:personal::{job.id.removeprefix('ftjob-')[:8]}"
    example = read_examples(EXAMPLE / "test.jsonl")[0]
    reply = client.chat.completions.create(model=built, messages=message_dicts(example.prompt_messages()),
                                           tools=example.tools, tool_choice="required", parallel_tool_calls=False,
                                           max_tokens=120, temperature=0)  # fmt: skip
    (choice,) = reply.choices
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls
    for call in choice.message.tool_calls:
        make_tools.MODELS[call.function.name].model_validate_json(call.function.arguments)


def _chat(**kwargs) -> dict:
    return {"messages": ASK, "max_tokens": 8, **kwargs}


UNSUPPORTED = [
    ("allowed-tools", _chat(tools=TOOLS, tool_choice={"type": "allowed_tools", "allowed_tools": {
        "mode": "auto", "tools": [{"type": "function", "function": {"name": "find_stations"}}]}}),
     "tool_choice", "not supported"),
    ("custom-tool", _chat(tools=[{"type": "custom", "custom": {"name": "sql"}}]), "tools.0.type", "function"),
    ("choice-without-tools", _chat(tool_choice="required"), "tool_choice", "only allowed when tools"),
    ("choice-function-not-an-object", _chat(tools=TOOLS, tool_choice={"type": "function", "function": "fly"}),
     "tool_choice", "not supported"),
    ("legacy-call-without-name", _chat(messages=[*ASK, {"role": "assistant", "function_call": {"arguments": "{}"}},
                                                 {"role": "function", "name": "x", "content": "ok"}]),
     "messages.1.function_call.name", "required"),
    ("unknown-named-tool", _chat(tools=TOOLS, tool_choice={"type": "function", "function": {"name": "fly"}}),
     "tool_choice", "'fly'"),
    ("bad-function-name", _chat(tools=[{"type": "function", "function": {"name": "find stations"}}]),
     "tools.0.function.name", "pattern"),
    ("tools-and-response-format", _chat(tools=TOOLS, tool_choice="required", response_format={"type": "json_object"}),
     "response_format", "tool calls"),
    ("tools-and-labels", _chat(tools=TOOLS, extra_body={"labels": ["a", "b"]}), "labels", "tool calls"),
    ("tools-and-functions", _chat(tools=TOOLS, functions=[TOOLS[0]["function"]]), "functions", "not both"),
    ("uncompilable-schema", _chat(tools=[{"type": "function", "function": {"name": "x", "parameters": {
        "type": "nonsense"}}}]), "tools", "cannot be compiled"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "param", "words"), [c[1:] for c in UNSUPPORTED], ids=[c[0] for c in UNSUPPORTED])
def test_what_the_server_cannot_do_is_a_400(client, tiny_model_dir: Path, body: dict, param: str, words: str):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=str(tiny_model_dir), **body)
    error = caught.value.body
    assert error["param"] == param and words in error["message"], error
    assert caught.value.request_id  # errors carry x-request-id too


def test_langchain_bind_tools_and_structured_output(server: Server, tiny_model_dir: Path) -> None:
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(model=str(tiny_model_dir), base_url=server.base_url, api_key="local", temperature=0,
                     max_tokens=80, max_retries=0)  # fmt: skip
    message = llm.bind_tools([Reservation], tool_choice="required").invoke("Hold an e-bike at ST-214")
    (call,) = message.tool_calls[:1]
    assert call["name"] == "Reservation" and Reservation.model_validate(call["args"])
    assert isinstance(llm.with_structured_output(Search, method="function_calling").invoke("Bikes near the Zoo?"),
                      Search)  # fmt: skip


def test_instructor_default_mode_returns_a_model_instance(client: openai.OpenAI, tiny_model_dir: Path) -> None:
    instructor = pytest.importorskip(
        "instructor", reason="not a dev dependency: installing instructor 1.17 downgrades openai (3.57 -> 3.3); "
        "`pip install --no-deps --target DIR instructor` and PYTHONPATH=DIR run this test")  # fmt: skip
    patched = instructor.from_openai(client)  # default mode: TOOLS, a named tool_choice
    result = patched.chat.completions.create(model=str(tiny_model_dir), messages=ASK, response_model=Reservation,
                                             max_tokens=80, temperature=0, max_retries=0)  # fmt: skip
    assert isinstance(result, Reservation)


def test_every_response_carries_a_request_id(server: Server, client: openai.OpenAI, tiny_model_dir: Path) -> None:
    api = f"http://127.0.0.1:{server.port}/v1"
    listed = httpx.get(f"{api}/models")
    assert listed.status_code == 200 and listed.headers["x-request-id"].startswith("req_")
    assert httpx.get(f"{api}/models").headers["x-request-id"] != listed.headers["x-request-id"]
    echoed = httpx.get(f"{api}/models", headers={"x-request-id": "client-trace-42"})
    assert echoed.headers["x-request-id"] == "client-trace-42"
    assert httpx.get(f"{api}/models", headers={"x-request-id": "a b\tc"}).headers["x-request-id"].startswith("req_")
    missing = httpx.get(f"{api}/fine_tuning/jobs/ftjob-nope")
    assert missing.status_code == 404 and missing.headers["x-request-id"].startswith("req_")
    with httpx.stream("POST", f"{api}/chat/completions", json={"model": str(tiny_model_dir), "messages": ASK,
                      "max_tokens": 2, "stream": True}, timeout=300) as streamed:  # fmt: skip
        assert streamed.status_code == 200 and streamed.headers["x-request-id"].startswith("req_")
        streamed.read()
    reply = client.chat.completions.create(model=str(tiny_model_dir), messages=ASK, max_tokens=2)
    assert reply._request_id.startswith("req_")  # what openai-python logs


def test_an_unexpected_error_carries_the_request_id_too() -> None:
    from fastapi.testclient import TestClient

    from ftlab.serve.app import Settings, create_app

    app = create_app(Settings())

    def boom() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/boom", boom)
    response = TestClient(app, raise_server_exceptions=False).get("/boom", headers={"x-request-id": "trace-7"})
    assert response.status_code == 500 and "a bug" in response.json()["error"]["message"]
    assert response.headers["x-request-id"] == "trace-7"
