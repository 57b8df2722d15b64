"""DPO training throughput: ftlab's DPO recipe (`ftlab.train.dpo`) vs TRL's `DPOTrainer`, same pairs, same LoRA.

Same model, same preference pairs (the demo's recipe prompts: the reference answer preferred over the answer of
another recipe), same peft LoRA config (r16, alpha 32, all linear layers), same batch size of pairs, same
threads, alternating, so that load from elsewhere hits both alike (each measurement in a fresh process: a
Trainer leaves accelerate's global state set for its own mixed precision). ftlab runs with its
defaults for this machine; TRL with its defaults as its docs give them for a CPU (`use_cpu=True`, bf16
autocast, gradient checkpointing), which, with a peft adapter, score the reference every step with the adapter
switched off. ftlab scores the reference once before training: its time is printed on its own.

Prints real (non-padding) tokens per second of each (both sequences of every pair), after an unmeasured first
step. `--model PATH` measures another model folder (the tests' tiny random Llama, say).

    python benchmarks/dpo_throughput.py [--model smollm2-135m-instruct] [--steps 6] [--batch-size 4] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from ftlab.config import BUNDLED_MODEL, TrainConfig  # noqa: E402
from ftlab.data.schema import read_examples, read_preferences, template_messages  # noqa: E402
from ftlab.models import load_tokenizer, resolve_model, set_threads  # noqa: E402
from ftlab.train.dpo import PreferenceLoss, collate_pairs, reference_logps, tokenize_pairs  # noqa: E402
from ftlab.train.recipe import accelerator_and_precision, prepare_training, seed_everything, train_step  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "examples" / "recipes" / "train.jsonl"
LORA = {"lora_r": 16, "lora_alpha": 32}


def preference_file(folder: Path, n: int) -> Path:
    """Pairs from the recipe set: each prompt's own answer preferred over the next recipe's answer."""
    examples = read_examples(DATA)[: n + 1]
    path = folder / "pairs.jsonl"
    with open(path, "w", encoding="utf-8") as handle:
        for example, other in zip(examples, examples[1:], strict=False):
            handle.write(json.dumps({
                "input": {"messages": [m.model_dump(exclude_none=True) for m in example.prompt_messages()]},
                "preferred_output": [{"role": "assistant", "content": example.reference()}],
                "non_preferred_output": [{"role": "assistant", "content": other.reference()}],
            }) + "\n")  # fmt: skip
    return path


def ftlab_tokens_per_second(model: str, pairs_file: Path, steps: int, batch_size: int) -> tuple[float, float]:
    """(tokens/s of `train_step` with DPO's loss, seconds of the one reference pass over the measured pairs)."""
    config = TrainConfig(model=model, method="dpo", batch_size=batch_size, **LORA).resolve(steps * batch_size)
    tokenizer = load_tokenizer(model)
    pairs = tokenize_pairs(tokenizer, pairs_file, config.max_length)
    accelerator, precision = accelerator_and_precision(config)
    seed_everything(0)
    loss_module, optimizer, scheduler = prepare_training(
        config, accelerator, precision, steps + 1, lambda m: PreferenceLoss(m, float(config.beta))
    )
    started = time.perf_counter()
    reference = reference_logps(loss_module, pairs, batch_size, tokenizer.pad_token_id, accelerator.device,
                                precision, adapter_off=True)  # fmt: skip
    reference_seconds = time.perf_counter() - started
    tokens, elapsed = 0, 0.0
    for n in range(steps + 1):
        chunk = list(range(n * batch_size, (n + 1) * batch_size))
        batch = collate_pairs([pairs[i] for i in chunk], tokenizer.pad_token_id, accelerator.device,
                              reference[chunk])  # fmt: skip
        start = time.perf_counter()
        loss, *_ = train_step(accelerator, loss_module, optimizer, scheduler, batch, precision, 1.0)
        loss.item()
        if n > 0:
            elapsed += time.perf_counter() - start
            tokens += int(batch["attention_mask"].sum())
    return tokens / elapsed, reference_seconds


def trl_tokens_per_second(model: str, pairs_file: Path, steps: int, batch_size: int, out: Path) -> float:
    """TRL's DPOTrainer with a peft LoRA, conversational preference data, timed after step 1."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    rows = [{"prompt": template_messages(p.prompt_messages()),
             "chosen": template_messages(p.preferred_output), "rejected": template_messages(p.non_preferred_output)}
            for p in read_preferences(pairs_file)][: (steps + 1) * batch_size]  # fmt: skip
    tokenizer = load_tokenizer(model)
    policy = AutoModelForCausalLM.from_pretrained(resolve_model(model), dtype=torch.float32)

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self._start = 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            self._start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.times.append(time.perf_counter() - self._start)

    timer = StepTimer()
    args = DPOConfig(output_dir=str(out), per_device_train_batch_size=batch_size, max_steps=steps + 1, use_cpu=True,
                     bf16=True, logging_steps=1000, save_strategy="no", report_to=[], seed=0,
                     dataloader_num_workers=0)  # fmt: skip
    lora = LoraConfig(r=LORA["lora_r"], lora_alpha=LORA["lora_alpha"], target_modules="all-linear",
                      task_type="CAUSAL_LM")  # fmt: skip
    trainer = DPOTrainer(model=policy, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                         peft_config=lora, callbacks=[timer])  # fmt: skip
    data = trainer.train_dataset
    lengths = [2 * len(p) + len(c) + len(r) for p, c, r in zip(data["prompt_ids"], data["chosen_ids"],
                                                                 data["rejected_ids"], strict=True)]  # fmt: skip
    trainer.train()
    per_step = statistics.mean(lengths) * batch_size  # the order is shuffled: the mean pair, per step
    return per_step * steps / sum(timer.times[1:])


def measure(which: str, args: argparse.Namespace, pairs_file: Path) -> dict:
    """One measurement in a fresh process (`--only`), its figures read back as JSON."""
    command = [sys.executable, __file__, "--only", which, "--pairs", str(pairs_file), "--model", args.model,
               "--steps", str(args.steps), "--batch-size", str(args.batch_size)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=BUNDLED_MODEL)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=4, help="pairs per step")
    parser.add_argument("--rounds", type=int, default=2, help="alternating ftlab/TRL rounds; medians reported")
    parser.add_argument("--only", choices=["ftlab", "trl"], help=argparse.SUPPRESS)
    parser.add_argument("--pairs", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    set_threads()
    if args.only == "ftlab":
        speed, reference = ftlab_tokens_per_second(args.model, args.pairs, args.steps, args.batch_size)
        print(json.dumps({"tokens_per_s": speed, "reference_seconds": reference}))
        return
    if args.only == "trl":
        out = Path(tempfile.mkdtemp(prefix="ftlab-dpo-trl-"))
        print(json.dumps({"tokens_per_s": trl_tokens_per_second(args.model, args.pairs, args.steps,
                                                                args.batch_size, out)}))  # fmt: skip
        return
    folder = Path(tempfile.mkdtemp(prefix="ftlab-dpo-bench-"))
    pairs_file = preference_file(folder, (args.steps + 1) * args.batch_size)
    ftlab_runs, reference_runs, trl_runs = [], [], []
    for round_ in range(args.rounds):
        ours = measure("ftlab", args, pairs_file)
        speed, reference = ours["tokens_per_s"], ours["reference_seconds"]
        ftlab_runs.append(speed)
        reference_runs.append(reference)
        trl_runs.append(measure("trl", args, pairs_file)["tokens_per_s"])
        print(f"round {round_ + 1}: ftlab {ftlab_runs[-1]:.0f} tok/s (+ {reference:.1f} s once for the reference), "
              f"TRL DPOTrainer {trl_runs[-1]:.0f} tok/s", flush=True)  # fmt: skip
    figures = {"model": args.model, "threads": torch.get_num_threads(), "pairs_per_step": args.batch_size,
               "steps": args.steps, "ftlab_tokens_per_s": round(statistics.median(ftlab_runs), 1),
               "ftlab_reference_seconds": round(statistics.median(reference_runs), 2),
               "trl_tokens_per_s": round(statistics.median(trl_runs), 1)}  # fmt: skip
    figures["ratio_ftlab_over_trl"] = round(figures["ftlab_tokens_per_s"] / figures["trl_tokens_per_s"], 2)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
