"""Training throughput: ftlab's recipe vs TRL's SFTTrainer, and vs this machine's matmul roofline.

Same model (bundled SmolLM2-135M-Instruct, or `--model`, or a randomly initialised `--random-model 1b` Llama for
throughput on a GPU), same data (the demo's recipe training set), same peft LoRA config (r16, alpha 32, all
linear layers), same batch size and threads, alternating so that load from elsewhere hits all alike. ftlab runs
with its defaults for the device (on an AMX CPU or a GPU: frozen base weights in bf16, bf16 autocast, fp32
adapter). TRL runs twice: with its defaults as its docs recommend (`bf16=True`, plus `use_cpu=True` on a CPU:
bf16 autocast on fp32 weights, its default gradient checkpointing), the goal's reference; and with the base
loaded in bf16 like ftlab's, so the ratio at equal precision is printed too. Each arm runs in a fresh process,
so the peak memory printed for it (resident; GPU memory torch allocated on CUDA) is its own.

The roofline is the best matmul rate of several shapes in fp32 and, where it is native, bf16 (a CPU without it
computes bf16 far slower than fp32, and ftlab then trains in fp32), each warmed up and timed best of N runs of at least
0.2 s: square ones (1024, 2048, 3072 on a CPU; 4096, 8192 on a GPU) and the model's own MLP shape (2048 tokens ×
hidden @ hidden × intermediate, 576 × 1536 for SmolLM2-135M). A LoRA step costs ≈ 4 × parameters FLOPs per
token (forward 2N, backward through activations 2N; the frozen weights need no weight gradients); ftlab's share
of both rooflines is printed and, on a GPU, its MFU against the GPU's dense bf16 peak (`--peak-tflops`, or known
from its name).

    python benchmarks/train_throughput.py [--steps 10] [--batch-size 8] [--rounds 2] [--device cpu|cuda]
    python benchmarks/train_throughput.py --device cuda --random-model 1b --batch-size 16   # on a GPU
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import resource
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from ftlab.config import BUNDLED_MODEL  # noqa: E402
from ftlab.data.schema import read_examples, template_messages  # noqa: E402
from ftlab.models import cpu_has_bf16, load_tokenizer, resolve_model, set_threads  # noqa: E402
from ftlab.train.recipe import measure_throughput  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "examples" / "recipes" / "train.jsonl"
LORA = {"lora_r": 16, "lora_alpha": 32}
SQUARES = {"cpu": [1024, 2048, 3072], "cuda": [4096, 8192]}
MODEL_SHAPE_TOKENS = 2048  # rows of the model-shaped matmul: about one batch of chats
MIN_TIMING_S = 0.2  # each roofline timing runs this long at least, so timer and launch noise do not count
# Dense bf16 tensor-core peaks (NVIDIA's datasheets, without sparsity), by a piece of the device name.
GPU_PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "GH200": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0,
                   "A10": 125.0, "RTX 4090": 165.2}  # fmt: skip


# ---------------------------------------------------------------------------------------------------------
# The roofline
# ---------------------------------------------------------------------------------------------------------


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def matmul_flops(m: int, k: int, n: int, device: str, dtype: torch.dtype, best_of: int) -> float:
    """FLOP/s of an (m×k) @ (k×n) matmul on all threads: warmed up, then the best of `best_of` timings of as many
    products as take `MIN_TIMING_S`."""
    a = torch.randn(m, k, dtype=dtype, device=device)
    b = torch.randn(k, n, dtype=dtype, device=device)
    for _ in range(2):  # threads spun up, kernels chosen, caches warm
        a @ b
    synchronize(device)
    start = time.perf_counter()
    a @ b
    synchronize(device)
    repeats = max(1, math.ceil(MIN_TIMING_S / (time.perf_counter() - start)))
    best = 0.0
    for _ in range(best_of):
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        synchronize(device)
        best = max(best, 2 * m * k * n * repeats / (time.perf_counter() - start))
    return best


def roofline(device: str, squares: list[int], model_shape: tuple[int, int, int], best_of: int) -> dict[str, float]:
    """The best matmul rate of each shape and dtype, in FLOP/s: squares, and the model's own MLP shape. bf16 only
    where it is native (a GPU, or a CPU with AVX-512 BF16 or AMX): emulated it is ~50x slower and never the roof."""
    shapes = {f"{s}x{s}x{s}": (s, s, s) for s in squares}
    shapes["model {}x{}x{}".format(*model_shape)] = model_shape
    dtypes = [torch.float32] + ([torch.bfloat16] if device == "cuda" or cpu_has_bf16() else [])
    return {f"{str(dtype).removeprefix('torch.')} {name}": matmul_flops(*shape, device, dtype, best_of)
            for dtype in dtypes for name, shape in shapes.items()}  # fmt: skip


# ---------------------------------------------------------------------------------------------------------
# The arms, each in a fresh process
# ---------------------------------------------------------------------------------------------------------


def peak_memory(device: str) -> dict[str, float]:
    """This process's peak resident memory and, on CUDA, the peak GPU memory torch allocated, in MiB."""
    peak = {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device == "cuda":
        peak["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return peak


def ftlab_arm(model: str, steps: int, batch_size: int, device: str) -> dict[str, float]:
    """ftlab's training step, exactly as the recipe runs it (the calibration `data estimate` uses too)."""
    set_threads()
    speed = measure_throughput(model, read_examples(DATA), batch_size=batch_size, steps=steps)
    return {"tokens_per_s": speed, **peak_memory(device)}


def trl_arm(model: str, steps: int, batch_size: int, device: str, bf16_base: bool) -> dict[str, float]:
    """TRL's SFTTrainer with peft LoRA, prompt-completion data (loss on the completion), timed after step 1."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    set_threads()
    rows = []
    for example in read_examples(DATA):
        messages = template_messages(example.messages)
        rows.append({"prompt": messages[:-1], "completion": messages[-1:]})
    tokenizer = load_tokenizer(model)
    dtype = torch.bfloat16 if bf16_base else torch.float32
    base = AutoModelForCausalLM.from_pretrained(resolve_model(model), dtype=dtype)

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self._start = 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            synchronize(device)
            self._start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            synchronize(device)
            self.times.append(time.perf_counter() - self._start)

    timer = StepTimer()
    with tempfile.TemporaryDirectory() as out:
        args = SFTConfig(
            output_dir=out, per_device_train_batch_size=batch_size, max_steps=steps + 1, use_cpu=device == "cpu",
            bf16=True, logging_steps=1000, save_strategy="no", report_to=[], seed=0, dataloader_num_workers=0,
            completion_only_loss=True,
        )
        lora = LoraConfig(r=LORA["lora_r"], lora_alpha=LORA["lora_alpha"], target_modules="all-linear",
                          task_type="CAUSAL_LM")  # fmt: skip
        trainer = SFTTrainer(model=base, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                             peft_config=lora, callbacks=[timer])  # fmt: skip
        # Real tokens per step: the mean tokenised length TRL itself produced, times the batch size.
        lengths = [len(ids) for ids in trainer.train_dataset["input_ids"]]
        trainer.train()
    per_step = statistics.mean(lengths) * batch_size
    return {"tokens_per_s": per_step * steps / sum(timer.times[1:]), **peak_memory(device)}


def in_fresh_process(function, *args) -> dict[str, float]:
    """Run one arm in a process of its own: its peak memory is its own, and no arm inherits another's allocator."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


# ---------------------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------------------


def random_llama(size: str) -> str:
    """A randomly initialised Llama-architecture model with the bundled tokenizer, for throughput where no
    weights can be downloaded: `1b` is Llama-3.2-1B's shape (16 layers, hidden 2048, MLP 8192, 8 KV heads)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    if size != "1b":
        raise SystemExit(f"--random-model knows 1b, not {size}")
    folder = Path(tempfile.gettempdir()) / f"ftlab-bench-llama-{size}"
    if not (folder / "config.json").exists():
        tokenizer = AutoTokenizer.from_pretrained(resolve_model(BUNDLED_MODEL))
        config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                             num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=8192,
                             tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                             eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)  # fmt: skip
        torch.manual_seed(0)
        LlamaForCausalLM(config).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    return str(folder)


def model_sizes(model: str) -> tuple[int, tuple[int, int, int]]:
    """The model's parameter count and its MLP matmul shape (tokens, hidden, intermediate)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(resolve_model(model))
    with torch.device("meta"):
        n_params = sum(p.numel() for p in AutoModelForCausalLM.from_config(config).parameters())
    return n_params, (MODEL_SHAPE_TOKENS, config.hidden_size, config.intermediate_size)


def gpu_peak_flops(override_tflops: float | None) -> tuple[float | None, str]:
    name = torch.cuda.get_device_name()
    if override_tflops:
        return override_tflops * 1e12, name
    peak = next((tflops for piece, tflops in GPU_PEAK_TFLOPS.items() if piece in name), None)
    return (peak * 1e12 if peak else None), name


# ---------------------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2, help="alternating ftlab/TRL rounds; medians reported")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--model", default=BUNDLED_MODEL, help="any base model ftlab loads")
    parser.add_argument("--random-model", help="'1b': a randomly initialised Llama of that size instead of --model")
    parser.add_argument("--arms", default="ftlab,trl,trl-bf16", help="which of ftlab,trl,trl-bf16 to run")
    parser.add_argument("--sizes", help="square matmul sizes for the roofline, comma-separated")
    parser.add_argument("--best-of", type=int, default=5, help="roofline timings per shape; the best counts")
    parser.add_argument("--peak-tflops", type=float, help="the GPU's dense bf16 peak, for MFU")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("skipped: --device cuda needs a CUDA GPU, and this machine has none")
        return
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # the arms' processes train on the CPU even where a GPU is
    set_threads()
    model = random_llama(args.random_model) if args.random_model else args.model
    arms = {"ftlab": (ftlab_arm, ()), "trl": (trl_arm, (False,)), "trl-bf16": (trl_arm, (True,))}
    chosen = [arm for arm in args.arms.split(",") if arm]
    unknown = set(chosen) - set(arms)
    if unknown:
        raise SystemExit(f"unknown arms {sorted(unknown)}: choose from {sorted(arms)}")
    squares = [int(s) for s in args.sizes.split(",")] if args.sizes else SQUARES[args.device]
    n_params, shape = model_sizes(model)

    runs: dict[str, list[dict[str, float]]] = {arm: [] for arm in chosen}
    roofs: list[dict[str, float]] = []
    for round_ in range(args.rounds):
        roofs.append(roofline(args.device, squares, shape, args.best_of))
        for arm in chosen:
            function, extra = arms[arm]
            runs[arm].append(in_fresh_process(function, model, args.steps, args.batch_size, args.device, *extra))
        said = ", ".join(f"{arm} {runs[arm][-1]['tokens_per_s']:.0f} tok/s" for arm in chosen)
        print(f"round {round_ + 1}: {said}; best matmul {max(roofs[-1].values()) / 1e9:.0f} GFLOP/s", flush=True)

    figures: dict = {"device": args.device, "model": model, "parameters": n_params, "threads": torch.get_num_threads(),
                     "batch_size": args.batch_size, "steps": args.steps, "rounds": args.rounds}  # fmt: skip
    for arm in chosen:
        for key in runs[arm][0]:
            figures[f"{arm}_{key}"] = round(statistics.median(r[key] for r in runs[arm]), 1)
    shapes = {name: max(r[name] for r in roofs) for name in roofs[0]}  # best over rounds
    figures["matmul_gflops"] = {name: round(flops / 1e9, 1) for name, flops in shapes.items()}
    roof_name = max((name for name in shapes if " model " not in name), key=shapes.get)
    model_name = max((name for name in shapes if " model " in name), key=shapes.get)
    roof, model_roof = shapes[roof_name], shapes[model_name]
    lines = []
    if "ftlab" in chosen:
        flops = figures["ftlab_tokens_per_s"] * 4 * n_params
        figures.update(ftlab_gflops=round(flops / 1e9, 1), share_of_roofline=round(flops / roof, 3),
                       share_of_model_shape_matmul=round(flops / model_roof, 3))  # fmt: skip
        lines.append(f"ftlab reaches {100 * flops / roof:.0f}% of the best matmul ({roof_name}: {roof / 1e9:,.0f} "
                     f"GFLOP/s, {roof / (4 * n_params):,.0f} tok/s) and {100 * flops / model_roof:.0f}% of the "
                     f"model-shaped one ({model_name}: {model_roof / 1e9:,.0f} GFLOP/s)")  # fmt: skip
        for arm in ("trl", "trl-bf16"):
            if arm in chosen:
                ratio = figures["ftlab_tokens_per_s"] / figures[f"{arm}_tokens_per_s"]
                figures[f"ratio_ftlab_over_{arm}"] = round(ratio, 2)
                lines.append(f"ftlab / {'TRL defaults' if arm == 'trl' else 'TRL with a bf16 base'} = {ratio:.2f}x")
        if args.device == "cuda":
            peak, name = gpu_peak_flops(args.peak_tflops)
            figures["gpu"] = name
            if peak:
                figures["mfu"] = round(flops / peak, 3)
                lines.append(f"MFU {100 * flops / peak:.1f}% of {name}'s {peak / 1e12:.0f} TFLOPS dense bf16")
            else:
                lines.append(f"MFU: unknown peak for {name}; pass --peak-tflops")
    for arm in chosen:
        memory = f"{figures[f'{arm}_peak_rss_mib']:,.0f} MiB resident"
        if f"{arm}_peak_gpu_mib" in figures:
            memory += f", {figures[f'{arm}_peak_gpu_mib']:,.0f} MiB GPU"
        lines.append(f"peak memory of {arm}: {memory}")
    print(json.dumps(figures, indent=2))
    print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
