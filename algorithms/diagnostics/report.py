"""The report: a list of checks, each true (as expected), false (not as expected) or undecided."""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool | None  # None: the check could not decide, and `detail` says why
    detail: str

    def to_json(self) -> dict:
        return asdict(self)


def passed(name: str, detail: str) -> Check:
    return Check(name, True, detail)


def failed(name: str, detail: str) -> Check:
    return Check(name, False, detail)


def undecided(name: str, detail: str) -> Check:
    return Check(name, None, detail)


def summary(checks: list[Check]) -> str:
    label = {True: "PASS", False: "FAIL", None: "UNDECIDED"}
    lines = [f"{label[c.ok]:9} {c.name}: {c.detail}" for c in checks]
    counts = {v: sum(1 for c in checks if c.ok is k) for k, v in label.items()}
    lines.append(f"{counts['PASS']} passed, {counts['FAIL']} failed, "
                 f"{counts['UNDECIDED']} undecided")
    return "\n".join(lines)
