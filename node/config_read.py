"""Reading a configuration mapping: typed values, checks, and problems collected, not raised.

Generic helpers for ``node/config.py``: Kubernetes names and quantities, a ``Section`` reader that
records ``(key, problem)`` pairs, and a YAML loader that refuses duplicate keys.
"""
from __future__ import annotations

import difflib
import re
from decimal import Decimal, InvalidOperation
from typing import Any, Callable
from urllib.parse import urlsplit

import yaml

RESOURCE_NAMES = ("cpu", "memory", "ephemeral-storage")

NODE_ID_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,40}[a-z0-9])?", re.ASCII)
LABEL_RE = re.compile(r"[a-z0-9]([a-z0-9_-]{0,61}[a-z0-9])?", re.ASCII)
DNS_LABEL_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", re.ASCII)
DNS_SUBDOMAIN_RE = re.compile(r"(?=.{1,253}$)[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*",
                              re.ASCII)
# Kubernetes label keys ([prefix/]name) and values.
_LABEL_NAME = r"([A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?)"
LABEL_KEY_RE = re.compile(rf"({DNS_SUBDOMAIN_RE.pattern}/)?{_LABEL_NAME}", re.ASCII)
LABEL_VALUE_RE = re.compile(rf"{_LABEL_NAME}?", re.ASCII)
HOST_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]", re.ASCII)

# --- Kubernetes quantities -------------------------------------------------------------------

_QUANTITY_RE = re.compile(
    r"(?P<num>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
    r"(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?", re.ASCII)
_SUFFIX = {
    "": Decimal(1), "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"),
    "k": Decimal("1e3"), "M": Decimal("1e6"), "G": Decimal("1e9"), "T": Decimal("1e12"),
    "P": Decimal("1e15"), "E": Decimal("1e18"),
    "Ki": Decimal(2**10), "Mi": Decimal(2**20), "Gi": Decimal(2**30), "Ti": Decimal(2**40),
    "Pi": Decimal(2**50), "Ei": Decimal(2**60),
}


def parse_quantity(text: object) -> Decimal:
    """The value of a non-negative Kubernetes quantity ("100m", "1", "512Mi", "1e3", 2).

    Raises ValueError for anything else (negative numbers, garbage, bools).
    """
    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        raise ValueError(f"not a quantity: {type(text).__name__}")
    s = str(text)
    m = _QUANTITY_RE.fullmatch(s)
    if m is None:
        raise ValueError(f"not a Kubernetes quantity: {s[:40]!r}")
    suffix = m.group("suffix") or ""
    try:
        num = Decimal(m.group("num"))
        if suffix[:1] in ("e", "E") and len(suffix) > 1:
            exponent = int(suffix[1:])
            if abs(exponent) > 30:
                raise ValueError(f"exponent out of range: {s[:40]!r}")
            return num.scaleb(exponent)
        return num * _SUFFIX[suffix]
    except InvalidOperation as e:
        raise ValueError(f"not a Kubernetes quantity: {s[:40]!r}") from e


# --- reading ---------------------------------------------------------------------------------

MISSING: Any = object()
TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
               list: "a list", dict: "a mapping"}


def type_of(value: object) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a mapping"}.get(type(value), type(value).__name__)


def is_kind(value: object, kind: type) -> bool:
    if isinstance(value, bool):
        return kind is bool
    if kind is float:
        return isinstance(value, (int, float))
    return isinstance(value, kind)


def show_key(key: object) -> str:
    text = key if isinstance(key, str) else repr(key)
    return text if len(text) <= 60 else text[:57] + "..."


class Section:
    """One mapping of the configuration; records problems instead of raising."""

    def __init__(self, raw: object, path: str, problems: list[tuple[str, str]]) -> None:
        self.path = path
        self.problems = problems
        self.seen: set[str] = set()
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            problems.append((path or "<top level>", f"must be a mapping, got {type_of(raw)}"))
            raw = {}
        self.raw: dict = raw

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def problem(self, name: str, text: str) -> None:
        self.problems.append((self.key(name), text))

    def get(self, name: str, kind: type, default: Any = MISSING, *, nullable: bool = False,
            check: Callable[[Any], str | None] | None = None) -> Any:
        self.seen.add(name)
        if name not in self.raw:
            if default is MISSING:
                self.problem(name, "is required")
                return None
            return default
        value = self.raw[name]
        if value is None and nullable:
            return None
        if not is_kind(value, kind):
            self.problem(name, f"must be {TYPE_NAMES[kind]}, got {type_of(value)}")
            return None
        if kind is float:
            value = float(value)
        if check is not None:
            msg = check(value)
            if msg:
                self.problem(name, msg)
                return None
        return value

    def section(self, name: str) -> "Section":
        self.seen.add(name)
        return Section(self.raw.get(name), self.key(name), self.problems)

    def finish(self) -> None:
        known = sorted(self.seen)
        for k in self.raw:
            if k in self.seen:
                continue
            hint = difflib.get_close_matches(str(k), known, n=1)
            extra = f"; did you mean {hint[0]!r}?" if hint else f"; known keys: {', '.join(known)}"
            self.problems.append((self.key(show_key(k)), f"unknown key{extra}"))


def matches(regex: re.Pattern, what: str, rule: str | None = None) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        if regex.fullmatch(value) is None:
            return f"{show_key(value)!r} is not a valid {what} ({rule or 'must match ' + regex.pattern})"
        return None
    return check


HOST_RULE = "a DNS name or IP address, without scheme or port"


def at_least(low: float) -> Callable[[float], str | None]:
    def check(value: float) -> str | None:
        return None if value >= low else f"must be at least {low:g}, got {value:g}"
    return check


def positive(value: float) -> str | None:
    return None if value > 0 else f"must be greater than 0, got {value:g}"


def port_number(low: int) -> Callable[[int], str | None]:
    def check(value: int) -> str | None:
        return None if low <= value <= 65535 else f"must be a port number {low}..65535, got {value}"
    return check


def one_of(*choices: str) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        if value in choices:
            return None
        return f"must be one of {', '.join(choices)}, got {show_key(value)!r}"
    return check


def non_empty(value: str) -> str | None:
    return None if value.strip() else "must not be empty"


def absolute_path(value: str) -> str | None:
    if not value.startswith("/"):
        return f"must be an absolute path, got {show_key(value)!r}"
    if "\0" in value or ".." in value.split("/"):
        return "must not contain '..' components or NUL characters"
    return None


def relative_path(value: str) -> str | None:
    if not value or value.startswith("/"):
        return f"must be a path relative to the claim's root, got {show_key(value)!r}"
    if "\0" in value or ".." in value.split("/"):
        return "must not contain '..' components or NUL characters"
    return None


def http_url(value: str) -> str | None:
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return f"{show_key(value)!r} is not a valid URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"must be an http:// or https:// URL with a host, got {show_key(value)!r}"
    return None


def quantity_problem(value: object) -> str | None:
    try:
        parse_quantity(value)
    except ValueError as e:
        return str(e)
    return None


def get_quantity(sec: Section, name: str, default: str | None) -> str | None:
    """A quantity given as a string or a plain YAML number (``cpu: 1``), kept as a string."""
    sec.seen.add(name)
    if name not in sec.raw:
        return default
    value = sec.raw[name]
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        sec.problem(name, f"must be a Kubernetes quantity like \"500m\" or \"1Gi\", got {type_of(value)}")
        return None
    msg = quantity_problem(value)
    if msg:
        sec.problem(name, msg)
        return None
    return str(value)


def read_resources(sec: Section) -> dict[str, str]:
    """A requests/limits mapping; only its valid entries (the problems are recorded)."""
    out = {}
    for res in RESOURCE_NAMES:
        value = get_quantity(sec, res, None)
        if value is not None:
            out[res] = value
    sec.finish()
    return out


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (PyYAML silently keeps the last one)."""


def _construct_mapping(loader: StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if isinstance(key, (str, int, float, bool)) and key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {show_key(key)!r}", key_node.start_mark)
        seen.add(key) if isinstance(key, (str, int, float, bool)) else None
    return loader.construct_mapping(node, deep=deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
