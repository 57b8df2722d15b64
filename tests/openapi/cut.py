"""Cut OpenAI's published OpenAPI spec down to the operations ftlab serves: `openai-subset.yaml` here.

    python tests/openapi/cut.py OPENAPI_YAML_OR_JSON COMMIT > tests/openapi/openai-subset.yaml

The input is `openapi.yaml` (or `.json`) of github.com/openai/openai-openapi at COMMIT. Kept: the operations
below and every schema they reference, with OpenAI's descriptions; dropped: the documentation extras
(`x-oaiMeta`, …) and examples. The file notes its source commit and the few corrections made where OpenAI's
spec disagrees with OpenAI's own API and client (listed in PATCHES, each with its reason).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

OPERATIONS = {
    "/files": ["get", "post"],
    "/files/{file_id}": ["get", "delete"],
    "/files/{file_id}/content": ["get"],
    "/fine_tuning/jobs": ["get", "post"],
    "/fine_tuning/jobs/{fine_tuning_job_id}": ["get"],
    "/fine_tuning/jobs/{fine_tuning_job_id}/cancel": ["post"],
    "/fine_tuning/jobs/{fine_tuning_job_id}/checkpoints": ["get"],
    "/fine_tuning/jobs/{fine_tuning_job_id}/events": ["get"],
    "/models": ["get"],
    "/models/{model}": ["get", "delete"],
    "/chat/completions": ["post"],
}
DROPPED = ("x-oaiMeta", "x-oaiExpandable", "x-oaiTypeLabel", "example", "examples")
# (JSON pointer, value, reason): where the spec contradicts the API it describes.
PATCHES = [
    ("/components/schemas/OpenAIFile/properties/purpose/enum/-", "evals",
     "uploads accept purpose 'evals' (CreateFileRequest) and the file keeps it"),
    ("/components/schemas/ListFilesResponse/properties/first_id", {"anyOf": [{"type": "string"}, {"type": "null"}]},
     "an empty page has no first or last id: null, as the checkpoints list's schema allows"),
    ("/components/schemas/ListFilesResponse/properties/last_id", {"anyOf": [{"type": "string"}, {"type": "null"}]},
     "as first_id"),
]  # fmt: skip


def _refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
        return found.union(*(_refs(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_refs(v) for v in node))
    return set()


def _strip(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip(v) for k, v in node.items() if k not in DROPPED}
    if isinstance(node, list):
        return [_strip(v) for v in node]
    return node


def _apply(spec: dict, pointer: str, value: Any) -> None:
    *path, last = pointer.strip("/").split("/")
    node = spec
    for part in path:
        node = node[part]
    if last == "-":
        node.append(value)
    else:
        node[last] = value


def cut(spec: dict) -> dict:
    paths = {path: {m: spec["paths"][path][m] for m in methods} for path, methods in OPERATIONS.items()}
    subset = {"openapi": spec["openapi"], "info": spec["info"], "servers": [{"url": "/v1"}],
              "security": spec["security"], "paths": paths,
              "components": {"securitySchemes": spec["components"]["securitySchemes"], "schemas": {}}}  # fmt: skip
    pending = _refs(paths)
    while pending:
        ref = pending.pop()
        kind, name = ref.split("/")[-2:]
        if name in subset["components"].setdefault(kind, {}):
            continue
        subset["components"][kind][name] = spec["components"][kind][name]
        pending |= _refs(spec["components"][kind][name])
    subset = _strip(subset)
    for pointer, value, _reason in PATCHES:
        _apply(subset, pointer, value)
    return subset


def main() -> None:
    source, commit = Path(sys.argv[1]), sys.argv[2]
    text = source.read_text()
    spec = json.loads(text) if source.suffix == ".json" else yaml.safe_load(text)
    header = [f"# OpenAI's OpenAPI spec ({spec['info']['version']}) cut to the operations ftlab serves, by",
              "# tests/openapi/cut.py from github.com/openai/openai-openapi at commit", f"# {commit}.",
              "# Corrections to OpenAI's spec (where it disagrees with OpenAI's API and client):"]  # fmt: skip
    header += [f"#   {pointer}: {reason}" for pointer, _value, reason in PATCHES]
    print("\n".join(header))
    print(yaml.safe_dump(cut(spec), sort_keys=False, allow_unicode=True, width=120))


if __name__ == "__main__":
    main()
