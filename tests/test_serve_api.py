"""The service end to end with the official `openai` client against a real `ftlab serve` on 127.0.0.1:
the issue's script on a tiny dataset and the tiny random model, curl's multipart upload, and bad inputs, each
answered with the right status and a message that names the problem."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import httpx
import openai
import pytest
from serve_helpers import EMOJI, Server, chat_rows, run_cli, wait_for, write_jsonl
from typer.testing import CliRunner

from ftlab.cli.main import app
from ftlab.config import TrainConfig
from ftlab.data.findings import Finding
from ftlab.data.schema import file_sha256

TERMINAL = ("succeeded", "failed", "cancelled")
MAX_UPLOAD_MB = 0.25


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("serve-home")
    mlflow_uri = f"sqlite:///{home / 'mlflow.db'}"  # the operator's MLflow: jobs may export to it
    server = Server(home, "--max-upload-mb", str(MAX_UPLOAD_MB), env={"MLFLOW_TRACKING_URI": mlflow_uri}).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    return server.client()


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("serve-data")
    return {
        "train": write_jsonl(folder / "train.jsonl", chat_rows(EMOJI[:10])),
        "valid": write_jsonl(folder / "valid.jsonl", chat_rows(EMOJI[10:])),
    }


@pytest.fixture(scope="module")
def uploaded(client: openai.OpenAI, data: dict[str, Path]) -> dict[str, str]:
    return {
        name: client.files.create(file=open(path, "rb"), purpose="fine-tune").id  # noqa: SIM115
        for name, path in data.items()
    }


def wait_terminal(client: openai.OpenAI, job_id: str):
    return wait_for(lambda: (job := client.fine_tuning.jobs.retrieve(job_id)).status in TERMINAL and job)


def test_the_hosted_fine_tuning_script_runs_unchanged(
    server: Server, client: openai.OpenAI, data: dict[str, Path], uploaded: dict[str, str], tiny_model_dir: Path
) -> None:
    f, v = uploaded["train"], uploaded["valid"]
    job = client.fine_tuning.jobs.create(
        training_file=f, validation_file=v, model=str(tiny_model_dir),
        hyperparameters={"n_epochs": 2, "batch_size": 5}, suffix="emoji_cls_0829", metadata={"task": "emoji"},
    )  # fmt: skip
    assert job.status == "queued" and job.object == "fine_tuning.job"
    auto = TrainConfig(n_epochs=2, batch_size=5).resolve(10).learning_rate_multiplier  # by AUTO_RULE, as the server's
    assert job.hyperparameters.n_epochs == 2 and job.hyperparameters.learning_rate_multiplier == auto
    assert job.method.type == "supervised" and job.method.supervised.hyperparameters.batch_size == 5
    assert client.fine_tuning.jobs.list(limit=1).data[0].id == job.id

    job = wait_terminal(client, job.id)
    assert job.status == "succeeded", job.error
    assert job.fine_tuned_model.startswith(f"ft:{tiny_model_dir.name}:personal:emoji_cls_0829:")
    assert job.trained_tokens > 0 and job.finished_at >= job.created_at and job.metadata == {"task": "emoji"}

    events = client.fine_tuning.jobs.list_events(fine_tuning_job_id=job.id, limit=100).data
    assert events[0].message == "The job has successfully completed"  # newest first
    assert events[-1].message == f"Validating training file: {f}"
    metrics = [e for e in events if e.type == "metrics"]
    assert [e.data["step"] for e in metrics] == [4, 3, 2, 1]
    assert metrics[-1].message.startswith("Step 1/4: training loss=")
    assert {"step", "train_loss", "train_mean_token_accuracy", "valid_loss", "total_steps"} <= metrics[0].data.keys()
    page = client.fine_tuning.jobs.list_events(fine_tuning_job_id=job.id, limit=3)
    assert page.has_more and [e.id for e in page.data] == [e.id for e in events[:3]]
    assert [e.id for e in page.get_next_page().data] == [e.id for e in events[3:6]]

    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert [c.step_number for c in checkpoints] == [4, 2]  # one per epoch, newest first
    assert checkpoints[0].fine_tuned_model_checkpoint == f"{job.fine_tuned_model}:ckpt-step-4"
    assert checkpoints[1].metrics.valid_loss is not None

    # The worker recorded the job's run through the same recorder as `ftlab train`: one metric row per step,
    # each checkpoint once, and the record completed when the job ended (code version, data hashes).
    dashboard = f"http://127.0.0.1:{server.port}/dashboard/api/runs"
    live = httpx.get(f"{dashboard}/{job.id}/metrics").json()
    assert live["status"] == "succeeded" and [m["step"] for m in live["metrics"]] == [1, 2, 3, 4]
    (run,) = httpx.get(f"{dashboard}?ids={live['id']}").json()["runs"]
    assert run["status"] == "succeeded" and run["source"] == "service" and run["code_version"]
    assert run["n_checkpoints"] == 2 and run["train_sha256"] == file_sha256(data["train"])

    (results,) = job.result_files
    csv = client.files.content(results).text
    assert csv.splitlines()[0].startswith("step,train_loss") and len(csv.splitlines()) == 5
    assert client.files.retrieve(results).purpose == "fine-tune-results"

    reply = client.chat.completions.create(
        model=job.fine_tuned_model, messages=[{"role": "user", "content": "I love it"}], max_tokens=6, temperature=0
    )
    assert reply.object == "chat.completion" and reply.choices[0].message.role == "assistant"
    assert reply.usage.completion_tokens <= 6 and reply.usage.prompt_tokens > 5
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    chunks = list(
        client.chat.completions.create(
            model=job.fine_tuned_model, messages=[{"role": "user", "content": "I love it"}], max_tokens=6,
            temperature=0, stream=True, stream_options={"include_usage": True},
        )
    )  # fmt: skip
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == reply.choices[0].message.content
    assert chunks[-1].usage.prompt_tokens == reply.usage.prompt_tokens
    assert chunks[-2].choices[0].finish_reason in ("stop", "length")

    two = client.chat.completions.create(
        model=checkpoints[1].fine_tuned_model_checkpoint, messages=[{"role": "user", "content": "Good night"}],
        max_completion_tokens=4, n=2, temperature=1.0, seed=7, stop=["\n\n"],
    )  # fmt: skip
    assert [c.index for c in two.choices] == [0, 1]

    assert job.fine_tuned_model in [m.id for m in client.models.list().data]
    assert client.models.retrieve(job.fine_tuned_model).owned_by == "personal"
    with pytest.raises(openai.BadRequestError, match="already completed"):
        client.fine_tuning.jobs.cancel(job.id)
    assert client.models.delete(job.fine_tuned_model).deleted
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.chat.completions.create(model=job.fine_tuned_model, messages=[{"role": "user", "content": "hi"}])


@pytest.mark.bundled
def test_the_bundled_model_fine_tunes_and_answers(
    client: openai.OpenAI, uploaded: dict[str, str], bundled_model_dir: Path
) -> None:
    job = client.fine_tuning.jobs.create(
        training_file=uploaded["train"], validation_file=uploaded["valid"], model="smollm2-135m-instruct",
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 1, "batch_size": 5}}},
        suffix="bundled", seed=7,
    )  # fmt: skip
    assert job.seed == 7 and job.hyperparameters.n_epochs == 1
    job = wait_terminal(client, job.id)
    assert job.status == "succeeded", job.error
    assert job.fine_tuned_model.startswith("ft:smollm2-135m-instruct:personal:bundled:")
    ask = [{"role": "system", "content": "Reply with one emoji."}, {"role": "user", "content": "I love this!"}]
    reply = client.chat.completions.create(model=job.fine_tuned_model, messages=ask, max_tokens=8, temperature=0)
    assert reply.choices[0].message.content.strip() and reply.usage.prompt_tokens > 10
    labels = ["😍", "😡"]
    labelled = client.chat.completions.create(model=job.fine_tuned_model, messages=ask, extra_body={"labels": labels})
    assert labelled.choices[0].message.content in labels


def test_names_users_build_from_the_id_resolve(
    server: Server, client: openai.OpenAI, uploaded: dict[str, str], tiny_model_dir: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """OpenAI users build `ft:{base}:personal::{id}` from a job's id: any owner, with or without the suffix, names
    the same model in chat completions and model retrieval, and `ftlab eval` / `ftlab generate` resolve it in the
    server's records."""
    job = client.fine_tuning.jobs.create(
        training_file=uploaded["train"], model=str(tiny_model_dir), suffix="mine",
        hyperparameters={"n_epochs": 2, "batch_size": 5, "learning_rate_multiplier": 20},
    )  # fmt: skip
    job = wait_terminal(client, job.id)
    assert job.status == "succeeded", job.error
    label, key = tiny_model_dir.name, job.id.removeprefix("ftjob-")[:8]
    assert job.fine_tuned_model == f"ft:{label}:personal:mine:{key}"
    ask = [{"role": "user", "content": "I love it"}]

    def reply(model: str) -> str:
        answer = client.chat.completions.create(model=model, messages=ask, max_tokens=6, temperature=0)
        return answer.choices[0].message.content

    tuned = reply(job.fine_tuned_model)
    assert tuned != reply(str(tiny_model_dir))  # the job's adapter answers, not the base
    for built in (f"ft:{label}:personal::{key}", f"ft:{label}:my-org:mine:{key}",
                  f"ft:{label}:personal::{job.id.removeprefix('ftjob-')}"):  # fmt: skip
        assert reply(built) == tuned
        assert client.models.retrieve(built).id == built
    first = client.fine_tuning.jobs.checkpoints.list(job.id).data[-1]
    assert reply(f"ft:{label}:personal::{key}:ckpt-step-{first.step_number}") == reply(
        first.fine_tuned_model_checkpoint)
    with pytest.raises(openai.NotFoundError, match="has the suffix 'mine', not 'other'"):
        reply(f"ft:{label}:personal:other:{key}")

    monkeypatch.setenv("FTLAB_DATABASE_URL", f"sqlite:///{server.home / 'ftlab.db'}")
    test_file = write_jsonl(tmp_path / "test.jsonl", [{"messages": [*ask, {"role": "assistant", "content": "😍"}]}])
    out = tmp_path / "eval.json"
    evaluated = CliRunner().invoke(app, ["eval", str(test_file), "--model", f"ft:{label}:personal::{key}", "--model",
                                         str(tiny_model_dir), "--max-new-tokens", "6", "--metrics", "exact",
                                         "--output", str(out)])  # fmt: skip
    assert evaluated.exit_code == 0, evaluated.output
    by_name, base = json.loads(out.read_text())["models"]
    assert Path(by_name["spec"]["adapter"]).parent.parent == server.home / "runs"  # the job's run folder
    output = by_name["examples"][0]["output"]
    assert output != base["examples"][0]["output"]
    generated = CliRunner().invoke(app, ["generate", "--model", f"ft:{label}:personal::{key}", "--user", "I love it",
                                         "--max-new-tokens", "6"])  # fmt: skip
    assert generated.exit_code == 0 and generated.output.rstrip("\n") == output.rstrip("\n")


def test_a_job_picks_its_checkpoint_by_a_task_metric_and_its_events_carry_it(
    server: Server, client: openai.OpenAI, uploaded: dict[str, str], tiny_model_dir: Path
) -> None:
    job = client.fine_tuning.jobs.create(
        training_file=uploaded["train"], validation_file=uploaded["valid"], model=str(tiny_model_dir),
        hyperparameters={"n_epochs": 2, "batch_size": 5, "select_by": "exact"},  # an ftlab extension, like lora_r
    )  # fmt: skip
    job = wait_terminal(client, job.id)
    assert job.status == "succeeded", job.error
    events = client.fine_tuning.jobs.list_events(fine_tuning_job_id=job.id, limit=100).data
    scored = [e.data for e in events if e.type == "metrics" and "exact" in e.data]
    assert [d["step"] for d in scored] == [4, 2] and all(0 <= d["exact"] <= 1 for d in scored)
    assert any(e.message.startswith("Validation replies for exact: 2 evaluations of 2 replies") for e in events)
    live = httpx.get(f"http://127.0.0.1:{server.port}/dashboard/api/runs/{job.id}/metrics").json()
    assert [m["step"] for m in live["metrics"] if m["exact"] is not None] == [2, 4]


def test_a_model_trained_on_json_replies_answers_in_their_shape_unless_asked_for_text(
    server: Server, client: openai.OpenAI, tmp_path: Path, tiny_model_dir: Path
) -> None:
    rows = [{"messages": [{"role": "user", "content": f"Ingredients: {i} eggs, {i} cups flour"},
                          {"role": "assistant", "content": json.dumps(["eggs", "flour"][: 1 + i % 2])}]}
            for i in range(10)]  # fmt: skip
    train = client.files.create(file=write_jsonl(tmp_path / "lists.jsonl", rows).open("rb"), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(training_file=train.id, model=str(tiny_model_dir),
                                         hyperparameters={"n_epochs": 1, "batch_size": 5})  # fmt: skip
    job = wait_terminal(client, job.id)
    assert job.status == "succeeded", job.error
    events = client.fine_tuning.jobs.list_events(fine_tuning_job_id=job.id, limit=100).data
    assert any(e.message.startswith("The training replies are JSON") for e in events)
    (run_dir,) = [p for p in (server.home / "runs").iterdir() if (p / "config.json").is_file()
                  and json.loads((p / "config.json").read_text())["train_file"].endswith(train.id)]  # fmt: skip
    learned = json.loads((run_dir / "final" / "reply_schema.json").read_text())
    assert learned == {"type": "array", "items": {"type": "string"}, "maxItems": 3}
    ask = [{"role": "user", "content": "Ingredients: 3 eggs, 1 cup milk"}]
    held = client.chat.completions.create(model=job.fine_tuned_model, messages=ask, max_tokens=200, temperature=0)
    assert held.choices[0].finish_reason == "stop"
    assert len(json.loads(held.choices[0].message.content)) <= 3  # a random model, held to the learned shape
    text = client.chat.completions.create(model=job.fine_tuned_model, messages=ask, max_tokens=200, temperature=0,
                                          response_format={"type": "text"})  # fmt: skip
    assert text.choices[0].message.content != held.choices[0].message.content


def test_cancel_a_job_and_page_through_jobs(client: openai.OpenAI, uploaded: dict[str, str], tiny_model_dir: Path):
    # Two jobs of this test's own: under xdist the module's other tests (and their jobs) may run elsewhere.
    earlier, job = (client.fine_tuning.jobs.create(training_file=uploaded["train"], model=str(tiny_model_dir),
                                                   hyperparameters={"n_epochs": 25, "batch_size": 1})
                    for _ in range(2))  # fmt: skip
    for each in (earlier, job):
        cancelled = client.fine_tuning.jobs.cancel(each.id)
        assert cancelled.status in ("cancelled", "running")  # a job already picked up stops at its next step
        assert wait_terminal(client, each.id).status == "cancelled"
    assert client.fine_tuning.jobs.list_events(fine_tuning_job_id=job.id).data[0].message == "Fine-tuning job cancelled"
    first = client.fine_tuning.jobs.list(limit=1)
    assert first.data[0].id == job.id and first.has_more
    assert first.get_next_page().data[0].id == earlier.id
    assert job.id not in [j.id for j in client.fine_tuning.jobs.list(metadata={"task": "emoji"})]


def test_a_job_with_an_mlflow_integration_is_exported_when_it_ends(
    server: Server, client: openai.OpenAI, uploaded: dict[str, str], tiny_model_dir: Path
) -> None:
    mlflow = pytest.importorskip("mlflow", reason="the optional MLflow client (pip install 'ftlab[mlflow]')")
    job = client.fine_tuning.jobs.create(
        training_file=uploaded["train"], model=str(tiny_model_dir), hyperparameters={"n_epochs": 1, "batch_size": 5},
        integrations=[{"type": "mlflow", "mlflow": {"experiment_name": "jobs"}}],
    )  # fmt: skip
    uri = server.env["MLFLOW_TRACKING_URI"]
    assert job.to_dict()["integrations"] == [
        {"type": "mlflow", "mlflow": {"tracking_uri": uri, "experiment_name": "jobs"}}
    ]
    assert wait_terminal(client, job.id).status == "succeeded"
    events = wait_for(lambda: [e.message for e in client.fine_tuning.jobs.list_events(job.id).data
                               if "MLflow" in e.message])  # fmt: skip
    assert events[0].startswith("Exported to MLflow: run "), events
    mlflow_client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    (mlrun,) = mlflow_client.search_runs([mlflow_client.get_experiment_by_name("jobs").experiment_id])
    assert mlrun.info.run_id in events[0] and mlrun.info.status == "FINISHED"
    assert mlrun.data.params["n_epochs"] == "1" and mlrun.data.tags["ftlab.source"] == "service"
    assert [m.step for m in mlflow_client.get_metric_history(mlrun.info.run_id, "train_loss")] == [1, 2]


def test_curl_multipart_upload_and_file_endpoints(server: Server, data: dict[str, Path]) -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    out = subprocess.run(
        [curl, "-sS", f"{server.base_url}/files", "-H", "Authorization: Bearer anything",
         "-F", "purpose=fine-tune", "-F", f"file=@{data['train']}"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    record = json.loads(out.stdout)
    assert record["object"] == "file" and record["filename"] == "train.jsonl" and record["status"] == "processed"
    assert record["bytes"] == data["train"].stat().st_size
    client = server.client()
    assert client.files.retrieve(record["id"]).bytes == record["bytes"]
    assert client.files.content(record["id"]).content == data["train"].read_bytes()
    assert record["id"] in [f.id for f in client.files.list(purpose="fine-tune")]
    assert client.files.delete(record["id"]).deleted
    with pytest.raises(openai.NotFoundError, match=record["id"]):
        client.files.retrieve(record["id"])


def test_file_names_never_become_paths(server: Server, data: dict[str, Path]) -> None:
    client = server.client()
    evil = client.files.create(file=("../../../evil.jsonl", data["train"].read_bytes()), purpose="fine-tune")
    assert evil.filename == "evil.jsonl"
    stored = list((server.home / "files").iterdir())
    assert server.home / "files" / evil.id in stored and not (server.home / "evil.jsonl").exists()
    assert not any(p.name == "evil.jsonl" for p in server.home.rglob("*"))


def test_structured_outputs_and_labels_hold_even_for_a_random_model(client: openai.OpenAI, tiny_model_dir: Path):
    schema = {
        "type": "object",
        "properties": {"mood": {"type": "string", "enum": ["happy", "sad"]}, "sure": {"type": "boolean"}},
        "required": ["mood", "sure"],
        "additionalProperties": False,
    }
    ask = [{"role": "user", "content": "How do you feel?"}]
    reply = client.chat.completions.create(
        model=str(tiny_model_dir), messages=ask, max_tokens=40, temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "mood", "schema": schema, "strict": True}},
    )  # fmt: skip
    value = json.loads(reply.choices[0].message.content)
    assert value["mood"] in ("happy", "sad") and isinstance(value["sure"], bool)
    assert reply.choices[0].finish_reason == "stop"

    labels = ["😍", "😡", "☀️"]
    reply = client.chat.completions.create(
        model=str(tiny_model_dir), messages=ask, n=2, temperature=1.0, seed=3, extra_body={"labels": labels}
    )
    assert all(c.message.content in labels and c.finish_reason == "stop" for c in reply.choices)
    streamed = client.chat.completions.create(
        model=str(tiny_model_dir), messages=ask, stream=True, temperature=0, extra_body={"labels": labels}
    )
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) in labels


# Bad inputs -------------------------------------------------------------------------------------------------------
GOOD = chat_rows(EMOJI[:1])[0]


def _lines(*rows) -> bytes:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows).encode()


def _upload(content: bytes, name: str = "bad.jsonl", purpose: str = "fine-tune"):
    return lambda c, _ids, _model: c.files.create(file=(name, content), purpose=purpose)


def _job(**kwargs):
    def create(c, ids, model):
        params = {"training_file": ids["train"], "model": model, **kwargs}
        params = {k: (v(ids) if callable(v) else v) for k, v in params.items()}
        return c.fine_tuning.jobs.create(**params)

    return create


def _wrong_role():
    row = json.loads(json.dumps(GOOD))
    row["messages"][1]["role"] = "robot"
    return row


def _reply(content: str, **extra) -> dict:
    return {"messages": [*GOOD["messages"][:2], {"role": "assistant", "content": content, **extra}]}


def _user(content: str) -> dict:
    return {"messages": [GOOD["messages"][0], {"role": "user", "content": content}, GOOD["messages"][2]]}


DEEP = '{"messages": ' + "[" * 100_000 + "]" * 100_000 + "}"


def _chat(**kwargs):
    return lambda c, _ids, model: c.chat.completions.create(**{"model": model, **kwargs})


BAD_INPUTS = [
    ("not-json", _upload(_lines(GOOD, "{not json")), 400, ["line 2", "not valid JSON"]),
    ("wrong-role", _upload(_lines(_wrong_role())), 400, ["line 1", "messages[1]", "role", "robot"]),
    ("no-assistant", _upload(_lines({"messages": GOOD["messages"][:2]})), 400, ["line 1", "no assistant message"]),
    ("empty-content", _upload(_lines(_reply(" "))), 400, ["line 1", "messages[2]", "content", "empty"]),
    ("empty-user", _upload(_lines(GOOD, _user(""))), 400, ["line 2", "messages[1]", "content", "user", "empty"]),
    ("nested-too-deep", _upload(_lines(GOOD, DEEP)), 400, ["bad.jsonl, line 2", "nested too deeply"]),
    ("no-examples", _upload(b"\n \n"), 400, ["bad.jsonl", "no examples"]),
    ("missing-messages", _upload(_lines({"prompt": "a", "completion": "b"})), 400, ["line 1", "'messages'"]),
    ("not-utf8", _upload(b'{"messages": "\xff\xfe"}\n'), 400, ["line 1", "UTF-8"]),
    ("empty-file", _upload(b""), 400, ["empty"]),
    ("not-jsonl-name", _upload(_lines(GOOD), name="train.csv"), 400, [".jsonl"]),
    ("unknown-purpose", _upload(_lines(GOOD), purpose="finetune"), 400, ["finetune", "purpose"]),
    ("results-purpose", _upload(_lines(GOOD), purpose="fine-tune-results"), 400, ["fine-tune-results", "purpose"]),
    ("oversize-file", _upload(b"x" * int(MAX_UPLOAD_MB * 1024 * 1024 * 1.5)), 413, ["upload", "limit"]),
    ("unknown-training-file", _job(training_file="file-doesnotexist"), 400, ["training_file", "file-doesnotexist"]),
    ("model-no-hub-id", _job(model="\u00d4\u00c3\u0001\u0014\u00d3/\u00ca"), 400, ["unknown model"]),  # fuzzer's 500
    ("wrong-purpose-file", _job(training_file=lambda ids: ids["user_data"]), 400, ["purpose", "fine-tune"]),
    ("too-few-examples", _job(training_file=lambda ids: ids["small"]), 400, ["1 example", "at least 10"]),
    ("same-validation-file", _job(validation_file=lambda ids: ids["train"]), 400, ["validation_file"]),
    ("n-epochs-0", _job(hyperparameters={"n_epochs": 0}), 400, ["n_epochs", "greater than or equal to 1"]),
    ("n-epochs-0-in-method", _job(method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 0}}}),
     400, ["n_epochs"]),
    ("negative-lr", _job(hyperparameters={"learning_rate_multiplier": -1}), 400, ["learning_rate_multiplier"]),
    ("batch-size-word", _job(hyperparameters={"batch_size": "big"}), 400, ["batch_size"]),
    ("unknown-hyperparameter", _job(hyperparameters={"warp_speed": 9}), 400, ["warp_speed"]),
    ("reinforcement-method", _job(method={"type": "reinforcement"}), 400,
     ["method.type", "(got 'reinforcement')", "'supervised' or 'dpo'"]),
    ("dpo-on-chat-data", _job(method={"type": "dpo"}), 400, ["training_file", "holds chat examples"]),
    ("unknown-select-by", _job(hyperparameters={"select_by": "f1"}), 400,
     ["hyperparameters.select_by", "unknown metric"]),
    ("select-by-without-validation", _job(hyperparameters={"select_by": "set_f1"}), 400,
     ["validation_file", "select_by set_f1 scores replies to the validation set"]),
    ("label-metric-without-labels", _job(validation_file=lambda ids: ids["valid"],
                                         hyperparameters={"select_by": "valid_label_rate"}), 400,
     ["select_by valid_label needs the label set"]),
    ("unknown-judge", _job(validation_file=lambda ids: ids["valid"], hyperparameters={"select_by": "judge:gpt-17"}),
     400, ["hyperparameters.select_by", "unknown model 'gpt-17'"]),
    ("unknown-model", _job(model="gpt-17-turbo"), 400, ["gpt-17-turbo", "not available"]),
    ("bad-suffix", _job(suffix="my suffix!"), 400, ["suffix"]),
    ("long-suffix", _job(suffix="x" * 65), 400, ["suffix"]),
    ("unknown-argument", _job(extra_body={"warmup": 3}), 400, ["Unrecognized request argument", "warmup"]),
    ("metadata-17-keys", _job(metadata={f"k{i}": "v" for i in range(17)}), 400, ["metadata", "16"]),
    ("wandb-integration", _job(integrations=[{"type": "wandb", "wandb": {"project": "p"}}]), 400,
     ["integrations[0].type", "wandb", "mlflow"]),
    ("mlflow-local-path", _job(integrations=[{"type": "mlflow", "mlflow": {"tracking_uri": "file:///etc/mlruns"}}]),
     400, ["integrations[0].mlflow.tracking_uri", "http(s)"]),
    ("unknown-job", lambda c, _i, _m: c.fine_tuning.jobs.retrieve("ftjob-nope"), 404, ["ftjob-nope"]),
    ("unknown-job-events", lambda c, _i, _m: c.fine_tuning.jobs.list_events("ftjob-nope"), 404, ["ftjob-nope"]),
    ("unknown-file", lambda c, _i, _m: c.files.retrieve("file-nope"), 404, ["file-nope"]),
    ("unknown-chat-model", _chat(model="ft:nope:ftlab::abc", messages=[{"role": "user", "content": "hi"}]), 404,
     ["ft:nope:ftlab::abc", "does not exist"]),
    ("unknown-ft-id", _chat(model="ft:tiny:personal::abcd1234", messages=[{"role": "user", "content": "hi"}]), 404,
     ["ft:tiny:personal::abcd1234", "no fine-tuning job has the id 'abcd1234'"]),
    ("run-folder-as-model", _chat(model="run:/tmp", messages=[{"role": "user", "content": "hi"}]), 404,
     ["run:/tmp", "base, ft"]),
    ("no-messages", _chat(messages=[]), 400, ["messages"]),
    ("temperature-3", _chat(messages=[{"role": "user", "content": "hi"}], temperature=3), 400, ["temperature"]),
    ("empty-labels", _chat(messages=[{"role": "user", "content": "hi"}], extra_body={"labels": []}), 400, ["labels"]),
    ("labels-and-schema", _chat(messages=[{"role": "user", "content": "hi"}], extra_body={"labels": ["a"]},
                                response_format={"type": "json_object"}), 400, ["labels", "not both"]),
    ("schema-missing", _chat(messages=[{"role": "user", "content": "hi"}],
                             response_format={"type": "json_schema", "json_schema": {"name": "x"}}), 400, ["schema"]),
]  # fmt: skip


@pytest.fixture(scope="module")
def bad_input_ids(client: openai.OpenAI, uploaded: dict[str, str]) -> dict[str, str]:
    return {
        **uploaded,
        "user_data": client.files.create(file=("notes.jsonl", _lines(GOOD)), purpose="user_data").id,
        "small": client.files.create(file=("small.jsonl", _lines(GOOD)), purpose="fine-tune").id,
    }


@pytest.mark.parametrize(
    ("call", "status", "needles"), [case[1:] for case in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS]
)
def test_bad_input_is_refused_with_a_message_naming_the_problem(
    client: openai.OpenAI, bad_input_ids: dict[str, str], tiny_model_dir: Path, call, status: int, needles: list[str]
) -> None:
    with pytest.raises(openai.APIStatusError) as info:
        call(client, bad_input_ids, str(tiny_model_dir))
    error = info.value.body
    assert info.value.status_code == status, error
    assert set(error) == {"message", "type", "param", "code"}
    for needle in needles:
        assert needle in error["message"] or needle == error["param"], (needle, error)


# The same file, the same finding: `ftlab data validate` and the upload share one validator ----------------------
SAME_FINDING = [
    ("not-json", "{not json"),
    ("wrong-role", _wrong_role()),
    ("unknown-key", {"messages": [{**GOOD["messages"][0], "colour": "red"}, *GOOD["messages"][1:]]}),
    ("no-assistant", {"messages": GOOD["messages"][:2]}),
    ("empty-user", _user(" \n")),
    ("empty-reply", _reply("\u3000")),
    ("nested-too-deep", DEEP),
    ("not-utf8", b'{"messages": "caf\xe9"}'),
    ("empty-reply-weight-0", {"messages": [*_reply("", weight=0)["messages"], _reply("OK")["messages"][2]]}),
    ("not-ending-with-assistant", {"messages": [*GOOD["messages"], {"role": "user", "content": "Thanks"}]}),
]  # fmt: skip


@pytest.mark.parametrize("bad", [case[1] for case in SAME_FINDING], ids=[case[0] for case in SAME_FINDING])
def test_validate_and_upload_give_the_same_finding(client: openai.OpenAI, tmp_path: Path, bad) -> None:
    content = _lines(GOOD, GOOD) + (bad + b"\n" if isinstance(bad, bytes) else _lines(bad))
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    result = CliRunner().invoke(app, ["data", "validate", str(path), "--no-tokens", "--json"])
    findings = [Finding(**f) for f in json.loads(result.stdout)["findings"]]
    errors = [f for f in findings if f.severity == "error"]
    if not errors:  # warnings never refuse an upload
        assert result.exit_code == 0 and any(f.severity == "warning" and f.lines == [3] for f in findings)
        assert client.files.create(file=("bad.jsonl", content), purpose="fine-tune").status == "processed"
        return
    with pytest.raises(openai.BadRequestError) as info:
        client.files.create(file=("bad.jsonl", content), purpose="fine-tune")
    first = errors[0]
    assert result.exit_code == 1 and first.lines == [3]
    assert info.value.body["message"] == f"Invalid training file: bad.jsonl, {first.location()}: {first.message} " \
                                         f"(fix: {first.fix})"  # fmt: skip


BAD_SETTINGS = [
    ({"hyperparameters": {"n_epochs": 51}}, "hyperparameters.n_epochs", "less than or equal to 50", "51"),
    ({"hyperparameters": {"lora_r": 0}}, "hyperparameters.lora_r", "greater than or equal to 1", "0"),
    ({"hyperparameters": {"warmup_ratio": 1.0}}, "hyperparameters.warmup_ratio", "less than 1", "1.0"),
    ({"hyperparameters": {"adapter": "qlora"}}, "hyperparameters.adapter", "'lora', 'dora' or 'full'", "'qlora'"),
    ({"method": {"type": "supervised", "supervised": {"hyperparameters": {"eval_every": 0}}}},
     "method.supervised.hyperparameters.eval_every", "greater than or equal to 1", "0"),
    ({"seed": -1}, "seed", "greater than or equal to 0", "-1"),
    ({"seed": 2**31}, "seed", "less than or equal to 2147483647", "2147483648"),
]  # fmt: skip


@pytest.mark.parametrize(("params", "param", "problem", "value"), BAD_SETTINGS, ids=[c[1] for c in BAD_SETTINGS])
def test_a_bad_setting_is_a_400_naming_the_parameter_and_the_value(
    client: openai.OpenAI, uploaded: dict[str, str], tiny_model_dir: Path, params: dict, param: str, problem: str,
    value: str,
) -> None:  # fmt: skip
    with pytest.raises(openai.BadRequestError) as info:
        client.fine_tuning.jobs.create(training_file=uploaded["train"], model=str(tiny_model_dir), **params)
    error = info.value.body
    assert (error["param"], error["code"]) == (param, "invalid_value"), error
    assert error["message"] == f"Invalid value for '{param}': Input should be {problem} (got {value})"


@pytest.mark.parametrize("where", ["hyperparameters", "method.supervised.hyperparameters"])
@pytest.mark.parametrize(("setting", "number"), [("learning_rate_multiplier", math.nan), ("weight_decay", math.inf)])
def test_nan_and_infinity_are_refused(server: Server, uploaded: dict[str, str], tiny_model_dir: Path, where: str,
                                      setting: str, number: float) -> None:  # fmt: skip
    # The openai client cannot send NaN (it serialises with allow_nan=False); Python's json writes and reads it.
    settings = {setting: number}
    body = {"model": str(tiny_model_dir), "training_file": uploaded["train"],
            **({"hyperparameters": settings} if where == "hyperparameters"
               else {"method": {"type": "supervised", "supervised": {"hyperparameters": settings}}})}  # fmt: skip
    response = httpx.post(f"{server.base_url}/fine_tuning/jobs", content=json.dumps(body),
                          headers={"content-type": "application/json"})  # fmt: skip
    error = response.json()["error"]
    assert response.status_code == 400 and error["param"] == f"{where}.{setting}", error
    assert error["code"] == "invalid_value" and "finite number" in error["message"]


def test_old_method_hyperparameter_and_the_default_seed(
    server: Server, client: openai.OpenAI, uploaded: dict[str, str], tiny_model_dir: Path
) -> None:
    from sqlalchemy import select

    from ftlab.records.db import session_scope
    from ftlab.records.tables import Job

    job = client.fine_tuning.jobs.create(
        training_file=uploaded["train"], model=str(tiny_model_dir),
        hyperparameters={"method": "dora", "n_epochs": 1, "batch_size": 5},  # "method" is adapter's old spelling
    )  # fmt: skip
    assert job.seed == 42 and job.method.type == "supervised"  # the seed every front door defaults to
    assert wait_terminal(client, job.id).status == "succeeded"
    with session_scope(f"sqlite:///{server.home / 'ftlab.db'}") as db:
        config = db.scalar(select(Job).where(Job.id == job.id)).run.config
    assert (config["adapter"], config["method"], config["seed"]) == ("dora", "supervised", 42)


def test_unknown_route_and_malformed_json_use_openai_error_shape(server: Server) -> None:
    response = httpx.get(f"{server.base_url}/nothing-here")
    assert response.status_code == 404 and "Invalid URL" in response.json()["error"]["message"]
    response = httpx.post(
        f"{server.base_url}/fine_tuning/jobs", content=b"{oops", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400 and "JSON" in response.json()["error"]["message"]


# API keys ---------------------------------------------------------------------------------------------------------
def test_api_keys_are_required_when_asked_for(tmp_path_factory: pytest.TempPathFactory) -> None:
    home = tmp_path_factory.mktemp("keys-home")
    secret = run_cli(home, "keys", "create", "--name", "ci").stdout.strip()
    assert secret.startswith("ftl-")
    server = Server(home, "--require-key", "--workers", "0").start()
    try:
        response = httpx.get(f"{server.base_url}/models")
        assert response.status_code == 401
        assert "didn't provide an API key" in response.json()["error"]["message"]
        with pytest.raises(openai.AuthenticationError, match="Incorrect API key"):
            server.client(api_key="ftl-wrong-key-123456").models.list()
        assert server.client(api_key=secret).models.list().data
        key_id = run_cli(home, "keys", "list").stdout.split()[0]
        run_cli(home, "keys", "revoke", key_id)
        with pytest.raises(openai.AuthenticationError):
            server.client(api_key=secret).files.list()
    finally:
        server.stop()


def test_serve_refuses_a_public_address_without_keys(tmp_path: Path) -> None:
    with pytest.raises(subprocess.CalledProcessError) as info:
        run_cli(tmp_path, "serve", "--host", "0.0.0.0", "--workers", "0")
    assert "ftlab keys create" in info.value.stderr
