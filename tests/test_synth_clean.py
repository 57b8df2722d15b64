"""Phrasing tics removed by rule, in English and Japanese."""

from __future__ import annotations

import pytest

from ftlab.synth.clean import is_japanese, refers_to_document, strip_tics


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


def test_language() -> None:
    assert is_japanese("SSTPはどのポートを使いますか？") and not is_japanese("Which port does SSTP use?")


def test_replies_stuck_in_a_loop_are_repetitive() -> None:
    from ftlab.synth.clean import is_repetitive

    # Replies the bundled 135M teacher wrote in the README example.
    assert is_repetitive("文書: 伺か 仕様メモ  " + "文書:  " * 80)
    loop = ("To bake a loaf of bread that is one to two hours long using a toaster oven, you will need to bake "
            "the bread in a toaster oven, which is a type of oven that is designed to bake bread. You will need to "
            "bake the bread in a toaster oven, which is a type of oven that is designed to bake bread.\n\nThe "
            "answer is:\nBaking a loaf of bread that is one to two hours long using a toaster oven.")  # fmt: skip
    assert is_repetitive(loop)
    assert not is_repetitive("The best way to store a starter is to keep it in a cool, dark place, away from light. "
                             "Feed it every day at room temperature, or once a week from the fridge.")
    assert not is_repetitive("SSTP は 9801 番ポートで待ち受け、一行目は SEND SSTP/1.4 で始まります。")
    assert not is_repetitive("ok ok ok ok")  # too short to judge


@pytest.mark.parametrize(
    ("reply", "question"),
    [
        ("Question: How long does a starter take to mature?", "How long does a starter take to mature?"),
        ("The passage discusses the starter. But how often is it fed?\nIt is fed daily.", "But how often is it fed?"),
        ("Sure! What is hooch? It is grey liquid.", "What is hooch?"),
        ("質問：SSTP は何番ポートを使いますか？ 本文によれば 9801 番です。", "SSTP は何番ポートを使いますか？"),
        ("What does the passage say about flour?\nHow much flour is in a loaf?", "How much flour is in a loaf?"),
        ("The passage discusses the starter.", "The passage discusses the starter."),  # no question: first line
        ("\n\n", ""),
    ],
)
def test_the_question_is_picked_out_of_a_chatty_reply(reply: str, question: str) -> None:
    from ftlab.synth.clean import pick_question

    assert pick_question(reply) == question
