"""Shared fixtures: an isolated FTLAB_HOME per test session and a tiny random Llama with the real tokenizer."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Converted bundled weights are cached across test sessions (a read-only cache; conversion takes ~15 s).
os.environ.setdefault("FTLAB_MODELS_DIR", str(REPO / ".cache" / "models"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Under pytest-xdist (`make test` runs two processes) each process gets its share of the cores: torch's threads
# spinning on cores the other process uses made one bundled-model test 10x slower.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    os.environ.setdefault(
        "OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))
    )


@pytest.fixture(scope="session", autouse=True)
def ftlab_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Everything a test run writes goes under a fresh FTLAB_HOME."""
    home = tmp_path_factory.mktemp("ftlab-home")
    os.environ["FTLAB_HOME"] = str(home)
    return home


@pytest.fixture(scope="session")
def bundled_model_dir() -> Path:
    """The bundled SmolLM2 converted to safetensors (cached in FTLAB_MODELS_DIR)."""
    from ftlab.config import BUNDLED_MODEL
    from ftlab.models import resolve_model

    return Path(resolve_model(BUNDLED_MODEL))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, bundled_model_dir: Path) -> Path:
    """A randomly initialised 2-layer Llama with SmolLM2's tokenizer and chat template (loads in <1 s)."""
    from tiny_llama import write_tiny_llama

    return write_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), bundled_model_dir)


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL 15 server for the session (see tests/postgres.py); the test is skipped, with the reason, where
    none can start."""
    from postgres import Postgres, PostgresUnavailable

    try:
        server = Postgres().start()
    except PostgresUnavailable as exc:
        pytest.skip(f"PostgreSQL is not available: {exc}")
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database: a SQLite file, then a PostgreSQL database (each test runs on both)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ftlab.db'}"
        return
    url = request.getfixturevalue("postgres").new_database()
    yield url
    from ftlab.records.db import get_engine

    get_engine(url).dispose()  # the pool's connections end with the test, not with the session


@pytest.fixture(scope="session")
def tiny_adapters(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two LoRA adapters and one DoRA adapter (r8, all linear layers) with random, non-zero weights on the tiny
    model: what an adapter costs and how it is served does not depend on what it learnt."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    folders = []
    for i, dora in enumerate([False, False, True]):
        torch.manual_seed(i)
        config = LoraConfig(r=8, target_modules="all-linear", init_lora_weights=False, use_dora=dora)
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), config)
        folders.append(tmp_path_factory.mktemp(f"tiny-{'dora' if dora else 'lora'}-{i}"))
        model.save_pretrained(folders[-1])
    return folders
