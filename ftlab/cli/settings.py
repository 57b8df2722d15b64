"""The `ftlab train` flags, derived from `TrainConfig`: one option per field, named after it (with dashes),
its help the field's description, range and default. Flags arrive as text and TrainConfig parses them, so
numbers, "auto" and ranges are read in one place whichever door a setting comes through."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import typer
from pydantic import ValidationError
from rich.markup import escape

from ftlab.config import TrainConfig, explain, read_settings, upgrade_settings

# Flags whose names differ from their setting's, public before the flags were derived from TrainConfig.
FLAG_NAMES = {"n_epochs": ("--epochs", "--n-epochs")}
# `--labels` names a file, one label per line, as `ftlab eval --labels` does; the setting holds its labels.
METAVARS = {"labels": "LABELS.txt"}
SETTINGS_PANEL = "Training settings (also in a --config file)"


def flag(setting: str) -> str:
    return FLAG_NAMES.get(setting, (f"--{setting.replace('_', '-')}",))[0]


@cache
def _schema(setting: str) -> dict[str, Any]:
    """The JSON schema of one TrainConfig field: its type, choices and bounds."""
    return TrainConfig.model_json_schema()["properties"][setting]


def _choices(schema: dict[str, Any]) -> list[dict[str, Any]]:
    """The kinds of value a field takes, nested unions flattened (`FLOAT|auto` or null), null left out."""
    choices = schema.get("oneOf") or schema.get("anyOf")
    if not choices:
        return [schema] if schema.get("type") != "null" else []
    return [kind for choice in choices for kind in _choices(choice)]


def _flag_value(setting: str, text: str) -> str | list[str]:
    """A flag's text as TrainConfig reads it: a list setting takes comma-separated names (`q_proj,v_proj`), a
    `--labels` the labels of its file."""
    if setting == "labels":
        from ftlab.data.labels import read_labels

        try:
            return read_labels(Path(text))
        except ValueError as exc:
            raise ValueError(f"{flag(setting)}: {exc}") from None
    choices = _choices(_schema(setting))
    words = [c["const"] for c in choices if "const" in c]
    return text.split(",") if text not in words and any(c.get("type") == "array" for c in choices) else text


def _metavar(schema: dict[str, Any]) -> str:
    """What the flag takes, from the field's JSON schema: `INTEGER|auto`, `lora|dora|full`, `A,B,…|all-linear`."""
    words = {"integer": "INTEGER", "number": "FLOAT", "string": "TEXT", "array": "A,B,…"}
    parts = []
    for choice in _choices(schema):
        parts += [str(v) for v in choice.get("enum", [choice["const"]] if "const" in choice else [])]
        parts += [] if "enum" in choice or "const" in choice else [words[choice["type"]]]
    return "|".join(parts)


def _range(schema: dict[str, Any]) -> str:
    """A number's bounds in click's notation: `1<=x<=50`, `0<=x<1`, `x>0`."""
    for choice in _choices(schema):
        low = next(((choice[k], op) for k, op in (("minimum", "<="), ("exclusiveMinimum", "<")) if k in choice), None)
        high = next(((choice[k], op) for k, op in (("maximum", "<="), ("exclusiveMaximum", "<")) if k in choice), None)
        if high:
            return (f"{low[0]}{low[1]}" if low else "") + f"x{high[1]}{high[0]}"
        if low:
            return f"x{low[1].replace('<', '>')}{low[0]}"
    return ""


def _setting_parameter(name: str) -> inspect.Parameter:
    """The `--flag` of one TrainConfig field; its value arrives as text, or None when not given."""
    field, schema = TrainConfig.model_fields[name], _schema(name)
    bounds = _range(schema)
    notes = [f"[{bounds}]" if bounds else "", "" if field.default is None else f"[default: {field.default}]"]
    option = typer.Option(
        None, *FLAG_NAMES.get(name, (flag(name),)), metavar=METAVARS.get(name) or _metavar(schema),
        show_default=False,
        help=escape(" ".join([field.description or "", *notes]).strip()), rich_help_panel=SETTINGS_PANEL,
    )  # fmt: skip
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=str | None)


def takes_settings(command: Callable[..., None], exclude: tuple[str, ...] = ()) -> Callable[..., None]:
    """Give a typer command one option per TrainConfig field (but those in `exclude`), received in its
    `**settings` (typer reads the signature through `inspect.signature`, which honours `__signature__`)."""
    own = [p for p in inspect.signature(command, eval_str=True).parameters.values() if p.kind != p.VAR_KEYWORD]
    command.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        own + [_setting_parameter(name) for name in TrainConfig.model_fields if name not in exclude]
    )
    return command


def build_config(flags: dict[str, str | None], config_file: Path | None = None) -> TrainConfig:
    """The settings of a config file overridden by the flags given. Raises ValueError naming the flag or the
    file (and setting) of each bad value, and ConfigFileError for a file that cannot be read."""
    given = {name: _flag_value(name, text) for name, text in flags.items() if text is not None}
    from_file = read_settings(config_file) if config_file else {}
    try:  # each source in today's spelling first, so that a flag overrides a file's old spelling too
        return TrainConfig(**{**upgrade_settings(from_file), **upgrade_settings(given)})
    except ValidationError as exc:
        problems = []
        for setting, message in map(explain, exc.errors()):
            where = flag(setting) if setting in given or not config_file else f"{config_file}: {setting}"
            problems.append(f"{where}: {message}" if setting else message)
        raise ValueError("\n".join(problems)) from None
