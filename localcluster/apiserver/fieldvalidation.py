"""Server-side field validation (``fieldValidation`` on POST/PUT/PATCH), as the real API server
(1.27+) decodes request bodies. Pure: the HTTP layer (``writes``) turns the problems found here
into errors or ``Warning`` headers.

- ``Strict``: unknown and duplicate fields fail the request (create/update: 400 BadRequest
  "<Kind> in version "v1" cannot be handled as a <Kind>: strict decoding error: unknown field
  "spec.foo""; patch: 422 Invalid on the field ``patch``);
- ``Warn`` (the default when the parameter is unset): the request succeeds, unknown fields are
  dropped from the stored object, and each problem comes back as ``Warning: 299 - "..."``;
- ``Ignore``: dropped silently.

Problems are worded as the real decoder's (sigs.k8s.io/json): ``unknown field "a.b[0].c"``,
``duplicate field "a.b"``. Other schema violations (types, required fields) are not decided
here: ``validation`` reports them in every mode.
"""
from __future__ import annotations

import json
from typing import Any

from localcluster.apiserver.definitions import definitions, name_of, resolve
from localcluster.apiserver.errors import ApiError, bad_request

STRICT, WARN, IGNORE = "Strict", "Warn", "Ignore"
# sets.NewString(...).List() of the real validation: sorted, with the empty string
_SUPPORTED = ("", IGNORE, STRICT, WARN)
OPTIONS_KIND = {"POST": "CreateOptions", "PUT": "UpdateOptions", "PATCH": "PatchOptions"}


def directive(value: str | None, method: str) -> str:
    """The fieldValidation query parameter; unset is Warn. An unknown value is refused as the
    real server refuses it (422 on CreateOptions/UpdateOptions/PatchOptions)."""
    value = value or ""
    if value not in _SUPPORTED:
        kind = OPTIONS_KIND.get(method, "CreateOptions")
        supported = ", ".join(f'"{v}"' for v in _SUPPORTED)
        message = f'Unsupported value: "{value}": supported values: {supported}'
        raise ApiError(422, "Invalid",
                       f'{kind}.meta.k8s.io "" is invalid: fieldValidation: {message}',
                       {"group": "meta.k8s.io", "kind": kind, "causes": [
                           {"reason": "FieldValueNotSupported", "message": message,
                            "field": "fieldValidation"}]})
    return value or WARN


# --------------------------------------------------------------------------- decoding
class _Object(dict):
    """A decoded JSON object that remembers which of its keys appeared more than once (the
    last value wins, as in the real decoder)."""

    duplicates: tuple[str, ...] = ()


def _pairs(pairs: list[tuple[str, Any]]) -> dict:
    obj = _Object()
    dups: list[str] = []
    for key, value in pairs:
        if key in obj and key not in dups:
            dups.append(key)
        obj[key] = value
    obj.duplicates = tuple(dups)
    return obj


def loads(raw: bytes) -> Any:
    """Parse a request body; objects remember their duplicate keys (see ``check``)."""
    try:
        return json.loads(raw, object_pairs_hook=_pairs)
    except (ValueError, UnicodeDecodeError) as e:
        raise bad_request(f"the request body is not valid JSON: {e}") from e


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def check(value: Any, group: str, version: str, kind: str) -> tuple[Any, list[str]]:
    """(value without unknown fields, problems in document order) for a body of the given kind.
    Unknown: not a property of a closed object schema; maps (labels, data) take any key.
    The result is made of plain dicts and lists."""
    problems: list[str] = []
    name = name_of(group, version, kind)
    schema = definitions().get(name, {}) if name else {}
    return _walk(value, schema, "", problems), problems


def duplicates(value: Any, prefix: str = "") -> tuple[Any, list[str]]:
    """(value as plain dicts and lists, its duplicate-field problems): patch bodies are decoded
    into maps, where nothing is unknown but duplicates are found."""
    problems: list[str] = []
    plain = _walk(value, {}, "", problems)
    return plain, [prefix + p for p in problems]


def _walk(value: Any, schema: Any, path: str, problems: list[str]) -> Any:
    schema = resolve(schema)
    if isinstance(value, dict):
        props = schema.get("properties")
        closed = isinstance(props, dict) and schema.get("additionalProperties") is False
        extra = schema.get("additionalProperties")
        for key in getattr(value, "duplicates", ()):
            # the real decoder checks duplicates only of fields it knows
            if not closed or key in props:
                problems.append(f'duplicate field "{_join(path, key)}"')
        out = {}
        for key, item in value.items():
            sub = _join(path, key)
            if closed and key not in props:
                problems.append(f'unknown field "{sub}"')
                continue
            child = props.get(key) if isinstance(props, dict) and key in props else extra
            out[key] = _walk(item, child if isinstance(child, dict) else {}, sub, problems)
        return out
    if isinstance(value, list):
        items = schema.get("items")
        return [_walk(item, items if isinstance(items, dict) else {}, f"{path}[{i}]", problems)
                for i, item in enumerate(value)]
    return value


# --------------------------------------------------------------------------- outcomes
def strict_error(problems: list[str]) -> str:
    return "strict decoding error: " + ", ".join(problems)


def decode_error(kind: str, version: str, problems: list[str]) -> ApiError:
    """Strict create/update: the body cannot be decoded (400)."""
    return bad_request(f'{kind} in version "{version}" cannot be handled as a {kind}: '
                       f"{strict_error(problems)}")


def patch_error(patched: str, problems: list[str]) -> ApiError:
    """Strict patch: the patched object is invalid on the field ``patch`` (422, with the empty
    kind and name the real patch handler gives it)."""
    shown = json.dumps(patched, ensure_ascii=False)  # Go's %q of the value
    message = f"Invalid value: {shown}: {strict_error(problems)}"
    return ApiError(422, "Invalid", f' "" is invalid: patch: {message}',
                    {"causes": [{"reason": "FieldValueInvalid", "message": message,
                                 "field": "patch"}]})


def go_format(value: Any) -> str:
    """A decoded JSON value as Go's %+v prints it (``map[a:1 b:[x y]]``): how the real server
    shows a strategic merge patch in its errors."""
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{go_format(value[k])}" for k in sorted(value)) + "]"
    if isinstance(value, list):
        return "[" + " ".join(go_format(v) for v in value) + "]"
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def warning_header(text: str) -> str:
    """One Warning header value: code 299, agent "-", the text quoted with \\ and " escaped."""
    quoted = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'299 - "{quoted}"'
