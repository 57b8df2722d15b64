"""OpenAI's `method: dpo` through the official `openai` client against a real `ftlab serve` on 127.0.0.1: preference
files uploaded and checked like chat files, a DPO job run to an `ft:` model that answers, and the mismatches of
method and data refused with a 400 that names them."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import openai
import pytest
from data_helpers import animal_pairs
from serve_helpers import CHROMIUM, CHROMIUM_ARGS, EMOJI, Server, chat_rows, wait_for, write_jsonl

from ftlab.train.dpo import METRIC_COLUMNS

TERMINAL = ("succeeded", "failed", "cancelled")
ANIMALS = ["cat", "dog", "cow", "duck", "frog", "bee", "owl", "fox", "pig", "hen", "goat", "bat", "ant", "eel"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    server = Server(tmp_path_factory.mktemp("serve-dpo-home")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def files(server: Server, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("serve-dpo-data")
    client = server.client()
    paths = {"train": write_jsonl(folder / "prefs.jsonl", animal_pairs(ANIMALS[:10])),
             "valid": write_jsonl(folder / "prefs_val.jsonl", animal_pairs(ANIMALS[10:])),
             "chat": write_jsonl(folder / "chat.jsonl", chat_rows(EMOJI[:10]))}  # fmt: skip
    return {name: client.files.create(file=open(path, "rb"), purpose="fine-tune").id  # noqa: SIM115
            for name, path in paths.items()}  # fmt: skip


@pytest.fixture(scope="module")
def dpo_job(server: Server, files: dict[str, str], tiny_model_dir: Path):
    """A DPO job as created through the official client, and the same job once it has ended."""
    client = server.client()
    created = client.fine_tuning.jobs.create(
        training_file=files["train"], validation_file=files["valid"], model=str(tiny_model_dir), suffix="kind",
        method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2, "n_epochs": 2, "batch_size": 5,
                                                           "learning_rate_multiplier": 20}}},
    )  # fmt: skip
    return created, wait_for(lambda: (j := client.fine_tuning.jobs.retrieve(created.id)).status in TERMINAL and j)


def test_a_dpo_job_through_the_official_client(server: Server, dpo_job, tiny_model_dir: Path) -> None:
    client = server.client()
    job, done = dpo_job
    assert job.status == "queued" and job.method.type == "dpo" and job.method.supervised is None
    assert job.method.dpo.hyperparameters.beta == 0.2 and job.method.dpo.hyperparameters.n_epochs == 2
    assert job.hyperparameters.batch_size == 5

    job = done
    assert job.status == "succeeded", job.error
    assert job.fine_tuned_model.startswith(f"ft:{tiny_model_dir.name}:personal:kind:") and job.trained_tokens > 0
    assert job.method.type == "dpo" and job.method.dpo.hyperparameters.beta == 0.2

    events = client.fine_tuning.jobs.list_events(fine_tuning_job_id=job.id, limit=100).data
    metrics = [e for e in events if e.type == "metrics"]
    assert [e.data["step"] for e in metrics] == [4, 3, 2, 1]
    assert {"train_loss", "train_reward_margin", "train_reward_accuracy"} <= metrics[-1].data.keys()
    assert metrics[0].data["valid_reward_accuracy"] is not None
    assert any("with DPO (beta 0.2) on 10 preference pairs" in e.message for e in events)
    (results,) = job.result_files
    assert client.files.content(results).text.splitlines()[0] == ",".join(METRIC_COLUMNS)
    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert [c.step_number for c in checkpoints] == [4, 2] and checkpoints[0].metrics.valid_loss is not None

    reply = client.chat.completions.create(model=job.fine_tuned_model, max_tokens=4,
                                           messages=[{"role": "user", "content": "What sound does a yak make?"}])
    assert reply.choices[0].message.role == "assistant" and reply.usage.completion_tokens <= 4


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (/usr/bin/chromium)")
def test_the_dashboard_draws_the_rewards(server: Server, dpo_job) -> None:
    """The run page of a DPO job draws reward margin and accuracy beside the loss, from the metrics API."""
    from playwright.sync_api import sync_playwright

    _, job = dpo_job
    base = f"http://127.0.0.1:{server.port}"
    rows = httpx.get(f"{base}/dashboard/api/runs/{job.id}/metrics").json()["metrics"]
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and all(r["train_reward_margin"] is not None for r in rows)
    assert [r["step"] for r in rows if r.get("valid_reward_accuracy") is not None] == [2, 4]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(f"{base}/runs/{job.id}")
        page.wait_for_function("() => +document.querySelector('#reward-chart').dataset.points === 12")
        drawn = {name: len(page.get_attribute(f"#reward-chart polyline[data-series='{name}']", "points").split())
                 for name in ("train margin", "train accuracy", "valid margin", "valid accuracy")}  # fmt: skip
        browser.close()
    assert drawn == {"train margin": 4, "train accuracy": 4, "valid margin": 2, "valid accuracy": 2}
    assert errors == []


def test_preference_rows_are_checked_at_upload(server: Server, tmp_path: Path) -> None:
    bad = {**animal_pairs(["emu"])[0], "input": {"messages": [{"role": "usr", "content": "hi"}]}}
    rows = [*animal_pairs(ANIMALS[:2]), bad]
    with pytest.raises(openai.BadRequestError) as info:
        server.client().files.create(file=("prefs.jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode()),
                                     purpose="fine-tune")  # fmt: skip
    assert info.value.body["message"].startswith("Invalid training file: prefs.jsonl, line 3, field "
                                                 "'input.messages[0].role': unknown role 'usr'")  # fmt: skip


MISMATCHES = [
    ({"training_file": "chat", "method": {"type": "dpo"}}, "training_file",
     "holds chat examples (messages); method 'dpo' trains on preference pairs"),
    ({"training_file": "train"}, "training_file",
     "holds preference pairs (input, preferred_output, non_preferred_output); method 'supervised' trains on chat"),
    ({"training_file": "train", "validation_file": "chat", "method": {"type": "dpo"}}, "validation_file",
     "holds chat examples"),
    ({"training_file": "train", "method": {"type": "dpo", "supervised": {"hyperparameters": {"n_epochs": 1}}}},
     "method.supervised", "method.supervised is given but method.type is 'dpo'"),
    ({"training_file": "train", "method": {"type": "dpo", "dpo": {"hyperparameters": {"adapter": "full"}}}},
     None, "method dpo trains an adapter (lora or dora)"),
    ({"training_file": "chat", "hyperparameters": {"beta": 0.5}}, None, "beta is a setting of method dpo"),
    ({"training_file": "train", "method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0}}}},
     "method.dpo.hyperparameters.beta", "greater than 0"),
    # a request never names a folder of the server's: the starting adapter is `model` as an ft: name
    ({"training_file": "train", "method": {"type": "dpo", "dpo": {"hyperparameters": {"init_adapter": "/tmp"}}}},
     "method.dpo.hyperparameters.init_adapter", "Unrecognized request argument"),
]  # fmt: skip


@pytest.mark.parametrize(("params", "param", "words"), MISMATCHES, ids=[m[2][:30] for m in MISMATCHES])
def test_method_and_data_must_match(server: Server, files: dict[str, str], tiny_model_dir: Path, params: dict,
                                    param: str | None, words: str) -> None:  # fmt: skip
    params = {**params, **{k: files[params[k]] for k in ("training_file", "validation_file") if k in params}}
    with pytest.raises(openai.BadRequestError) as info:
        server.client().fine_tuning.jobs.create(model=str(tiny_model_dir), **params)
    error = info.value.body
    assert error["param"] == param and words in error["message"], error


def test_dpo_goes_on_from_a_fine_tuned_model(server: Server, files: dict[str, str], tiny_model_dir: Path) -> None:
    """OpenAI's way to go on from a fine-tuned model: `model` is its ft: name; the job's run starts from its
    adapter (the reference too), and the new model is named after the base like any other."""
    from sqlalchemy import select

    from ftlab.records.db import session_scope
    from ftlab.records.tables import Job

    client = server.client()
    sft = client.fine_tuning.jobs.create(training_file=files["chat"], model=str(tiny_model_dir), suffix="sft",
                                         hyperparameters={"n_epochs": 1, "batch_size": 5, "lora_r": 8})  # fmt: skip
    sft = wait_for(lambda: (j := client.fine_tuning.jobs.retrieve(sft.id)).status in TERMINAL and j)
    assert sft.status == "succeeded", sft.error
    with pytest.raises(openai.BadRequestError) as info:
        client.fine_tuning.jobs.create(training_file=files["chat"], model=sft.fine_tuned_model)
    assert info.value.body["param"] == "model" and "supported for method 'dpo'" in info.value.body["message"]

    job = client.fine_tuning.jobs.create(training_file=files["train"], model=sft.fine_tuned_model,
                                         method={"type": "dpo", "dpo": {"hyperparameters": {"n_epochs": 1}}})
    assert job.model == sft.fine_tuned_model
    job = wait_for(lambda: (j := client.fine_tuning.jobs.retrieve(job.id)).status in TERMINAL and j)
    assert job.status == "succeeded", job.error
    assert job.fine_tuned_model.startswith(f"ft:{tiny_model_dir.name}:personal::")
    with session_scope(f"sqlite:///{server.home / 'ftlab.db'}") as db:
        run = db.scalar(select(Job).where(Job.id == job.id)).run
        config, base = run.config, run.base_model
    assert Path(base).resolve() == tiny_model_dir.resolve()
    assert config["lora_r"] == 8 and config["init_adapter"].endswith("/final")
    reply = client.chat.completions.create(model=job.fine_tuned_model, max_tokens=3,
                                           messages=[{"role": "user", "content": "What sound does a yak make?"}])
    assert reply.choices[0].message.role == "assistant"
