"""`Finding`: one result of a data check — what is wrong, where, and how to fix it."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

Severity = Literal["error", "warning", "info"]
SEVERITY_ORDER = {"error": 0, "warning": 1, "info": 2}


class Finding(BaseModel):
    """A validation result. `lines` are 1-based line numbers of the file (several for duplicates)."""

    severity: Severity
    check: str = Field(description="short name of the check, e.g. 'schema', 'exact_duplicate'")
    message: str
    lines: list[int] = Field(default_factory=list)
    message_index: int | None = None
    field: str | None = None
    fix: str | None = Field(None, description="what to do about it")

    def location(self) -> str:
        parts = []
        if self.lines:
            shown = ", ".join(str(n) for n in self.lines[:8])
            more = f" (+{len(self.lines) - 8} more)" if len(self.lines) > 8 else ""
            parts.append(f"line{'s' if len(self.lines) > 1 else ''} {shown}{more}")
        if self.message_index is not None:
            parts.append(f"messages[{self.message_index}]")
        if self.field:
            parts.append(f"field '{self.field}'")
        return ", ".join(parts)


def sort_findings(findings: list[Finding]) -> list[Finding]:
    """Errors first, then warnings, then info; within a severity by first line."""
    return sorted(findings, key=lambda f: (SEVERITY_ORDER[f.severity], f.lines[0] if f.lines else 0))
