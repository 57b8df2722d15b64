"""The recipe in several processes, for a caller that stays in its own: `train_in_processes` starts `train()`
under `accelerate launch` and relays it, so the caller (the service's worker) keeps its `on_event` and
`should_stop` exactly as if `train()` ran in its process.

The first training process speaks a line protocol on its stdout: each event as a JSON line, a question before
each step whether to stop (answered on its stdin; a closed stdin means the caller is gone: stop), and at the end
the result. Lines without the mark (anything a library prints) pass through to the caller's stdout, and the
processes' stderr to the caller's stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ftlab.config import TrainConfig

MARK = "@ftlab-launch "  # begins every protocol line, so a library's own output is never mistaken for one


class TrainingProcessesFailed(RuntimeError):
    """The training processes ended without a result; the message ends with the last lines they wrote to stderr."""


def launch_options(processes: int, accelerate_config: Path | None = None) -> list[str]:
    """`accelerate launch` options for `processes` processes on this machine, on a free port.

    With an accelerate config, `processes` 1 leaves the number to the config. Without one: one process per GPU,
    or CPU processes talking over gloo. accelerate's own `--cpu` starts a single process (several CPU processes
    go through mpirun there), so CPU processes are started by its multi-GPU launcher (torchrun) too, and the
    recipe's `Accelerator(cpu=True)` makes them a gloo group.
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    options = ["--num_machines", "1", "--main_process_port", str(port)]
    options += ["--num_processes", str(processes)] if processes > 1 or accelerate_config is None else []
    if accelerate_config is not None:
        return ["--config_file", str(accelerate_config), *options]
    return [*options, "--multi_gpu", "--mixed_precision", "no", "--dynamo_backend", "no"]


def train_in_processes(
    processes: int,
    config: TrainConfig,
    train_file: str | Path,
    validation_file: str | Path | None,
    output_dir: str | Path,
    *,
    on_event: Callable[[Any], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    resume: bool = False,
    accelerate_config: Path | None = None,
):
    """`train()` in `processes` processes started by `accelerate launch`, with the same arguments and the same
    `TrainResult`; `accelerate_config` (FSDP, DeepSpeed, …) is passed to `accelerate launch` (see `launch_options`).

    The CPU threads of this process are shared among the training processes. An error in them is raised here
    as `TrainingProcessesFailed`, naming the error and ending with their last lines of stderr.
    """
    from ftlab.train.recipe import TrainEvent

    if processes < 2 and accelerate_config is None:
        raise ValueError(f"train_in_processes needs at least 2 processes, not {processes}: call train() itself")
    arguments = {"config": config.model_dump(mode="json"), "train_file": str(train_file), "resume": resume,
                 "validation_file": str(validation_file) if validation_file else None, "output_dir": str(output_dir)}
    command = [sys.executable, "-m", "accelerate.commands.launch", *launch_options(processes, accelerate_config),
               "-m", "ftlab.train.launch", json.dumps(arguments)]  # fmt: skip
    threads = int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1)
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, threads // processes)), "PYTHONUNBUFFERED": "1"}
    child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=env)  # fmt: skip
    stderr_tail: deque[str] = deque(maxlen=20)
    relay = threading.Thread(target=_relay_stderr, args=(child.stderr, stderr_tail), daemon=True)
    relay.start()
    reply: dict[str, Any] = {}
    try:
        for line in child.stdout:
            if not line.startswith(MARK):
                sys.stdout.write(line)
                continue
            message = json.loads(line[len(MARK) :])
            kind = message.pop("kind")
            if kind == "event" and on_event is not None:
                on_event(TrainEvent(**message))
            elif kind == "stop?":
                child.stdin.write("stop\n" if should_stop is not None and should_stop() else "go\n")
                child.stdin.flush()
            elif kind in ("result", "error"):
                reply = {"kind": kind, **message}
        child.wait()
    finally:
        if child.poll() is None:  # the caller failed: stop the processes (torchrun passes SIGTERM on to them)
            child.stdin.close()
            child.terminate()
            child.wait()
        relay.join(timeout=10)
    if reply.get("kind") == "result":
        return result_from_dict(reply)
    why = reply.get("error") or f"the training processes exited with status {child.returncode}"
    raise TrainingProcessesFailed(f"{why}\n" + "".join(stderr_tail))


def _relay_stderr(stream, tail: deque[str]) -> None:
    for line in stream:
        sys.stderr.write(line)
        tail.append(line)


def result_to_dict(result) -> dict[str, Any]:
    """A `TrainResult` as JSON-ready data."""
    return {**asdict(result), "config": result.config.model_dump(mode="json")}


def result_from_dict(data: dict[str, Any]):
    """The `TrainResult` that `result_to_dict` wrote."""
    from ftlab.train.recipe import Checkpoint, TrainResult

    best = data["best_checkpoint"]
    return TrainResult(
        output_dir=Path(data["output_dir"]), config=TrainConfig.model_validate(data["config"]),
        dataset_sha256=data["dataset_sha256"], checkpoints=[Checkpoint.from_dict(c) for c in data["checkpoints"]],
        final_dir=Path(data["final_dir"]), metrics_csv=Path(data["metrics_csv"]), trained_tokens=data["trained_tokens"],
        status=data["status"], best_checkpoint=Checkpoint.from_dict(best) if best else None,
        stopped_early=data["stopped_early"], peak_memory_mib=data["peak_memory_mib"],
    )  # fmt: skip


def _say(kind: str, **data: Any) -> None:
    print(MARK + json.dumps({"kind": kind, **data}, default=str), flush=True)


def _stop_asked() -> bool:
    _say("stop?")
    return sys.stdin.readline().strip() != "go"  # "" when the caller has gone away


def main(argv: list[str] | None = None) -> None:
    """One of the training processes `train_in_processes` started; the first one speaks for them all."""
    from ftlab.train.recipe import is_main_process, train

    parser = argparse.ArgumentParser(prog="python -m ftlab.train.launch", description=__doc__)
    parser.add_argument("arguments", help="train()'s arguments as JSON (written by train_in_processes)")
    arguments = json.loads(parser.parse_args(argv).arguments)
    first = is_main_process()
    try:
        result = train(
            TrainConfig.model_validate(arguments["config"]), arguments["train_file"], arguments["validation_file"],
            arguments["output_dir"], on_event=lambda event: _say("event", **asdict(event)),
            should_stop=_stop_asked if first else None, resume=arguments["resume"], progress=False,
        )  # fmt: skip
    except Exception as exc:
        if first:
            _say("error", error=f"{type(exc).__name__}: {exc}")
        raise
    if first:
        _say("result", **result_to_dict(result))


if __name__ == "__main__":
    main()
