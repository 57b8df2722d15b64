"""Reading documents and cutting them into chunks along their headings (for `ftlab synth qa`, which writes questions
from chunks, and for retrieval in `ftlab compare`, which puts chunks into prompts).

Every chunk keeps the document's title and the path of headings above it, so a question written from the chunk,
or a model reading it, can tell what it is about even when the chunk itself never says (a page about SSTP that
never mentions that it belongs to the 伺か spec). Markdown is parsed with markdown-it (already installed with
rich), which knows code fences and setext headings; HTML is turned into Markdown-like text first; plain text is
cut by paragraphs.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

from markdown_it import MarkdownIt

from ftlab.data.schema import DataError

SUFFIXES = {".md": "markdown", ".markdown": "markdown", ".txt": "text", ".html": "html", ".htm": "html"}
MAX_CHUNK_CHARS = 2000
MIN_CHUNK_CHARS = 20

_FRONT_MATTER = re.compile(r"\A---\s*\n(.*?)\n---\s*\n", re.S)
_FRONT_TITLE = re.compile(r"^title:\s*['\"]?(.*?)['\"]?\s*$", re.M)


@dataclass(frozen=True)
class Chunk:
    """A piece of a document with the context needed to understand it on its own."""

    document: str  # path relative to the documents folder, with forward slashes
    title: str
    heading_path: tuple[str, ...]
    text: str
    index: int  # position of the chunk in its document

    @property
    def hash(self) -> str:
        """First 16 hex digits of the SHA-256 of the chunk's text: changes exactly when the text does."""
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()[:16]

    @property
    def section(self) -> str:
        """The heading path as one line, without a leading heading that only repeats the title."""
        path = list(self.heading_path)
        if path and path[0] == self.title:
            path = path[1:]
        return " › ".join(path)


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"not valid UTF-8 (byte {exc.start}); re-save the file as UTF-8", path=path) from None


def find_documents(folder: str | Path) -> list[Path]:
    """Markdown, text and HTML files under `folder`, recursively, in a stable order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError("not a folder of documents", path=folder)
    paths = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)
    if not paths:
        raise DataError(f"no documents found (looked for {', '.join(sorted(SUFFIXES))})", path=folder)
    return paths


def chunk_document(path: Path, root: Path, max_chars: int = MAX_CHUNK_CHARS) -> list[Chunk]:
    """The chunks of one document, in reading order."""
    kind = SUFFIXES[path.suffix.lower()]
    name = path.relative_to(root).as_posix()
    text = read_text(path)
    fallback_title = path.stem.replace("_", " ").replace("-", " ").strip() or path.name
    given_title = None
    if kind == "html":
        given_title, text = html_to_markdown(text)
        kind = "markdown"
    if kind == "text":
        sections = [((), text)]
        title = fallback_title
    else:
        title, sections = markdown_sections(text, fallback_title, given_title or None)
    chunks = []
    for heading_path, body in sections:
        for piece in split_paragraphs(body, max_chars):
            if len(piece.strip()) >= MIN_CHUNK_CHARS:
                path_ = heading_path or (title,)
                chunks.append(Chunk(name, title, path_, piece.strip(), len(chunks)))
    return chunks


def load_chunks(folder: str | Path, max_chars: int = MAX_CHUNK_CHARS) -> list[Chunk]:
    """Every chunk of every document under `folder`."""
    root = Path(folder)
    chunks = [chunk for path in find_documents(root) for chunk in chunk_document(path, root, max_chars)]
    if not chunks:
        raise DataError("the documents have no text (every chunk is empty)", path=root)
    return chunks


def markdown_sections(
    text: str, fallback_title: str, title: str | None = None
) -> tuple[str, list[tuple[tuple[str, ...], str]]]:
    """(title, [(heading path, body text)]) for a Markdown document.

    The title is `title` when given (an HTML page's <title>), else the front matter's `title:`, else the first
    level-1 heading, else `fallback_title`.
    """
    front = _FRONT_MATTER.match(text)
    if front:
        found = _FRONT_TITLE.search(front.group(1))
        title = title or (found.group(1).strip() if found else None)
        text = text[front.end() :]
    lines = text.splitlines()
    tokens = MarkdownIt("commonmark").parse(text)
    headings = []  # (level, text, first line, line after the heading)
    for i, token in enumerate(tokens):
        if token.type == "heading_open" and token.map:
            content = tokens[i + 1].content.strip()
            headings.append((int(token.tag[1]), content, token.map[0], token.map[1]))
    if title is None:
        first_h1 = next((h for h in headings if h[0] == 1), None)
        title = first_h1[1] if first_h1 else fallback_title
    sections = []
    first_line = headings[0][2] if headings else len(lines)
    sections.append(((), "\n".join(lines[:first_line])))
    stack: list[tuple[int, str]] = []
    for n, (level, content, _start, end) in enumerate(headings):
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, content))
        stop = headings[n + 1][2] if n + 1 < len(headings) else len(lines)
        sections.append((tuple(h for _, h in stack), "\n".join(lines[end:stop])))
    return title, [(path, body) for path, body in sections if body.strip()]


def split_paragraphs(text: str, max_chars: int) -> list[str]:
    """Cut a section at blank lines (never inside a code fence) into pieces of at most ~max_chars.

    Hand-written: a few lines, and the splitters in libraries would pull in a framework for this alone.
    """
    if len(text) <= max_chars:
        return [text]
    paragraphs, current, in_fence = [], [], False
    for line in text.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            in_fence = not in_fence
        if not line.strip() and not in_fence:
            if current:
                paragraphs.append("\n".join(current))
                current = []
        else:
            current.append(line)
    if current:
        paragraphs.append("\n".join(current))
    pieces, piece = [], ""
    for paragraph in paragraphs:
        if piece and len(piece) + len(paragraph) + 2 > max_chars:
            pieces.append(piece)
            piece = paragraph
        else:
            piece = f"{piece}\n\n{paragraph}" if piece else paragraph
    if piece:
        pieces.append(piece)
    return pieces


class _HTMLToMarkdown(HTMLParser):
    """Headings become `#` lines, block elements become paragraphs, scripts and styles are dropped.

    Hand-written on the standard library's parser: converting only the structure chunking needs is ~30 lines,
    where html2text or markdownify would be a new dependency.
    """

    BLOCKS = {"p", "div", "section", "article", "li", "tr", "br", "pre", "blockquote", "table", "ul", "ol", "dd", "dt"}
    SKIP = {"script", "style", "noscript", "template", "head"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title = ""
        self._skip = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "title":
            self._in_title = True
        elif tag in self.SKIP:
            self._skip += 1
        elif re.fullmatch(r"h[1-6]", tag):
            self.parts.append("\n\n" + "#" * int(tag[1]) + " ")
        elif tag in self.BLOCKS:
            self.parts.append("\n\n" if tag != "br" else "\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        elif tag in self.SKIP:
            self._skip = max(0, self._skip - 1)
        elif re.fullmatch(r"h[1-6]", tag) or tag in self.BLOCKS:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        elif not self._skip:
            self.parts.append(re.sub(r"\s+", " ", data))


def html_to_markdown(html: str) -> tuple[str, str]:
    """(the page's <title>, its text with headings as Markdown `#` lines)."""
    parser = _HTMLToMarkdown()
    parser.feed(html)
    parser.close()
    text = "".join(parser.parts)
    text = "\n".join(line.strip() for line in text.splitlines())
    return parser.title.strip(), re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"
