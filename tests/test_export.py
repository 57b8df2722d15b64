"""`ftlab export` on the tiny random Llama with random-init adapters: the merged folder gives the logits of base +
adapter (LoRA and DoRA), the peft adapter names its base portably and gives the same logits, and the GGUF of
llama.cpp's converter loads back (in transformers) with the same logits at f16 precision, beside a Modelfile."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM
from typer.testing import CliRunner

from ftlab.cli.main import app
from ftlab.infer.export import converter_problem

PROMPT = torch.tensor([[1, 22, 333, 4444, 5555, 66, 777, 8, 99, 1000]])
MERGE_ATOL = 1e-4  # merged in fp32: only summation order differs
GGUF_ATOL = 2e-3  # weights stored in f16 (logits of the tiny model are of order 1)


def logits(model) -> torch.Tensor:
    with torch.inference_mode():
        return model(PROMPT).logits.float()


def adapter_logits(base: Path, adapter: Path) -> torch.Tensor:
    from peft import PeftModel

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    return logits(PeftModel.from_pretrained(model, str(adapter)).eval())


def export(tmp_path: Path, model: str, fmt: str) -> Path:
    out = tmp_path / f"out-{fmt}"
    result = CliRunner().invoke(app, ["export", model, "--format", fmt, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.output
    return out


def run_folder(tmp_path: Path, base: Path, adapter: Path) -> Path:
    """A run folder as `ftlab train` leaves it: config.json naming the base, the adapter in final/."""
    run = tmp_path / "run"
    shutil.copytree(adapter, run / "final")
    (run / "config.json").write_text(json.dumps({"model": str(base)}))
    return run


@pytest.mark.parametrize("which", ["lora", "dora"])
def test_merged_export_gives_the_logits_of_base_plus_adapter(tmp_path: Path, tiny_model_dir: Path, tiny_adapters,
                                                             which: str):  # fmt: skip
    adapter = tiny_adapters[0 if which == "lora" else 2]
    out = export(tmp_path, str(run_folder(tmp_path, tiny_model_dir, adapter)), "merged")
    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    assert not (out / "adapter_config.json").exists() and (out / "tokenizer_config.json").exists()
    expected = adapter_logits(tiny_model_dir, adapter)
    assert torch.allclose(logits(merged), expected, atol=MERGE_ATOL)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    assert not torch.allclose(logits(base), expected, atol=100 * MERGE_ATOL)  # the adapter does change them


def test_peft_export_names_its_base_portably_and_refuses_dora(tmp_path: Path, tiny_model_dir: Path, tiny_adapters):
    lora, _, dora = tiny_adapters
    out = export(tmp_path, f"run:{run_folder(tmp_path, tiny_model_dir, lora)}@final", "peft")
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(tiny_model_dir.resolve())
    assert torch.allclose(adapter_logits(tiny_model_dir, out), adapter_logits(tiny_model_dir, lora), atol=1e-6)
    result = CliRunner().invoke(app, ["export", str(dora), "--format", "peft", "--out", str(tmp_path / "d")])
    assert result.exit_code == 2 and "DoRA" in result.output and "--format merged" in result.output


@pytest.mark.skipif(converter_problem() is not None, reason=str(converter_problem()))
def test_gguf_export_loads_back_with_the_same_logits_and_a_modelfile(tmp_path: Path, tiny_model_dir: Path,
                                                                     tiny_adapters):  # fmt: skip
    lora = tiny_adapters[1]
    out = export(tmp_path, f"{tiny_model_dir}+{lora}", "gguf")
    [gguf] = list(out.glob("*.gguf"))
    modelfile = (out / "Modelfile").read_text()
    assert modelfile.startswith(f"FROM ./{gguf.name}\n") and "<|im_start|>{{ .Role }}" in modelfile
    assert 'PARAMETER stop "<|im_end|>"' in modelfile
    loaded = AutoModelForCausalLM.from_pretrained(out, gguf_file=gguf.name, dtype=torch.float32)
    assert torch.allclose(logits(loaded), adapter_logits(tiny_model_dir, lora), atol=GGUF_ATOL)


def test_export_refuses_a_non_empty_folder_and_an_unknown_format(tmp_path: Path, tiny_model_dir: Path,
                                                                 tiny_adapters):  # fmt: skip
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("x")
    result = CliRunner().invoke(app, ["export", str(tiny_adapters[0]), "--out", str(tmp_path / "taken")])
    assert result.exit_code == 2 and "not empty" in result.output
    result = CliRunner().invoke(app, ["export", str(tiny_adapters[0]), "--format", "onnx", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "merged, peft, gguf" in result.output
