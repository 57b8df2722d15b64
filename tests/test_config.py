"""One TrainConfig behind every front door: `ftlab train` flags derived from its fields, config files (YAML, TOML,
JSON, a run's own config.json) that flags override, old spellings, and ranges that each get one message."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from ftlab.cli.main import app
from ftlab.cli.settings import build_config, flag
from ftlab.config import ConfigFileError, TrainConfig, explain, read_settings

runner = CliRunner()
PUBLIC_FLAGS = ["--epochs", "--batch-size", "--learning-rate-multiplier", "--method", "--adapter", "--lora-r",
                "--lora-alpha", "--loraplus-lr-ratio", "--seed", "--early-stopping-patience", "--max-length", "--model",
                "--validation", "--output", "--resume", "--print-mask", "--mlflow", "--mlflow-experiment", "--config"]


def flat(text: str) -> str:
    """Output with rich's line wrapping undone."""
    return " ".join(text.split())


def write_chats(path: Path, n: int) -> Path:
    rows = [{"messages": [{"role": "user", "content": f"Ingredients of dish {i}?"},
                          {"role": "assistant", "content": json.dumps([f"item{i % 5}", "salt"][: 1 + i % 2])}]}
            for i in range(n)]  # fmt: skip
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def losses(run: Path) -> list[str]:
    with open(run / "metrics.csv") as handle:
        return [row["train_loss"] for row in csv.DictReader(handle)]


def test_help_shows_every_setting_with_its_description() -> None:
    result = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    output = flat(result.output)
    for name, field in TrainConfig.model_fields.items():
        assert flag(name) in output, name
        assert " ".join(field.description.split()[:3]) in output, name
    for public in PUBLIC_FLAGS:
        assert public in output
    assert "INTEGER|auto" in output and "[1<=x<=50]" in output and "[default: 42]" in output


def test_a_runs_config_json_repeats_the_run(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = write_chats(tmp_path / "train.jsonl", 12)
    first = runner.invoke(app, ["train", str(data), "--model", str(tiny_model_dir), "--epochs", "2", "--batch-size",
                                "4", "--learning-rate-multiplier", "20", "--seed", "5", "--lora-r", "8",
                                "--warmup-ratio", "0", "--output", str(tmp_path / "a")])  # fmt: skip
    assert first.exit_code == 0, first.output
    again = runner.invoke(app, ["train", str(data), "--config", str(tmp_path / "a" / "config.json"), "--output",
                                str(tmp_path / "b")])  # fmt: skip
    assert again.exit_code == 0, again.output
    record_a, record_b = (json.loads((tmp_path / run / "config.json").read_text()) for run in "ab")
    assert record_b["config"] == record_a["config"]
    assert record_a["config"]["seed"] == 5 and record_a["config"]["lora_r"] == 8
    assert len(losses(tmp_path / "a")) == 6 and losses(tmp_path / "b") == losses(tmp_path / "a")


def test_flags_override_the_file_in_every_format(tmp_path: Path) -> None:
    yaml_file = tmp_path / "settings.yaml"
    yaml_file.write_text("n_epochs: 4\nlearning_rate_multiplier: 2.5\nlora_target_modules: [q_proj, v_proj]\n"
                         "method: full  # the old spelling of adapter\n")  # fmt: skip
    toml_file = tmp_path / "settings.toml"
    toml_file.write_text('n_epochs = 4\nlearning_rate_multiplier = 2.5\nlora_target_modules = ["q_proj", "v_proj"]\n'
                         'adapter = "full"\n')  # fmt: skip
    json_file = tmp_path / "settings.json"
    json_file.write_text(json.dumps({"n_epochs": 4, "learning_rate_multiplier": 2.5, "adapter": "full",
                                     "lora_target_modules": ["q_proj", "v_proj"]}))  # fmt: skip
    configs = [build_config({}, path) for path in (yaml_file, toml_file, json_file)]
    assert configs[0] == configs[1] == configs[2]
    first = configs[0]
    assert (first.n_epochs, first.adapter, first.lora_target_modules) == (4, "full", ["q_proj", "v_proj"])
    flags = {"n_epochs": "2", "method": "dora", "lora_target_modules": "k_proj", "batch_size": None}
    overridden = build_config(flags, yaml_file)
    assert (overridden.n_epochs, overridden.adapter, overridden.lora_target_modules) == (2, "dora", ["k_proj"])
    assert overridden.learning_rate_multiplier == 2.5 and overridden.batch_size == "auto"
    assert build_config({"lora_target_modules": "all-linear"}).lora_target_modules == "all-linear"


def test_unknown_key_in_a_config_file_fails_naming_key_and_file(tmp_path: Path) -> None:
    data = write_chats(tmp_path / "t.jsonl", 2)
    settings = tmp_path / "settings.yaml"
    settings.write_text("n_epoch: 3\nlora_r: 8\n")
    result = runner.invoke(app, ["train", str(data), "--config", str(settings)])
    assert result.exit_code == 2
    assert f"{settings}: n_epoch: unknown setting (did you mean 'n_epochs'?)" in flat(result.output)
    settings.write_text("lora_r: 0\n")
    result = runner.invoke(app, ["train", str(data), "--config", str(settings), "--epochs", "80"])
    assert result.exit_code == 2
    assert "--epochs: Input should be less than or equal to 50 (got '80')" in flat(result.output)
    assert f"{settings}: lora_r: Input should be greater than or equal to 1 (got 0)" in flat(result.output)


@pytest.mark.parametrize(("name", "text", "message"), [
    ("settings.ini", "n_epochs = 3", "is YAML (.yaml, .yml), TOML (.toml) or JSON (.json)"),
    ("settings.yaml", "- 3\n- 4\n", "expected setting names and values, got a list"),
    ("settings.toml", "n_epochs = ", "not valid TOML"),
    ("settings.json", "{n_epochs: 3}", "not valid JSON"),
])  # fmt: skip
def test_a_config_file_that_cannot_be_read_is_named(tmp_path: Path, name: str, text: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigFileError, match=str(path)) as info:
        read_settings(path)
    assert message in str(info.value)


def test_old_method_spelling_still_works_from_the_command_line(tmp_path: Path) -> None:
    assert build_config({"method": "lora"}).adapter == "lora"
    assert build_config({"method": "supervised", "adapter": "dora"}).adapter == "dora"
    data = write_chats(tmp_path / "t.jsonl", 2)
    result = runner.invoke(app, ["train", str(data), "--method", "dora", "--adapter", "full"])
    assert result.exit_code == 2 and "method 'dora' (the old spelling of adapter) contradicts adapter 'full'" in flat(
        result.output
    )


OUT_OF_RANGE = [
    ("n_epochs", 0), ("n_epochs", 51), ("n_epochs", "many"), ("batch_size", 257), ("learning_rate_multiplier", 0),
    ("learning_rate_multiplier", 101), ("learning_rate_multiplier", math.nan), ("lora_r", 1025), ("lora_alpha", 0),
    ("lora_alpha", 4097), ("max_length", 15), ("max_length", 131_073), ("eval_every", 0), ("eval_every", "step"),
    ("weight_decay", -0.1), ("weight_decay", 11), ("weight_decay", math.inf), ("max_grad_norm", 0),
    ("max_grad_norm", math.inf), ("warmup_ratio", 1), ("warmup_ratio", -math.inf), ("lora_dropout", 1.0),
    ("lora_dropout", math.nan), ("loraplus_lr_ratio", 0), ("loraplus_lr_ratio", 1001), ("loraplus_lr_ratio", "nan"),
    ("seed", -1), ("seed", 2**31), ("lora_target_modules", []), ("adapter", "qlora"), ("suffix", "my suffix"),
]  # fmt: skip
LIMITS = {"n_epochs": 50, "batch_size": 256, "learning_rate_multiplier": 100, "lora_r": 1024, "lora_alpha": 4096,
          "max_length": 131_072, "eval_every": 1, "weight_decay": 10, "warmup_ratio": 0.999, "lora_dropout": 0.999,
          "loraplus_lr_ratio": 1000, "seed": 2**31 - 1, "max_grad_norm": 1e6}  # fmt: skip


@pytest.mark.parametrize(("setting", "value"), OUT_OF_RANGE)
def test_each_out_of_range_value_gets_one_message(setting: str, value: object) -> None:
    with pytest.raises(ValidationError) as info:
        TrainConfig(**{setting: value})
    (error,) = info.value.errors()
    name, message = explain(error)
    assert name == setting and f"(got {value!r})" in message


def test_the_limits_themselves_are_allowed() -> None:
    config = TrainConfig(**LIMITS)
    assert config.model_dump(include=set(LIMITS)) == LIMITS
    assert TrainConfig(max_length=16).max_length == 16 and TrainConfig().seed == 42


def test_a_bad_select_by_is_refused_naming_the_flag_before_any_compute(tmp_path: Path) -> None:
    train = write_chats(tmp_path / "train.jsonl", 10)
    labels = tmp_path / "labels.txt"
    labels.write_text("yes\nno\n")
    cases = [
        (["--select-by", "f1"], "--select-by: unknown metric: choose auto, valid_loss, exact, contains, json_valid"),
        (["--select-by", "set-f1"], "--select-by: unknown metric (did you mean 'set_f1'?)"),
        (["--select-by", "valid_label_rate"], "select_by valid_label needs the label set: labels"),
        (["--select-by", "valid_label_rate", "--labels", str(tmp_path / "none.txt")],
         f"--labels: {tmp_path / 'none.txt'}: file not found"),
        (["--select-by", "judge:no-such-model"], "unknown model 'no-such-model'"),
    ]  # fmt: skip
    for flags, message in cases:
        result = runner.invoke(app, ["train", str(train), "--validation", str(train), "--output", str(tmp_path / "run"),
                                     *flags])  # fmt: skip
        assert result.exit_code == 2 and message in flat(result.output), (flags, result.output)
    assert not (tmp_path / "run").exists()
    config = build_config({"select_by": "valid_label_rate", "labels": str(labels)})
    assert (config.select_by, config.labels, config.selection_metric) == ("valid_label", ["yes", "no"], "valid_label")
    assert "--labels LABELS.txt" in flat(runner.invoke(app, ["train", "--help"]).output)


def test_select_by_auto_is_the_default_and_stands_for_validation_loss_until_the_recipe_chooses() -> None:
    config = TrainConfig()
    assert config.select_by == "auto" and config.selection_metric == "valid_loss"
    assert not config.selects_by_task_metric  # nothing asks for a validation file or a single process
    assert TrainConfig(method="dpo").selection_metric == "valid_loss"  # DPO keeps its preference loss
    with pytest.raises(ValueError, match="select_by set_f1 scores replies of supervised runs"):
        TrainConfig(method="dpo", select_by="set_f1")


def test_bad_flags_are_named() -> None:
    result = runner.invoke(app, ["train", "missing.jsonl", "--weight-decay", "11", "--warmup-ratio", "nan"])
    assert result.exit_code == 2
    assert "--weight-decay: Input should be less than or equal to 10 (got '11')" in flat(result.output)
    assert "--warmup-ratio: Input should be a finite number (got 'nan')" in flat(result.output)
