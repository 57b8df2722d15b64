"""Every way to name a model resolves through `ftlab.infer.refs`: bases, adapter folders, NAME+ADAPTER_DIR,
run folders, endpoints, and `ft:` names looked up in a real SQLite records database (the names ftlab prints
and the ones users build from the id), usable by `ftlab eval` and `ftlab generate`; a run folder copied to
another place still loads, because its adapter records the base by a portable name."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ftlab.cli.main import app
from ftlab.config import BUNDLED_MODEL
from ftlab.infer.refs import ModelRef, adapter_base, fine_tuned_model_name, organization, resolve_ref, resolve_refs
from ftlab.models import ModelNotFound, base_problem, portable_base
from ftlab.records.db import init_db, session_scope
from ftlab.records.tables import Checkpoint, Job, Run

REPO = Path(__file__).resolve().parents[1]
KEY = "abcdEFGH"  # the id part of the job's ft: name
JOB_ID = f"ftjob-{KEY}1234567890123456"


def _adapter(base: Path, folder: Path, shift: float) -> Path:
    """A LoRA adapter on the tiny model whose weights change its outputs (peft records `base`'s path)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                           LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))  # fmt: skip
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.add_(shift)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def run_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder as a service job leaves it: one epoch checkpoint (step 2) and the final adapter."""
    run = tmp_path_factory.mktemp("runs") / "run-1"
    _adapter(tiny_model_dir, run / "checkpoint-epoch-1", 0.3)
    _adapter(tiny_model_dir, run / "final", 0.6)
    (run / "config.json").write_text(json.dumps({"config": {"model": str(tiny_model_dir)}, "checkpoints": [
        {"step": 2, "epoch": 1, "path": str(run / "checkpoint-epoch-1")}]}))  # fmt: skip
    return run


@pytest.fixture
def records(run_dir: Path, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A real SQLite records database holding one succeeded job (suffix 'emoji') with a checkpoint at step 2."""
    url = f"sqlite:///{tmp_path / 'ftlab.db'}"
    monkeypatch.setenv("FTLAB_DATABASE_URL", url)
    init_db(url)
    with session_scope(url) as db:
        run = Run(id="run-1", base_model=str(tiny_model_dir), config={}, source="service", status="succeeded",
                  output_dir=str(run_dir), artifacts={"final_dir": str(run_dir / "final")})  # fmt: skip
        db.add(run)
        db.flush()
        job = Job(id=JOB_ID, model=str(tiny_model_dir), training_file="file-x", hyperparameters={}, method={},
                  seed=1, suffix="emoji", organization_id="org-personal", status="succeeded", run_pk=run.pk,
                  result_files=[], finished_at=1_700_000_000)  # fmt: skip
        db.add(job)
        db.flush()
        job.fine_tuned_model = fine_tuned_model_name(job)
        db.add(Checkpoint(id="ftckpt-1", run_pk=run.pk, job_pk=job.pk, step=2, epoch=1,
                          path=str(run_dir / "checkpoint-epoch-1"), model_name=f"{job.fine_tuned_model}:ckpt-step-2"))
    return url


def test_base_models_and_their_problems(tiny_model_dir: Path, tmp_path: Path) -> None:
    assert resolve_ref(BUNDLED_MODEL) == ModelRef(BUNDLED_MODEL, BUNDLED_MODEL)
    folder = resolve_ref(str(tiny_model_dir))
    assert (folder.kind, folder.model, folder.adapter, folder.local) == ("base", str(tiny_model_dir), None, True)
    assert resolve_ref("HuggingFaceTB/SmolLM2-360M-Instruct").model == "HuggingFaceTB/SmolLM2-360M-Instruct"
    # the service does not download: a hub id must already be in the local cache
    assert "not in the local Hugging Face cache" in base_problem("nobody/not-cached", download=False)
    with pytest.raises(ModelNotFound, match="no config.json"):
        resolve_ref(str(tmp_path))
    with pytest.raises(ModelNotFound, match="there is no folder"):
        resolve_ref(str(tmp_path / "missing"))
    with pytest.raises(ModelNotFound, match="unknown model 'gpt4'"):
        resolve_ref("gpt4")


def test_adapters_runs_and_endpoints(run_dir: Path, tiny_model_dir: Path) -> None:
    final = run_dir / "final"
    alone = resolve_ref(str(final))  # an adapter folder names its own base
    assert (alone.kind, alone.model, alone.adapter) == ("adapter", str(tiny_model_dir), final)
    named = resolve_ref(f"{BUNDLED_MODEL}+{final}")
    assert (named.model, named.adapter, named.name) == (BUNDLED_MODEL, final, f"{BUNDLED_MODEL}+{final}")
    assert resolve_ref(BUNDLED_MODEL, adapter=final) == named  # the --adapter flag
    with pytest.raises(ValueError, match="plain base model"):
        resolve_refs([f"run:{run_dir}"], adapter=final)
    with pytest.raises(ModelNotFound, match="not an adapter folder"):
        resolve_ref(f"{BUNDLED_MODEL}+{tiny_model_dir}")

    every = resolve_refs([f"run:{run_dir}"])
    assert [(r.name, r.epoch, r.step, r.adapter) for r in every] == [
        ("run-1:epoch-1", 1, 2, run_dir / "checkpoint-epoch-1"), ("run-1:final", None, None, final)]
    assert {r.model for r in every} == {str(tiny_model_dir)}
    with pytest.raises(ModelNotFound, match="names 2 checkpoints; pick one"):
        resolve_ref(f"run:{run_dir}")
    assert resolve_ref(f"run:{run_dir}@epoch-1").adapter == run_dir / "checkpoint-epoch-1"

    endpoint = resolve_ref("openai:gpt-4o-mini@https://api.openai.com/v1/")
    assert (endpoint.kind, endpoint.model, endpoint.base_url, endpoint.local) == (
        "endpoint", "gpt-4o-mini", "https://api.openai.com/v1", False)
    assert resolve_ref("fake", base_url="http://127.0.0.1:9/v1") == ModelRef(
        "fake", "fake", "endpoint", base_url="http://127.0.0.1:9/v1")  # synth's --teacher NAME --base-url URL
    with pytest.raises(ModelNotFound, match="openai:MODEL@BASE_URL"):
        resolve_ref("openai:gpt-4o-mini")
    with pytest.raises(ValueError, match="named twice"):
        resolve_refs([str(tiny_model_dir), str(tiny_model_dir)])


def test_ft_names_resolve_by_their_id_whatever_the_owner(records: str, run_dir: Path, tiny_model_dir: Path) -> None:
    label = tiny_model_dir.name
    printed = f"ft:{label}:personal:emoji:{KEY}"
    with session_scope(records) as db:
        assert db.get(Job, 1).fine_tuned_model == printed  # the owner is FTLAB_ORGANIZATION, default 'personal'
        final = resolve_ref(printed, db=db)
        assert (final.kind, final.model, final.adapter, final.run_dir) == (
            "ft", str(tiny_model_dir), run_dir / "final", run_dir)
        assert final.created == 1_700_000_000
        for built in (f"ft:{label}:personal::{KEY}", f"ft:{label}:my-org:emoji:{KEY}", f"ft::::{KEY}",
                      f"ft:{label}:ftlab:emoji:{JOB_ID.removeprefix('ftjob-')}"):
            ref = resolve_ref(built, db=db)
            assert (ref.name, ref.adapter) == (built, run_dir / "final")
        step = resolve_ref(f"ft:{label}:personal::{KEY}:ckpt-step-2", db=db)
        assert (step.adapter, step.epoch, step.step) == (run_dir / "checkpoint-epoch-1", 1, 2)

        for wrong, message in [
            (f"ft:{label}:personal:other:{KEY}", "has the suffix 'emoji', not 'other'"),
            (f"ft:gpt-4o-mini:personal::{KEY}", f"fine-tuned from '{label}', not 'gpt-4o-mini'"),
            (f"ft:{label}:personal::zzzzZZZZ", "no fine-tuning job has the id 'zzzzZZZZ'"),
            (f"ft:{label}:personal::{KEY[:5]}", "at least 8 characters"),
            (f"ft:{label}:personal::{KEY}:ckpt-step-3", "no checkpoint at step 3 (steps: 2)"),
            (f"ft:{label}:{KEY}", "not an ft: name"),
        ]:
            with pytest.raises(ModelNotFound, match=message.replace("(", r"\(").replace(")", r"\)")):
                resolve_ref(wrong, db=db)

        other_run = Run(id="run-2", base_model="m", config={})
        db.add(other_run)
        db.flush()
        db.add(Job(id=f"ftjob-{KEY}zzzz", model="m", training_file="f", hyperparameters={}, method={}, seed=1,
                   organization_id="o", status="running", run_pk=other_run.pk, result_files=[]))  # fmt: skip
        db.flush()
        with pytest.raises(ModelNotFound, match=f"the id '{KEY}' matches 2 fine-tuning jobs"):
            resolve_ref(printed, db=db)
        with pytest.raises(ModelNotFound, match="is running: its model exists once it has succeeded"):
            resolve_ref(f"ft::::{KEY}zzzz", db=db)
        db.get(Job, 1).model_deleted = True
        with pytest.raises(ModelNotFound, match="was deleted"):
            resolve_ref(f"ft::::{KEY}1234", db=db)


def test_organization_names_the_owner(monkeypatch: pytest.MonkeyPatch) -> None:
    assert organization() == "personal"
    monkeypatch.setenv("FTLAB_ORGANIZATION", "acme-labs")
    job = Job(id=JOB_ID, model="/models/tiny llama/", suffix=None)
    assert fine_tuned_model_name(job) == f"ft:tiny-llama:acme-labs::{KEY}"
    monkeypatch.setenv("FTLAB_ORGANIZATION", "acme:labs")
    with pytest.raises(ValueError, match="FTLAB_ORGANIZATION"):
        organization()


def test_eval_and_generate_take_an_ft_name(records: str, run_dir: Path, tiny_model_dir: Path,
                                           tmp_path: Path) -> None:
    test_file = tmp_path / "test.jsonl"
    test_file.write_text("".join(json.dumps({"messages": [{"role": "user", "content": q},
                                                          {"role": "assistant", "content": "ok"}]}) + "\n"
                                 for q in ("Hello there", "How is the soup?")))  # fmt: skip
    by_name = f"ft:{tiny_model_dir.name}:personal::{KEY}"
    out = tmp_path / "eval.json"
    result = CliRunner().invoke(app, ["eval", str(test_file), "--model", by_name, "--model", str(tiny_model_dir),
                                      "--model", f"{tiny_model_dir}+{run_dir / 'final'}", "--max-new-tokens", "6",
                                      "--metrics", "exact", "--output", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    tuned, base, explicit = (
        [e["output"] for e in m["examples"]] for m in json.loads(out.read_text())["models"])
    assert tuned == explicit and tuned != base  # the ft: name is the job's final adapter on its base

    args = ["generate", "--user", "Hello there", "--max-new-tokens", "6"]
    generated = CliRunner().invoke(app, [*args, "--model", by_name])
    assert generated.exit_code == 0, generated.output
    assert generated.output == CliRunner().invoke(app, [*args, "--model", str(run_dir / "final")]).output
    assert generated.output.strip("\n") == tuned[0]
    unknown = CliRunner().invoke(app, [*args, "--model", f"ft:{tiny_model_dir.name}:personal::zzzzZZZZ"])
    assert unknown.exit_code == 2 and "no fine-tuning job has the id 'zzzzZZZZ'" in unknown.output


def test_adapters_record_where_their_base_is(tmp_path: Path, tiny_model_dir: Path, bundled_model_dir: Path) -> None:
    assert portable_base(BUNDLED_MODEL) == (BUNDLED_MODEL, None)
    assert portable_base(str(bundled_model_dir)) == (BUNDLED_MODEL, None)  # its converted folder is the alias
    assert portable_base("org/model") == ("org/model", None)  # not cached here: no commit to record
    assert portable_base(os.path.relpath(tiny_model_dir)) == (str(tiny_model_dir.resolve()), None)

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    shutil.copytree(tiny_model_dir, tmp_path / "base")
    for recorded, expected in [("../base", str(tmp_path / "base")),  # relative: to the adapter folder
                               ("/gone/.ftlab/models/smollm2-135m-instruct", BUNDLED_MODEL),  # written before names
                               ("HuggingFaceTB/SmolLM2-135M-Instruct", "HuggingFaceTB/SmolLM2-135M-Instruct")]:
        (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": recorded}))
        assert adapter_base(adapter) == (expected, None)
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "../moved"}))
    with pytest.raises(ModelNotFound, match=r"adapter_config.json: base_model_name_or_path '../moved' does not exist"):
        resolve_ref(str(adapter))
    assert resolve_ref(f"{tmp_path / 'base'}+{adapter}").model == str(tmp_path / "base")  # naming the base works


def _hub_cache(tiny_model_dir: Path, cache: Path, repo: str, commit: str) -> None:
    """The tiny model as a hub repo in a Hugging Face cache (the layout `huggingface_hub` writes)."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    shutil.copytree(tiny_model_dir, folder / "snapshots" / commit)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(commit)


def test_a_copied_run_folder_loads_and_answers_the_same(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Train on a hub model from the local cache, copy the run folder to what stands for another machine, and
    generate from the copy: the adapter names its base by hub id and commit, not by the cache's path. Runs the
    CLI in subprocesses because the Hugging Face cache location is read when huggingface_hub is imported."""
    repo, commit = "ftlab-test/tiny-llama", "0123456789abcdef0123456789abcdef01234567"
    _hub_cache(tiny_model_dir, tmp_path / "hub", repo, commit)
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "FTLAB_HOME": str(tmp_path / "home"), "PYTHONPATH": str(REPO)}  # fmt: skip

    def ftlab(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "ftlab.cli.main", *args], env=env, cwd=tmp_path,
                              capture_output=True, text=True)  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout

    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"question {i}"},
                                                     {"role": "assistant", "content": "Paris"}]}) + "\n"
                            for i in range(8)))  # fmt: skip
    ftlab("train", str(data), "--model", repo, "--epochs", "2", "--batch-size", "4",
          "--learning-rate-multiplier", "20", "--output", str(tmp_path / "run"))  # fmt: skip
    recorded = json.loads((tmp_path / "run" / "final" / "adapter_config.json").read_text())
    assert (recorded["base_model_name_or_path"], recorded["revision"]) == (repo, commit)

    ask = ["generate", "--user", "Where?", "--max-new-tokens", "8"]
    original = ftlab(*ask, "--model", str(tmp_path / "run" / "final"))
    assert "Paris" in original  # the adapter is applied: the random base writes only newlines
    copy = tmp_path / "elsewhere" / "run-copy"
    shutil.copytree(tmp_path / "run", copy)
    # Another machine: nothing may point into the original folder, and its Hugging Face cache lives elsewhere.
    (tmp_path / "run").rename(tmp_path / "gone")
    env["HF_HUB_CACHE"] = str((tmp_path / "hub").rename(tmp_path / "other-machine-hub"))
    assert ftlab(*ask, "--model", f"run:{copy}@final") == original
