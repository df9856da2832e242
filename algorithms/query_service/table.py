"""The service's data: one CSV database read once at start, answered from memory (pure)."""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

from algorithms.common.errors import DataError


class QueryError(Exception):
    """A query the table cannot answer; ``status`` is the HTTP status to send."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Table:
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]

    @property
    def count(self) -> int:
        return len(self.rows)

    def values(self, column: str) -> list[float]:
        if column not in self.columns:
            raise QueryError(404, f"unknown column {column!r}; columns: {', '.join(self.columns)}")
        index = self.columns.index(column)
        values = []
        for number, row in enumerate(self.rows, start=1):
            raw = row[index].strip() if index < len(row) else ""
            try:
                value = float(raw)
            except ValueError:
                raise QueryError(400, f"column {column!r} is not numeric: row {number} "
                                      f"holds {raw[:40]!r}") from None
            if not math.isfinite(value):
                raise QueryError(400, f"column {column!r} is not numeric: row {number} "
                                      f"holds {raw[:40]!r}")
            values.append(value)
        return values

    def mean(self, column: str) -> dict:
        values = self.values(column)
        if not values:
            raise QueryError(404, "the database has no rows")
        return {"column": column, "mean": math.fsum(values) / len(values), "count": len(values)}


def load_table(path: Path) -> Table:
    """Read the whole CSV (header row first); DataError when it cannot be used."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f, skipinitialspace=True)
            header = next(reader, None)
            rows = tuple(tuple(row) for row in reader if row)
    except OSError as e:
        raise DataError(f"cannot read database file {path}: {e.strerror or e}") from e
    except (UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"database file {path} is not UTF-8 CSV: {e}") from e
    if header is None or not any(h.strip() for h in header):
        raise DataError(f"database file {path} is empty (no header row)")
    return Table(columns=tuple(h.strip() for h in header), rows=rows)
