"""Training throughput: ftlab's recipe vs TRL's SFTTrainer, and vs this machine's bf16 matmul roofline.

Same model (bundled SmolLM2-135M-Instruct), same data (the demo's recipe training set), same peft LoRA config
(r16, alpha 32, all linear layers), same batch size and the same threads, measured in one process, alternating
so that load from elsewhere hits all alike. ftlab runs with its defaults for this machine (on an AMX CPU: frozen
base weights in bf16, bf16 autocast, fp32 adapter). TRL runs twice: with its defaults as its docs recommend for a
CPU (`use_cpu=True, bf16=True`: bf16 autocast on fp32 weights, its default gradient checkpointing), the goal's
reference; and with the base loaded in bf16 like ftlab's, so the ratio at equal precision is printed too.

Prints real (non-padding) tokens per second of each, the ratios, and ftlab's achieved FLOP/s as a share of a
bf16 matmul measured in the same run. A LoRA step costs ≈ 4 × parameters FLOPs per token (forward 2N, backward
through activations 2N; the frozen weights need no weight gradients).

    python benchmarks/train_throughput.py [--steps 10] [--batch-size 8] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from ftlab.config import BUNDLED_MODEL  # noqa: E402
from ftlab.data.schema import read_examples, template_messages  # noqa: E402
from ftlab.models import load_tokenizer, resolve_model, set_threads  # noqa: E402
from ftlab.train.recipe import measure_throughput  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "examples" / "recipes" / "train.jsonl"
LORA = {"lora_r": 16, "lora_alpha": 32}


def matmul_roofline(size: int = 2048, repeats: int = 10) -> float:
    """FLOP/s of a square bf16 matmul on all threads: the practical ceiling for training on this CPU."""
    a = torch.randn(size, size, dtype=torch.bfloat16)
    b = torch.randn(size, size, dtype=torch.bfloat16)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - start)


def ftlab_tokens_per_second(examples, steps: int, batch_size: int) -> float:
    """ftlab's training step, exactly as the recipe runs it (the calibration `data estimate` uses too)."""
    return measure_throughput(BUNDLED_MODEL, examples, batch_size=batch_size, steps=steps)


def parameter_count() -> int:
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(resolve_model(BUNDLED_MODEL))
    with torch.device("meta"):
        return sum(p.numel() for p in AutoModelForCausalLM.from_config(config).parameters())


def trl_tokens_per_second(examples, steps: int, batch_size: int, out: Path, dtype: torch.dtype) -> float:
    """TRL's SFTTrainer with peft LoRA, prompt-completion data (loss on the completion), timed after step 1."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    rows = []
    for example in examples:
        messages = template_messages(example.messages)
        rows.append({"prompt": messages[:-1], "completion": messages[-1:]})
    tokenizer = load_tokenizer(BUNDLED_MODEL)
    model = AutoModelForCausalLM.from_pretrained(resolve_model(BUNDLED_MODEL), dtype=dtype)

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self.tokens: list[int] = []
            self._start = 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            self._start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.times.append(time.perf_counter() - self._start)

    timer = StepTimer()
    args = SFTConfig(
        output_dir=str(out), per_device_train_batch_size=batch_size, max_steps=steps + 1, use_cpu=True, bf16=True,
        logging_steps=1000, save_strategy="no", report_to=[], seed=0, dataloader_num_workers=0,
        completion_only_loss=True,
    )
    lora = LoraConfig(r=LORA["lora_r"], lora_alpha=LORA["lora_alpha"], target_modules="all-linear",
                      task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                         peft_config=lora, callbacks=[timer])
    # Real tokens per step: the mean tokenised length TRL itself produced, times the batch size.
    lengths = [len(ids) for ids in trainer.train_dataset["input_ids"]]
    trainer.train()
    per_step = statistics.mean(lengths) * batch_size
    return per_step * steps / sum(timer.times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2, help="alternating ftlab/TRL rounds; medians reported")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    set_threads()
    examples = read_examples(DATA)
    ftlab_runs, trl_runs, trl_bf16_runs, roofs = [], [], [], []
    n_params = parameter_count()
    for round_ in range(args.rounds):
        roofs.append(matmul_roofline())
        ftlab_runs.append(ftlab_tokens_per_second(examples, args.steps, args.batch_size))
        out = Path(f"/tmp/ftlab-trl-{round_}")
        trl_runs.append(trl_tokens_per_second(examples, args.steps, args.batch_size, out, torch.float32))
        trl_bf16_runs.append(trl_tokens_per_second(examples, args.steps, args.batch_size, out, torch.bfloat16))
        print(f"round {round_ + 1}: ftlab {ftlab_runs[-1]:.0f} tok/s, TRL defaults {trl_runs[-1]:.0f} tok/s, "
              f"TRL bf16 base {trl_bf16_runs[-1]:.0f} tok/s, bf16 matmul {roofs[-1] / 1e9:.0f} GFLOP/s", flush=True)
    ftlab_speed, trl_speed, trl_bf16_speed, roof = (
        statistics.median(x) for x in (ftlab_runs, trl_runs, trl_bf16_runs, roofs)
    )
    flops = ftlab_speed * 4 * n_params
    figures = {
        "threads": torch.get_num_threads(), "batch_size": args.batch_size, "steps": args.steps,
        "ftlab_tokens_per_s": round(ftlab_speed, 1), "trl_tokens_per_s": round(trl_speed, 1),
        "trl_bf16_base_tokens_per_s": round(trl_bf16_speed, 1),
        "ratio_ftlab_over_trl": round(ftlab_speed / trl_speed, 2),
        "ratio_ftlab_over_trl_bf16_base": round(ftlab_speed / trl_bf16_speed, 2),
        "bf16_matmul_gflops": round(roof / 1e9, 1), "ftlab_gflops": round(flops / 1e9, 1),
        "share_of_roofline": round(flops / roof, 3), "roofline_tokens_per_s": round(roof / (4 * n_params), 1),
    }
    print(json.dumps(figures, indent=2))
    print(f"ftlab / TRL defaults = {figures['ratio_ftlab_over_trl']:.2f}x; ftlab / TRL with a bf16 base = "
          f"{figures['ratio_ftlab_over_trl_bf16_base']:.2f}x; ftlab reaches {100 * flops / roof:.0f}% of the "
          f"bf16 matmul roofline ({figures['roofline_tokens_per_s']:.0f} tok/s)")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
