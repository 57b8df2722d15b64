"""Splitting a JSONL file into train / val / test, reproducibly and without leaking a source across splits.

Lines are written byte for byte as they were (only a missing final newline is added), in their original
order within each split, so the same file and seed always give byte-identical outputs. With `group_by`,
whole groups (e.g. every example generated from one source document) are assigned to one split.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftlab.data.schema import DataError

SPLITS = ("train", "val", "test")


@dataclass
class SplitResult:
    out_dir: Path
    counts: dict[str, int] = field(default_factory=dict)
    groups: dict[str, int] = field(default_factory=dict)

    def paths(self) -> dict[str, Path]:
        return {name: self.out_dir / f"{name}.jsonl" for name in SPLITS}

    def to_dict(self) -> dict:
        return {
            "out": str(self.out_dir),
            "files": {name: str(path) for name, path in self.paths().items()},
            "examples": self.counts,
            "groups": self.groups,
        }


def group_value(obj: Any, key: str, *, path: str | Path, line: int) -> str:
    """The value at `key` (dotted for nesting: `metadata.source`; a bare key is also looked up in `metadata`)."""
    if not isinstance(obj, dict):
        raise DataError(f"expected a JSON object to read '{key}' from", path=path, line=line, field=key)
    value: Any = obj
    for part in key.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        else:
            value = None
            break
    if value is None and "." not in key and isinstance(obj.get("metadata"), dict):
        value = obj["metadata"].get(key)
    if value is None:
        raise DataError(
            f"the group key '{key}' is missing (looked at '{key}' and 'metadata.{key}')",
            path=path,
            line=line,
            field=key,
        )
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def split_file(
    path: str | Path,
    out_dir: str | Path,
    *,
    val: float = 0.15,
    test: float = 0.15,
    seed: int = 42,
    group_by: str | None = None,
) -> SplitResult:
    """Write `out_dir/train.jsonl`, `val.jsonl` and `test.jsonl`; `val` and `test` are shares of the examples."""
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise ValueError(f"--val {val} and --test {test} must be shares in [0, 1) that leave some training data")
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", path=path)

    lines: list[bytes] = []
    group_of: list[int] = []
    group_ids: dict[str, int] = {}
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            if group_by is None:
                group = len(lines)  # every line its own group
            else:
                try:
                    obj = json.loads(raw)
                except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                    raise DataError(f"not valid JSON ({exc})", path=path, line=number) from None
                value = group_value(obj, group_by, path=path, line=number)
                group = group_ids.setdefault(value, len(group_ids))
            group_of.append(group)
            lines.append(raw if raw.endswith(b"\n") else raw + b"\n")
    if not lines:
        raise DataError("the file has no examples", path=path)

    n = len(lines)
    n_groups = n if group_by is None else len(group_ids)
    sizes = [0] * n_groups
    for group in group_of:
        sizes[group] += 1
    order = list(range(n_groups))
    random.Random(seed).shuffle(order)
    targets = {"test": round(n * test), "val": round(n * val)}
    assigned = {"train": 0, "val": 0, "test": 0}
    split_of_group = [""] * n_groups
    for group in order:
        name = next((s for s in ("test", "val") if assigned[s] < targets[s]), "train")
        split_of_group[group] = name
        assigned[name] += sizes[group]

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = SplitResult(out_dir=out_dir)
    for name, target in result.paths().items():
        with open(target, "wb") as handle:
            for line, group in zip(lines, group_of, strict=True):
                if split_of_group[group] == name:
                    handle.write(line)
        result.counts[name] = assigned[name]
        result.groups[name] = sum(1 for s in split_of_group if s == name)
    return result
