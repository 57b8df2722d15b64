"""Fuzzing with OpenAI's own contract: schemathesis generates requests from OpenAI's published OpenAPI spec, cut to
the operations ftlab serves (tests/openapi/openai-subset.yaml, with its source commit), and sends them to a real
`ftlab serve`. No request may get a 5xx, and every response of a status the spec documents must match its
schema. A few examples per operation (bounded for CI); the server holds a file and a finished job, so ids that
exist are there to be found."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is in the dev extra")

from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import not_a_server_error, response_schema_conformance  # noqa: E402
from serve_helpers import EMOJI, Server, chat_rows, wait_for, write_jsonl  # noqa: E402

SPEC = Path(__file__).with_name("openapi") / "openai-subset.yaml"
EXAMPLES = int(os.environ.get("FTLAB_FUZZ_EXAMPLES", "15"))  # per operation: reaches the validation paths in CI
CHAT = "/chat/completions"  # the chat path's own tests and its helper own it; fuzzed here only for its 5xx

schema = schemathesis.openapi.from_path(SPEC)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("fuzz-home")
    server = Server(home, "--max-upload-mb", "1").start()
    client = server.client()
    train = write_jsonl(home / "train.jsonl", chat_rows(EMOJI[:10]))
    with open(train, "rb") as handle:
        file_id = client.files.create(file=handle, purpose="fine-tune").id
    job = client.fine_tuning.jobs.create(training_file=file_id, model=str(tiny_model_dir),
                                         hyperparameters={"n_epochs": 1, "batch_size": 5})  # fmt: skip
    wait_for(lambda: client.fine_tuning.jobs.retrieve(job.id).status in ("succeeded", "failed"))
    yield server
    server.stop()


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_openai_contract(case, server: Server) -> None:
    checks = [not_a_server_error] if case.operation.path == CHAT else [not_a_server_error, response_schema_conformance]
    case.call_and_validate(base_url=server.base_url, headers={"Authorization": "Bearer fuzz"}, checks=checks,
                           timeout=120)  # fmt: skip
