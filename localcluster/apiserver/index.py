"""Indexes of one resource type's stored objects: by namespace, by label and by a few fields.

A real API server answers lists from its watch cache, which indexes pods by spec.nodeName and
narrows by namespace through etcd's key prefix. Scanning every object for every list instead made
a list O(objects) and the work of N runs O(N²): at 1,000 runs in flight, 45 % of the stand-in's
time went to lists with label or field selectors (benchmarks/profile.md). The index only gives
candidates; the full selector is still applied to each one, so the answer is the same as a scan.
"""
from __future__ import annotations

from localcluster.apiserver.selectors import FieldSelector, LabelSelector, field_value

Key = tuple[str, str]  # (namespace or "", name)

# Field paths indexed besides metadata.name: the ones the node and the controllers select on.
INDEXED_FIELDS: dict[str, tuple[str, ...]] = {
    "pods": ("spec.nodeName",),
    "events": ("involvedObject.name", "involvedObject.uid"),
}


class Index:
    def __init__(self, plural: str) -> None:
        self.fields = ("metadata.name",) + INDEXED_FIELDS.get(plural, ())
        self._by_ns: dict[str, set[Key]] = {}
        self._by_label: dict[tuple[str, str], set[Key]] = {}
        self._by_field: dict[tuple[str, str], set[Key]] = {}

    def add(self, key: Key, obj: dict) -> None:
        self._each(key, obj, _add)

    def discard(self, key: Key, obj: dict) -> None:
        self._each(key, obj, _discard)

    def candidates(self, namespace: str | None, ls: LabelSelector,
                   fs: FieldSelector) -> set[Key] | None:
        """The keys that can match, or None for "any object of the type" (nothing narrows)."""
        sets: list[set[Key]] = []
        if namespace:
            sets.append(self._by_ns.get(namespace, set()))
        for req in ls.requirements:
            if req.op == "in":  # a=b, a==b, a in (b, c): the union of the values' sets
                keys: set[Key] = set()
                for value in req.values:
                    keys |= self._by_label.get((req.key, value), set())
                sets.append(keys)
        for path, equal, value in fs.terms:
            if equal and path in self.fields:
                sets.append(self._by_field.get((path, value), set()))
        if not sets:
            return None
        # from the smallest set: copying the namespace's (every pod) first made each list of
        # one Job's pods O(pods in the namespace)
        sets.sort(key=len)
        found = set(sets[0])
        for keys in sets[1:]:
            if not found:
                break
            found &= keys
        return found

    def _each(self, key: Key, obj: dict, op) -> None:
        meta = obj.get("metadata") or {}
        op(self._by_ns, key[0], key)
        for label in (meta.get("labels") or {}).items():
            op(self._by_label, label, key)
        for path in self.fields:
            op(self._by_field, (path, field_value(obj, path)), key)


def _add(table: dict, at, key: Key) -> None:
    table.setdefault(at, set()).add(key)


def _discard(table: dict, at, key: Key) -> None:
    keys = table.get(at)
    if keys is not None:
        keys.discard(key)
        if not keys:
            del table[at]
