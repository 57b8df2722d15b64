"""Building crafted chat JSONL files for the data workbench tests (English and Japanese content)."""

from __future__ import annotations

import json
from pathlib import Path

SYSTEM = "You are a concise assistant."

GOOD = [
    ("What is the capital of France?", "Paris."),
    ("Name a primary colour.", "Red."),
    ("How many legs does a spider have?", "Eight."),
    ("Translate 'thank you' into German.", "Danke."),
    ("What gas do plants absorb?", "Carbon dioxide."),
    ("日本の首都はどこですか？", "東京です。"),
    ("富士山の高さは何メートルですか？", "3,776メートルです。"),
    ("「ありがとう」を英語で言うと？", "Thank you です。"),
    ("一年は何日ありますか？", "通常は365日です。"),
    ("水の沸点は何度ですか？", "1気圧で100度です。"),
    ("Which planet is known as the red planet?", "Mars."),
    ("寿司の主な材料は何ですか？", "酢飯と魚介類です。"),
]


def chat(user: str, assistant: str, system: str | None = SYSTEM, **extra) -> dict:
    messages = [{"role": "system", "content": system}] if system is not None else []
    messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    return {"messages": messages, **extra}


def good_rows(n: int = len(GOOD)) -> list[dict]:
    return [chat(u, a) for u, a in GOOD[:n]]


def write_jsonl(path: Path, rows: list[dict | str | bytes]) -> Path:
    """Rows as JSON objects, raw text lines or raw bytes lines (for encoding errors)."""
    with open(path, "wb") as handle:
        for row in rows:
            if isinstance(row, bytes):
                handle.write(row + b"\n")
            elif isinstance(row, str):
                handle.write(row.encode("utf-8") + b"\n")
            else:
                handle.write(json.dumps(row, ensure_ascii=False).encode("utf-8") + b"\n")
    return path
