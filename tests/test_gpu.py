"""On a CUDA GPU: the precision and attention the recipe picks there, and a tiny run that trains with them.
Skipped with the reason on machines without one (CI is CPU-only); run these where a GPU is lent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from data_helpers import good_rows, write_jsonl

from ftlab.config import TrainConfig
from ftlab.models import Precision, best_precision
from ftlab.train.recipe import train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (this machine has none)")


def test_a_gpu_gets_bf16_and_sdpa() -> None:
    cuda = torch.device("cuda")
    assert best_precision(cuda, frozen_base=True) == Precision(torch.bfloat16, torch.bfloat16, "sdpa")  # LoRA, DoRA
    assert best_precision(cuda, frozen_base=False) == Precision(torch.float32, torch.bfloat16, "sdpa")  # full


def test_a_tiny_run_trains_on_the_gpu(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "train.jsonl", good_rows())
    config = TrainConfig(model=str(tiny_model_dir), n_epochs=3, batch_size=4, learning_rate_multiplier=20.0)
    result = train(config, data, output_dir=tmp_path / "run", progress=False)
    record = json.loads((result.output_dir / "config.json").read_text())
    assert record["precision"] == {"weights": "torch.bfloat16", "autocast": "torch.bfloat16", "attention": "sdpa"}
    assert record["machine"]["device"].startswith("cuda") and record["machine"]["gpu"]
    assert result.peak_memory_mib["gpu"][0] > 0
    rows = [float(line.split(",")[1]) for line in result.metrics_csv.read_text().splitlines()[1:]]
    assert rows[-1] < rows[0]
