"""Phrasing tics removed by rule, in English and Japanese."""

from __future__ import annotations

import pytest

from ftlab.synth.clean import is_japanese, normalise, refers_to_document, strip_tics


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("According to the document, SSTP uses port 9801.", "SSTP uses port 9801."),
        ("Based on the provided text: the dough rises for 2 hours.", "The dough rises for 2 hours."),
        ("Sure! According to the passage, the oven is preheated.", "The oven is preheated."),
        ("The passage states that the loaf cools for an hour.", "The loaf cools for an hour."),
        ("SSTP uses port 9801, according to the document.", "SSTP uses port 9801."),
        ("What port does SSTP use (as mentioned in the text)?", "What port does SSTP use?"),
        ('Question: "What port does SSTP use?"', "What port does SSTP use?"),
        ("ドキュメントによれば、SSTPは9801番ポートを使います。", "SSTPは9801番ポートを使います。"),
        ("この文書では、SHIORIが台詞を決めます。", "SHIORIが台詞を決めます。"),
        ("資料に基づくとパンは二時間発酵させます。", "パンは二時間発酵させます。"),
        ("SSTPは9801番ポートを使います（文書より）。", "SSTPは9801番ポートを使います。"),
        ("質問：SSTPのポートは何番ですか？", "SSTPのポートは何番ですか？"),
        # text without tics is left alone
        ("The page shows the balance.", "The page shows the balance."),
        ("Based on experience, bake it longer.", "Based on experience, bake it longer."),
        ("文書を保存するにはCtrl+Sを押します。", "文書を保存するにはCtrl+Sを押します。"),
    ],
)
def test_strip_tics(raw: str, clean: str) -> None:
    assert strip_tics(raw) == clean


def test_questions_that_need_an_unseen_document_are_detected() -> None:
    assert refers_to_document("What does the passage say about SSTP?")
    assert refers_to_document("According to this text what is SSTP")
    assert refers_to_document("この文書でSSTPは何番ポートですか？")
    assert not refers_to_document("How do I send a text message from the Acme phone?")
    assert not refers_to_document("伺かのSSTPは何番ポートですか？")


def test_language_and_normal_form() -> None:
    assert is_japanese("SSTPはどのポートを使いますか？") and not is_japanese("Which port does SSTP use?")
    assert normalise("What port, SSTP?") == normalise("what port sstp") and normalise("ＳＳＴＰ。") == "sstp"
