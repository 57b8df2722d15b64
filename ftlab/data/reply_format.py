"""The reply format a fine-tuned model learned: when every training reply is a JSON object or array, the JSON
schema they share, written next to each checkpoint (`reply_schema.json`) so that decoding can hold the model to it.

A small model trained on JSON replies writes JSON, until greedy decoding falls into a loop: it repeats a list item
until the token cap and the JSON never closes (3 of the 4 invalid replies in 200 held-out real recipes). Held to
the schema, with each array allowed a quarter more items than the longest in training, such a reply closes.
`ftlab eval` (`--decode auto`, the default) and `ftlab serve` (a request without `response_format`) decode a
fine-tuned model to its learned schema; `--decode free` and `response_format: {"type": "text"}` turn it off.

The shape is inferred by genson (types, properties, required keys); only the array caps are ftlab's.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPLY_SCHEMA_FILE = "reply_schema.json"
# An array may hold this many times as many items as the longest seen in training (rounded up): the same slack
# `ftlab eval` gives a reply's length (`default_max_new_tokens`).
ARRAY_SLACK = 1.25


def learned_reply_schema(replies: Sequence[str]) -> dict[str, Any] | None:
    """The JSON schema every reply in `replies` fits when each is a JSON object or array (None otherwise, and for
    no replies): their shape as genson infers it, each array capped at `ARRAY_SLACK` times the most items that
    array held in any reply."""
    values = []
    for reply in replies:
        try:
            value = json.loads(reply)
        except (json.JSONDecodeError, TypeError):
            return None
        if not isinstance(value, dict | list):
            return None  # a bare number or string is a label, not a structure to hold a reply to
        values.append(value)
    if not values:
        return None
    from genson import SchemaBuilder

    builder = SchemaBuilder(schema_uri=None)
    for value in values:
        builder.add_object(value)
    schema = builder.to_schema()
    _cap_arrays(schema, values)
    return schema


def _cap_arrays(schema: dict[str, Any], values: list[Any]) -> None:
    """Give each array node of `schema` a maxItems from the `values` found at that node (nodes with a union of
    types are left as genson wrote them)."""
    if schema.get("type") == "array":
        lists = [value for value in values if isinstance(value, list)]
        schema["maxItems"] = math.ceil(ARRAY_SLACK * max(map(len, lists), default=0))
        if isinstance(schema.get("items"), dict):
            _cap_arrays(schema["items"], [item for items in lists for item in items])
    elif schema.get("type") == "object":
        for key, node in schema.get("properties", {}).items():
            _cap_arrays(node, [value[key] for value in values if isinstance(value, dict) and key in value])


def write_reply_schema(folder: Path, schema: dict[str, Any] | None) -> None:
    """Keep `schema` with the checkpoint in `folder` (nothing when the replies have no JSON shape)."""
    if schema is not None:
        (folder / REPLY_SCHEMA_FILE).write_text(json.dumps(schema, indent=2) + "\n", encoding="utf-8")


def read_reply_schema(folder: Path | None) -> dict[str, Any] | None:
    """The reply schema kept with the checkpoint in `folder`, or None (no checkpoint, or replies not JSON)."""
    path = folder / REPLY_SCHEMA_FILE if folder is not None else None
    if path is None or not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))
