"""Printing rich tables the same way in every command: fitted to the terminal on a terminal; at their natural
width into a pipe or a file, so ids, hashes and paths come out whole for `grep`, `cut` and copy-paste."""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

PIPED_MAX_WIDTH = 10_000  # wide enough for any table; a table never pads itself to the console's width


def print_table(console: Console, table: Table) -> None:
    """Print `table` on `console`; when that is not a terminal, without wrapping or folding any cell."""
    if console.is_terminal:
        console.print(table)
    else:  # rich lays out to the console's width (80 columns when it cannot ask a terminal)
        Console(file=console.file, width=PIPED_MAX_WIDTH).print(table)


def print_error(console: Console, message: str) -> None:
    """`error: MESSAGE`, never folded to the console's width: a path or an id in it stays whole for copy-paste
    (the terminal wraps the line where it must)."""
    console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print `error: MESSAGE` on stderr and exit with `code` (2: bad input, the default; 1: the work failed)."""
    print_error(Console(stderr=True), message)
    raise typer.Exit(code)
