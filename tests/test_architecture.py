"""The import directions of docs/architecture.md, enforced: every import of every ftlab module, read with `ast`.

The table of allowed directions lives in the doc alone; this test parses it. An import counts wherever it is
written (module level or inside a function); one under `if TYPE_CHECKING:` is for annotations only and may
point anywhere but the front doors (serve/, cli/).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "ftlab"
DOC = REPO / "docs" / "architecture.md"
FRONT_DOORS = {"serve", "cli"}

# Imports that break the table today, each with why, so the list can only shrink: a listed import that is gone
# fails the test too (remove it here). Keys: (file relative to the repository, package imported).
KNOWN_VIOLATIONS: dict[tuple[str, str], str] = {}


@dataclass(frozen=True)
class Import:
    file: str  # relative to the repository
    line: int
    source: str  # the importing unit: "data", "config", …
    target: str  # the imported unit
    type_only: bool


def allowed_imports() -> dict[str, set[str]]:
    """The doc's table: unit (a top-level module such as `config` or a package such as `data`) → what it may
    import."""
    table: dict[str, set[str]] = {}
    for row in re.findall(r"^\| `([a-z_]+)(?:\.py|/)` \|.*\| ([^|]+) \|$", DOC.read_text(), re.M):
        unit, allowed = row
        table[unit] = {name.strip() for name in allowed.split(",") if name.strip() not in {"—", ""}}
    return table


def unit_of(path: Path) -> str:
    """`ftlab/data/validate.py` → `data`; `ftlab/config.py` → `config`; `ftlab/__init__.py` → `ftlab`."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return "ftlab" if parts == ("__init__",) else parts[0]


def imported_module(node: ast.Import | ast.ImportFrom, path: Path) -> list[str]:
    """Absolute dotted names an import statement reads (relative imports resolved against `path`)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level == 0:
        return [node.module or ""]
    package = list(path.relative_to(REPO).with_suffix("").parts[:-1])
    base = package[: len(package) - (node.level - 1)]
    return [".".join([*base, *([node.module] if node.module else [])])]


def is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(path: Path, text: str | None = None) -> list[Import]:
    """Every import of another ftlab unit in `path` (or in `text`, read as if it were that file)."""
    tree = ast.parse(path.read_text(encoding="utf-8") if text is None else text, filename=str(path))
    type_only_nodes = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and is_type_checking(block.test)
        for statement in block.body
        for node in ast.walk(statement)
    }
    source = unit_of(path)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Import | ast.ImportFrom):
            continue
        for name in imported_module(node, path):
            parts = name.split(".")
            if parts[0] != "ftlab":
                continue
            if len(parts) == 1 and isinstance(node, ast.ImportFrom):  # `from ftlab import x`: x is the unit
                targets = [alias.name for alias in node.names]
            else:
                targets = [parts[1] if len(parts) > 1 else "ftlab"]
            for target in targets:
                if target != source:
                    found.append(Import(str(path.relative_to(REPO)), node.lineno, source, target,
                                        id(node) in type_only_nodes))  # fmt: skip
    return found


def all_imports() -> list[Import]:
    return [imp for path in sorted(PACKAGE.rglob("*.py")) for imp in imports_of(path)]


def breaks_the_table(imp: Import, table: dict[str, set[str]]) -> bool:
    if imp.target == "ftlab" or imp.source == "ftlab":  # the package root holds only the version
        return False
    if imp.type_only:
        return imp.target in FRONT_DOORS and imp.source not in FRONT_DOORS
    return imp.target not in table[imp.source]


def test_the_doc_table_names_every_unit_of_the_package() -> None:
    table = allowed_imports()
    units = {unit_of(path) for path in PACKAGE.rglob("*.py")} - {"ftlab"}
    assert units <= set(table), f"docs/architecture.md has no row for {sorted(units - set(table))}"
    for unit, allowed in table.items():
        assert allowed <= set(table), f"{unit} may import unknown units {sorted(allowed - set(table))}"
        assert unit not in allowed
    for unit in set(table) - FRONT_DOORS:
        assert not table[unit] & FRONT_DOORS, f"the doc lets the domain unit {unit} import a front door"


def test_the_table_has_no_cycles() -> None:
    table = allowed_imports()
    done: set[str] = set()

    def visit(unit: str, path: tuple[str, ...]) -> None:
        assert unit not in path, f"the allowed imports form a cycle: {' -> '.join([*path, unit])}"
        if unit not in done:
            for target in table[unit]:
                visit(target, (*path, unit))
            done.add(unit)

    for unit in table:
        visit(unit, ())


def test_every_import_follows_the_table() -> None:
    table = allowed_imports()
    imports = all_imports()
    assert any(imp.source == "cli" and imp.target == "train" for imp in imports)  # the scan sees lazy imports
    broken = [imp for imp in imports if breaks_the_table(imp, table)]
    unexpected = [f"{imp.file}:{imp.line}: {imp.source} imports {imp.target}"
                  + (" (type-only)" if imp.type_only else "")
                  for imp in broken if (imp.file, imp.target) not in KNOWN_VIOLATIONS]  # fmt: skip
    assert not unexpected, "imports against docs/architecture.md:\n" + "\n".join(unexpected)
    fixed = set(KNOWN_VIOLATIONS) - {(imp.file, imp.target) for imp in broken}
    assert not fixed, f"no longer violated, remove from KNOWN_VIOLATIONS: {sorted(fixed)}"


def test_the_scan_sees_relative_lazy_and_type_only_imports() -> None:
    text = (
        "from typing import TYPE_CHECKING\n"
        "from ..serve import app\n"
        "from .schema import ChatExample\n"
        "if TYPE_CHECKING:\n"
        "    from ftlab.train.recipe import TrainResult\n"
        "def f():\n"
        "    import ftlab.infer.generate\n"
        "    from ftlab import records\n"
    )
    found = {(imp.target, imp.type_only) for imp in imports_of(PACKAGE / "data" / "probe.py", text)}
    assert found == {("serve", False), ("train", True), ("infer", False), ("records", False)}
    table = allowed_imports()
    probe = [Import("p", 1, "data", target, type_only) for target, type_only in sorted(found)]
    assert [imp.target for imp in probe if breaks_the_table(imp, table)] == ["infer", "records", "serve"]


def test_training_and_evaluation_score_replies_with_one_code() -> None:
    """`select_by` (train/) and `ftlab eval` (evaluate/) both score with data/scoring.py, and neither imports the
    other: the metric that picks a checkpoint is the metric an evaluation reports."""
    for path in ("ftlab/train/recipe.py", "ftlab/evaluate/run.py"):
        tree = ast.parse((REPO / path).read_text(encoding="utf-8"))
        assert "ftlab.data.scoring" in {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    table = allowed_imports()
    assert "evaluate" not in table["train"] and "train" not in table["evaluate"]
    assert "data" in table["train"] and "data" in table["evaluate"]
