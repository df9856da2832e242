"""Label and field selectors (Kubernetes syntax), parsed once and matched against objects.

Label selectors: ``a=b``, ``a==b``, ``a!=b``, ``a in (x,y)``, ``a notin (x)``, ``a``, ``!a``,
comma separated (all must hold). Field selectors: ``f=v``, ``f==v``, ``f!=v`` over the fields a
resource type supports (anything else is 400, as the real API server answers).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

from localcluster.apiserver.errors import bad_request

_KEY = r"(?:[a-zA-Z0-9](?:[-a-zA-Z0-9_.]*[a-zA-Z0-9])?/)?[a-zA-Z0-9](?:[-a-zA-Z0-9_.]*[a-zA-Z0-9])?"
_VAL = r"(?:[a-zA-Z0-9](?:[-a-zA-Z0-9_.]*[a-zA-Z0-9])?)?"
_SET_RE = re.compile(rf"^\s*({_KEY})\s+(in|notin)\s*\(([^)]*)\)\s*$")
_EQ_RE = re.compile(rf"^\s*({_KEY})\s*(==|=|!=)\s*({_VAL})\s*$")
_EXISTS_RE = re.compile(rf"^\s*(!?)\s*({_KEY})\s*$")


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "in", "notin", "exists", "!"
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.op == "exists":
            return self.key in labels
        if self.op == "!":
            return self.key not in labels
        if self.op == "in":
            return self.key in labels and labels[self.key] in self.values
        # notin and != also match objects without the key, as in Kubernetes
        return labels.get(self.key) not in self.values


def _split_top(text: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


class LabelSelector:
    def __init__(self, requirements: Iterable[Requirement] = ()) -> None:
        self.requirements = tuple(requirements)

    @classmethod
    def parse(cls, text: str | None) -> "LabelSelector":
        if not text or not text.strip():
            return cls()
        reqs = []
        for part in _split_top(text):
            if m := _SET_RE.match(part):
                values = frozenset(v.strip() for v in m.group(3).split(",") if v.strip())
                for v in values:
                    if not re.fullmatch(_VAL, v):
                        raise bad_request(f"unable to parse requirement: invalid label value: {v!r}")
                reqs.append(Requirement(m.group(1), m.group(2), values))
            elif m := _EQ_RE.match(part):
                op = "notin" if m.group(2) == "!=" else "in"
                reqs.append(Requirement(m.group(1), op, frozenset([m.group(3)])))
            elif m := _EXISTS_RE.match(part):
                reqs.append(Requirement(m.group(2), "!" if m.group(1) else "exists"))
            else:
                raise bad_request(f"unable to parse requirement: {part.strip()!r} in "
                                  f"label selector {text!r}")
        return cls(reqs)

    @classmethod
    def from_dict(cls, selector: Mapping[str, Any] | None) -> "LabelSelector":
        """A metav1.LabelSelector object (matchLabels / matchExpressions)."""
        if not selector:
            return cls()
        reqs = [Requirement(k, "in", frozenset([v]))
                for k, v in (selector.get("matchLabels") or {}).items()]
        ops = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}
        for e in selector.get("matchExpressions") or []:
            reqs.append(Requirement(e["key"], ops[e["operator"]], frozenset(e.get("values") or [])))
        return cls(reqs)

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        labels = labels or {}
        return all(r.matches(labels) for r in self.requirements)

    def empty(self) -> bool:
        return not self.requirements


def field_value(obj: Mapping[str, Any], path: str) -> str:
    """The string value of a dotted field path; missing fields read as ""."""
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, dict):  # objects are JSON; typing.Mapping's check is slow
            return ""
        cur = cur.get(part)
    if cur is None:
        return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    if isinstance(cur, dict):  # e.g. Event "source" → component
        return str(cur.get("component", ""))
    return str(cur)


class FieldSelector:
    def __init__(self, terms: Iterable[tuple[str, bool, str]] = ()) -> None:
        self.terms = tuple(terms)  # (field, equal?, value)

    @classmethod
    def parse(cls, text: str | None, allowed: Iterable[str] | None = None) -> "FieldSelector":
        if not text or not text.strip():
            return cls()
        allowed_set = set(allowed) if allowed is not None else None
        terms = []
        for part in text.split(","):
            m = re.fullmatch(r"\s*([A-Za-z0-9_.]+)\s*(==|=|!=)\s*(.*?)\s*", part)
            if not m:
                raise bad_request(f"invalid selector: {text!r}; can't understand {part!r}")
            field, op, value = m.groups()
            if allowed_set is not None and field not in allowed_set:
                raise bad_request(f'field label not supported: {field}')
            terms.append((field, op != "!=", value))
        return cls(terms)

    def matches(self, obj: Mapping[str, Any]) -> bool:
        return all((field_value(obj, f) == v) == eq for f, eq, v in self.terms)

    def empty(self) -> bool:
        return not self.terms


def make_filter(label_selector: str | LabelSelector | None,
                field_selector: str | FieldSelector | None,
                allowed_fields: Iterable[str] | None = None) -> Callable[[Mapping[str, Any]], bool]:
    ls = label_selector if isinstance(label_selector, LabelSelector) \
        else LabelSelector.parse(label_selector)
    fs = field_selector if isinstance(field_selector, FieldSelector) \
        else FieldSelector.parse(field_selector, allowed_fields)
    if ls.empty() and fs.empty():
        return lambda obj: True
    return lambda obj: ls.matches((obj.get("metadata") or {}).get("labels")) and fs.matches(obj)
