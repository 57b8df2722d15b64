"""Chunking along headings: heading paths, titles, fences, HTML and plain text."""

from __future__ import annotations

from pathlib import Path

import pytest

from ftlab.data.documents import chunk_document, html_to_markdown, load_chunks, split_paragraphs
from ftlab.data.schema import DataError

SPEC = """---
title: 伺か仕様
---
Intro text that belongs to no heading at all, long enough to keep.

# Protocols

## SSTP

SSTP listens on port 9801 and carries Sakura Script.

```
# not a heading: a comment inside a code fence
SEND SSTP/1.4
```

### Headers

The Charset header names the encoding of the request.

Setext heading
--------------

A section under a setext level-2 heading, long enough.
"""


def test_markdown_heading_paths_and_title(tmp_path: Path) -> None:
    (tmp_path / "spec.md").write_text(SPEC, encoding="utf-8")
    chunks = load_chunks(tmp_path)
    assert {c.title for c in chunks} == {"伺か仕様"}  # front matter wins over the first heading
    paths = [c.heading_path for c in chunks]
    assert paths == [
        ("伺か仕様",),
        ("Protocols", "SSTP"),
        ("Protocols", "SSTP", "Headers"),
        ("Protocols", "Setext heading"),
    ]
    sstp = chunks[1]
    assert "# not a heading" in sstp.text and "SEND SSTP/1.4" in sstp.text
    assert sstp.section == "Protocols › SSTP"
    assert sstp.document == "spec.md" and len(sstp.hash) == 16 and [c.index for c in chunks] == [0, 1, 2, 3]


def test_title_falls_back_to_first_h1_then_file_name(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# Acme Router\n\n## Ports\n\nThe admin page listens on port 8080.\n")
    (tmp_path / "notes_on-tea.md").write_text("Green tea is steeped at 80 degrees for two minutes.\n")
    by_doc = {c.document: c for c in load_chunks(tmp_path)}
    assert by_doc["a.md"].title == "Acme Router" and by_doc["a.md"].heading_path == ("Acme Router", "Ports")
    assert by_doc["notes_on-tea.md"].title == "notes on tea"
    assert by_doc["notes_on-tea.md"].heading_path == ("notes on tea",)


def test_html_headings_become_a_heading_path(tmp_path: Path) -> None:
    html = (
        "<html><head><title>Router Manual</title><style>h1{}</style></head><body><script>var x=1;</script>"
        "<h1>Router</h1><p>The router connects your home network to the internet.</p>"
        "<h2>Ports</h2><p>The admin page listens on port <b>8080</b>.</p><ul><li>SSH uses 22.</li></ul></body></html>"
    )
    (tmp_path / "manual.html").write_text(html)
    chunks = chunk_document(tmp_path / "manual.html", tmp_path)
    assert chunks[0].title == "Router Manual"
    assert chunks[-1].heading_path == ("Router", "Ports")
    assert "port 8080." in chunks[-1].text and "SSH uses 22." in chunks[-1].text
    assert "var x" not in html_to_markdown(html)[1]


def test_long_sections_split_at_paragraphs_never_inside_fences() -> None:
    fence = "```\nline one\n\nline two after a blank line\n```"
    text = "\n\n".join(["alpha " * 30, fence, "beta " * 30, "gamma " * 30])
    pieces = split_paragraphs(text, 200)
    assert len(pieces) >= 3
    assert any(fence in piece for piece in pieces)


def test_bad_input_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no documents found"):
        load_chunks(tmp_path)
    (tmp_path / "bad.md").write_bytes(b"# Title\n\n\xff\xfe broken")
    with pytest.raises(DataError, match=r"bad\.md.*UTF-8"):
        load_chunks(tmp_path)
