"""Rules for the phrasing tics that generated data picks up, in English and Japanese.

A model trained on "According to the document, …" learns to cite a document its users never see. These rules
remove such openers and asides from questions and answers; a question that still leans on an unseen document
("What does the passage say about …") is reported so the pipeline can drop it.
"""

from __future__ import annotations

import re
import zlib

_EN_SOURCE = (
    r"(?:the|this|that|these|above|provided|given|following|\s)*"
    r"(?:document|documentation|text|passage|context|section|article|excerpt|information|source|material|page)s?"
)
_EN_VERB = r"(?:states?|says?|mentions?|explains?|notes?|indicates?|suggests?|describes?|shows?|tells us)"
_EN_RULES = [
    # openers: "According to the document, …", "Based on the provided text: …", "As stated in the passage, …"
    rf"^(?:according to|based on|as (?:stated|described|mentioned|explained|noted|outlined|shown) in|per|from|"
    rf"in|within|drawing on)\s+{_EN_SOURCE}\s*[,:]\s*",
    rf"^(?:according to|based on)\s+{_EN_SOURCE}\s+",
    # "The document states that …", "The passage says: …"
    rf"^(?:the|this|above|provided|given|\s)+(?:document|text|passage|excerpt|article|context)\s+{_EN_VERB}"
    r"(?:\s+that)?\s*[,:]?\s*",
    # asides: "…, according to the document." / "… (as mentioned in the text)"
    rf"(?:,\s*|\s*\()(?:according to|as (?:stated|described|mentioned|explained|noted) in|based on|per)\s+"
    rf"{_EN_SOURCE}\)?(?=\s*[.?!,]|$)",
    # chatty openers and labels: "Sure! …", "Great question. …", "Question: …", "Answer: …"
    r"^(?:sure|certainly|of course|great question|good question|absolutely)\s*[!,.:]\s*",
    r"^(?:here is|here's) (?:a|one|the|my) (?:new |possible )?(?:question|answer)\s*[:.]\s*",
    r"^(?:question|answer|q|a)\s*\d*\s*[:：]\s*",
]

_JA_SOURCE = (
    r"(?:この|その|本|上記の|以下の|提供された|与えられた|当該)?"
    r"(?:文書|ドキュメント|資料|本文|テキスト|文章|記事|パッセージ|セクション|節|説明|文脈)"
)
_JA_RULES = [
    # 「ドキュメントによれば、」「この文書では、」「資料に基づくと」「本文に書かれているように、」
    rf"^{_JA_SOURCE}(?:によれば|によると|に基づくと|に基づいて|に基づけば|では|で|から分かるように|からわかるように|"
    rf"に記載されているように|に書かれているように|で述べられているように|に記されているように|の内容によると)[、,，]?\s*",
    rf"^{_JA_SOURCE}(?:には|は)[、,，]?(?=.{{0,40}}(?:と(?:書かれ|記載され|述べられ|説明され)))",
    # asides: 「…（文書より）」「…、ドキュメントによると、…」
    rf"[（(]{_JA_SOURCE}(?:より|参照|による)[）)]",
    rf"[、,，]\s*{_JA_SOURCE}(?:によれば|によると|に基づくと)[、,，]?",
    r"^(?:質問|問題|回答|答え|Q|A)\s*\d*\s*[:：]\s*",
    r"^(?:はい|もちろんです|いい質問ですね)[、。!！]\s*",
]
_EN = [re.compile(rule, re.I) for rule in _EN_RULES]
_JA = [re.compile(rule) for rule in _JA_RULES]

_EN_REFERS = re.compile(
    r"\b(?:the|this|that|above|provided|given)\s+(?:provided\s+|given\s+)?"
    r"(?:document|passage|text|excerpt|article|context)\b",
    re.I,
)
_JA_REFERS = re.compile(
    r"(?:この|その|本|上記の|提供された|与えられた)(?:文書|ドキュメント|資料|文章|記事|本文|パッセージ|テキスト)"
)
_JA_CHARS = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uff66-\uff9f]")
_KANA = re.compile(r"[\u3040-\u30ff\uff66-\uff9f]")
_QUOTES = "\"'“”‘’「」『』`"


def is_japanese(text: str) -> bool:
    """Whether text is mostly Japanese: some kana, and Japanese characters make up a fifth of its letters."""
    letters = sum(ch.isalpha() for ch in text)
    return bool(_KANA.search(text)) and len(_JA_CHARS.findall(text)) >= 0.2 * max(letters, 1)


def strip_tics(text: str) -> str:
    """`text` without the openers and asides that cite an unseen source, and without wrapping quotes."""
    text = text.strip()
    for _ in range(3):  # openers can stack: "Sure! According to the text, …"
        before = text
        text = text.strip().strip(_QUOTES).strip()
        for rule in _EN + _JA:
            text = rule.sub("", text).strip().lstrip(",;:、，：").strip()
        if text == before:
            break
    if text and text[0].isascii() and text[0].islower():
        text = text[0].upper() + text[1:]
    return text


def refers_to_document(text: str) -> bool:
    """Whether a question still points at a document the reader cannot see ("What does the passage say…")."""
    return bool(_EN_REFERS.search(text) or _JA_REFERS.search(text))


_SENTENCE = re.compile(r"[^.!?。！？]*[.!?。！？]+|[^.!?。！？]+$")


def pick_question(reply: str) -> str:
    """The question in a teacher's reply: the first sentence ending in a question mark that does not point at
    the unseen document (a small teacher often opens with "The passage discusses …. But how …?"), else the
    first non-empty line; labels like "Question:" and other tics stripped either way."""
    lines = [line for line in map(strip_tics, reply.splitlines()) if line]
    for line in lines:
        for sentence in _SENTENCE.findall(line):
            sentence = strip_tics(sentence)
            if sentence.endswith(("?", "？")) and not refers_to_document(sentence):
                return sentence
    return lines[0] if lines else ""


def is_question(text: str) -> bool:
    """Whether text asks something: it ends in a question mark, or (Japanese) in the particle か."""
    return text.rstrip().endswith(("?", "？", "か", "か。"))


# Whisper's compression_ratio_threshold: text that zlib shrinks more than this is a generation stuck in a loop.
REPETITION_RATIO = 2.4


def is_repetitive(text: str) -> bool:
    """Whether a reply repeats itself (a sentence or a list counting on until max_tokens): it compresses more
    than REPETITION_RATIO times. Short texts are left alone: zlib's header alone makes their ratio low."""
    data = text.encode()
    return len(data) >= 64 and len(data) / len(zlib.compress(data)) > REPETITION_RATIO
