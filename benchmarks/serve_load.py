"""Chat completions under load: the official `AsyncOpenAI` client against a real `ftlab serve` on 127.0.0.1.

    python benchmarks/serve_load.py [--levels 1 8 32 64] [--tokens 32] [--requests-per-client 2] [--model NAME]

The server gets its own FTLAB_HOME. Four adapters are trained for the base through the API itself (10 short
chats, one epoch of one step each: tiny fine-tunes, made quickly, whose cost when served is that of any LoRA
adapter of the same rank), so the load mixes five models: the base and its four `ft:` names, one after the
other. At each level, that many clients send streamed requests (greedy, `--tokens` new tokens at most) back to
back; the script prints generated tokens/s, p50/p95 latency and time to first token, and the tokens/s ratio
to level 1 (one client: sequential). Goal on a 2-core CPU: at 32 clients >= 4x sequential, p95 < 3x p50.
Run it on a quiet machine: two CPU-heavy processes at once slow each other down many times over.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from openai import AsyncOpenAI, OpenAI

REPO = Path(__file__).resolve().parents[1]
TOPICS = ["the sea", "a cat", "rain", "bread", "a train", "the moon", "music", "a garden", "snow", "coffee"]
TRAIN = [("I love this!", "😍"), ("This is terrible.", "😡"), ("What a sunny day", "☀️"), ("I am so tired", "😴"),
         ("Happy birthday!", "🎂"), ("It is raining again", "🌧️"), ("We won the game!", "🏆"),
         ("I feel sick", "🤒"), ("Pizza for dinner", "🍕"), ("Good night", "🌙")]  # fmt: skip


def start_server(home: Path, args: argparse.Namespace) -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "FTLAB_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    env.pop("FTLAB_DATABASE_URL", None)
    command = [sys.executable, "-m", "ftlab.cli.serve", "serve", "--port", str(port),
               "--max-batch-size", str(args.max_batch_size)]  # fmt: skip
    with open(home / "server.log", "ab") as log:
        server = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)  # fmt: skip
    for _ in range(600):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return server, f"http://127.0.0.1:{port}/v1"
        except httpx.HTTPError:
            time.sleep(0.5)
    raise SystemExit(f"ftlab serve did not start: see {home / 'server.log'}")


def train_adapters(client: OpenAI, model: str, home: Path, n: int = 4) -> list[str]:
    """`n` fine-tuned models of `model`, trained through the API (one step each)."""
    rows = [{"messages": [{"role": "user", "content": text}, {"role": "assistant", "content": emoji}]}
            for text, emoji in TRAIN]  # fmt: skip
    (home / "train.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    file = client.files.create(file=(home / "train.jsonl").open("rb"), purpose="fine-tune")
    jobs = [client.fine_tuning.jobs.create(training_file=file.id, model=model, suffix=f"load{i}",
                                           hyperparameters={"n_epochs": 1, "batch_size": len(rows)}, seed=i)
            for i in range(n)]  # fmt: skip
    names = []
    for job in jobs:
        while (job := client.fine_tuning.jobs.retrieve(job.id)).status not in ("succeeded", "failed", "cancelled"):
            time.sleep(1)
        if job.status != "succeeded":
            raise SystemExit(f"job {job.id} {job.status}: {job.error}")
        names.append(job.fine_tuned_model)
    return names


async def one_request(client: AsyncOpenAI, model: str, i: int, tokens: int) -> dict:
    started = time.perf_counter()
    first, usage = None, None
    stream = await client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": f"Tell me about {TOPICS[i % len(TOPICS)]}."}],
        max_tokens=tokens, temperature=0, stream=True, stream_options={"include_usage": True},
    )  # fmt: skip
    async for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter() - started
        usage = chunk.usage or usage
    latency = time.perf_counter() - started
    return {"latency": latency, "ttft": first if first is not None else latency, "tokens": usage.completion_tokens}


async def level(base_url: str, models: list[str], clients: int, per_client: int, tokens: int) -> dict:
    client = AsyncOpenAI(base_url=base_url, api_key="none", max_retries=5, timeout=3600)
    counter = iter(range(10**9))

    async def worker() -> list[dict]:
        results = []
        for _ in range(per_client):
            i = next(counter)
            results.append(await one_request(client, models[i % len(models)], i, tokens))
        return results

    started = time.perf_counter()
    results = [r for rs in await asyncio.gather(*(worker() for _ in range(clients))) for r in rs]
    wall = time.perf_counter() - started
    await client.close()
    latencies = sorted(r["latency"] for r in results)
    return {
        "clients": clients, "requests": len(results), "tok_s": sum(r["tokens"] for r in results) / wall,
        "p50": statistics.median(latencies), "p95": latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))],
        "ttft_p50": statistics.median(r["ttft"] for r in results),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct", help="The base model (alias or folder).")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--tokens", type=int, default=32, help="max_tokens of every request")
    parser.add_argument("--requests-per-client", type=int, default=2)
    parser.add_argument("--sequential-requests", type=int, default=10, help="requests of the 1-client level")
    parser.add_argument("--max-batch-size", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ftlab-load-") as tmp:
        home = Path(tmp)
        server, base_url = start_server(home, args)
        try:
            print(f"training 4 adapters of {args.model} through the API …", flush=True)
            models = [args.model, *train_adapters(OpenAI(base_url=base_url, api_key="none"), args.model, home)]
            asyncio.run(level(base_url, models, len(models), 1, 2))  # warm-up: the base and adapters load
            print(f"{'clients':>7} {'requests':>8} {'tok/s':>8} {'x seq':>6} {'p50 s':>7} {'p95 s':>7} "
                  f"{'p95/p50':>7} {'TTFT p50 s':>10}", flush=True)  # fmt: skip
            sequential = None
            for clients in args.levels:
                per_client = args.sequential_requests if clients == 1 else args.requests_per_client
                row = asyncio.run(level(base_url, models, clients, per_client, args.tokens))
                sequential = sequential or row["tok_s"]
                print(f"{row['clients']:>7} {row['requests']:>8} {row['tok_s']:>8.1f} "
                      f"{row['tok_s'] / sequential:>6.2f} {row['p50']:>7.2f} {row['p95']:>7.2f} "
                      f"{row['p95'] / row['p50']:>7.2f} {row['ttft_p50']:>10.2f}", flush=True)  # fmt: skip
            batches = httpx.get(base_url.removesuffix("/v1") + "/health").json()["generation"]
            print(f"server: {batches['batches']} batches, {batches['rows']} rows, largest {batches['largest_batch']}")
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(60)


if __name__ == "__main__":
    main()
