"""Recipe files for the command emitter: one or more tasks in YAML, checked with line numbers.

```yaml
tasks:
  - name: average age          # optional
    image: v6-demo/avg
    arguments: [/app/input/csv/default, Age]   # optional container args
    input: {column: Age}       # optional, any YAML value (sent as JSON)
    databases: [default]       # optional
    nodes: [node-a, node-b]    # optional, default: every node of the server
    repeat: 2                  # optional, default 1
    service:                   # optional companion service, passed on as given (CONTRACTS §10)
      {image: v6-demo/query-service, port: 8000, readiness: {http_path: /ready}, databases: [default]}
```
Every error names the file, line and key path, e.g. ``recipe.yaml:4: tasks[0].repeat: ...``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import yaml

LABEL_RE = re.compile(r"^[a-z0-9]([a-z0-9_-]{0,61}[a-z0-9])?$")
MAX_REPEAT = 1000
TASK_KEYS = ("name", "image", "arguments", "input", "databases", "nodes", "repeat", "service")


class RecipeError(Exception):
    """A recipe that cannot be used; the message points at the offending line and key."""


@dataclass(frozen=True)
class RecipeTask:
    body: dict      # the POST /api/task body
    repeat: int


def _fail(source: str, node: yaml.Node, path: str, problem: str) -> RecipeError:
    return RecipeError(f"{source}:{node.start_mark.line + 1}: {path}: {problem}")


def _str_list(loader, source, node, path, label=False) -> list[str]:
    if not isinstance(node, yaml.SequenceNode):
        raise _fail(source, node, path, "expected a list of strings")
    out = []
    for i, item in enumerate(node.value):
        value = loader.construct_object(item, deep=True)
        if not isinstance(value, str) or not value:
            raise _fail(source, item, f"{path}[{i}]", "expected a non-empty string")
        if label and not LABEL_RE.match(value):
            raise _fail(source, item, f"{path}[{i}]", f"{value!r} is not a valid database label")
        out.append(value)
    return out


def _task(loader, source: str, node: yaml.Node, path: str) -> RecipeTask:
    if not isinstance(node, yaml.MappingNode):
        raise _fail(source, node, path, "expected a mapping with at least 'image'")
    body: dict[str, Any] = {}
    repeat = 1
    seen = set()
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node)
        where = f"{path}.{key}"
        if key not in TASK_KEYS:
            raise _fail(source, key_node, where, f"unknown key (allowed: {', '.join(TASK_KEYS)})")
        if key in seen:
            raise _fail(source, key_node, where, "key given twice")
        seen.add(key)
        if key in ("name", "image"):
            value = loader.construct_object(value_node)
            if not isinstance(value, str) or not value.strip():
                raise _fail(source, value_node, where, "expected a non-empty string")
            body[key] = value
        elif key == "arguments":
            body[key] = _str_list(loader, source, value_node, where)
        elif key in ("databases", "nodes"):
            body[key] = _str_list(loader, source, value_node, where, label=key == "databases")
        elif key == "input":
            body[key] = loader.construct_object(value_node, deep=True)
        elif key == "service":  # the node checks its fields
            if not isinstance(value_node, yaml.MappingNode):
                raise _fail(source, value_node, where, "expected a mapping with at least 'image' and 'port'")
            body[key] = loader.construct_object(value_node, deep=True)
        else:  # repeat
            repeat = loader.construct_object(value_node)
            if isinstance(repeat, bool) or not isinstance(repeat, int) or not 1 <= repeat <= MAX_REPEAT:
                raise _fail(source, value_node, where, f"expected an integer from 1 to {MAX_REPEAT}")
    if "image" not in body:
        raise _fail(source, node, path, "missing required key 'image'")
    return RecipeTask(body=body, repeat=repeat)


def parse_recipe(text: str, source: str = "<recipe>") -> list[RecipeTask]:
    try:
        # the reader checks the characters at once: a control character raised ReaderError
        # out of the loader's constructor, past every handler below (tests/reliability)
        loader = yaml.SafeLoader(text)
    except yaml.reader.ReaderError as e:
        line = text.count("\n", 0, max(e.position, 0)) + 1
        raise RecipeError(f"{source}:{line}: invalid YAML: character #x{e.character:04x} is "
                          f"not allowed") from e
    try:
        try:
            root = loader.get_single_node()
        except yaml.MarkedYAMLError as e:
            mark = e.problem_mark or e.context_mark
            line = mark.line + 1 if mark else "?"
            raise RecipeError(f"{source}:{line}: invalid YAML: {e.problem or e}") from e
        except yaml.YAMLError as e:
            raise RecipeError(f"{source}: invalid YAML: {e}") from e
        if root is None:
            raise RecipeError(f"{source}: the recipe is empty; expected 'tasks: [...]'")
        if not isinstance(root, yaml.MappingNode):
            raise _fail(source, root, "(top level)", "expected a mapping with the key 'tasks'")
        tasks_node = None
        for key_node, value_node in root.value:
            key = loader.construct_object(key_node)
            if key != "tasks":
                raise _fail(source, key_node, str(key), "unknown key (allowed: tasks)")
            tasks_node = value_node
        if tasks_node is None:
            raise _fail(source, root, "tasks", "missing required key")
        if not isinstance(tasks_node, yaml.SequenceNode) or not tasks_node.value:
            raise _fail(source, tasks_node, "tasks", "expected a non-empty list of tasks")
        return [_task(loader, source, n, f"tasks[{i}]") for i, n in enumerate(tasks_node.value)]
    except yaml.constructor.ConstructorError as e:
        mark = e.problem_mark
        raise RecipeError(f"{source}:{mark.line + 1 if mark else '?'}: {e.problem}") from e
    finally:
        loader.dispose()
