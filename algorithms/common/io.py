"""Reading the task input and writing the output file (atomically: the node may read it at once)."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from .errors import InputError, OutputError


def read_input(path: Path) -> Any:
    """The task input as JSON; an empty file counts as `{}` (a task may have no input)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"input file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read input file {path}: {e}") from e
    if not text.strip():
        return {}
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"input file {path} is not valid JSON: {e}") from e


def write_output(path: Path, data: str | bytes) -> None:
    """Write `data` to `path` via a temporary file in the same directory and an atomic rename."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    directory = path.parent
    tmp_name = None
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
        tmp_name = None
    except OSError as e:
        raise OutputError(f"cannot write output file {path}: {e}") from e
    finally:
        if tmp_name is not None:
            try:
                os.unlink(tmp_name)
            except OSError:
                pass


def write_json_output(path: Path, value: Any) -> None:
    write_output(path, json.dumps(value, sort_keys=True) + "\n")
