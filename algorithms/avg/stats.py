"""Reading a numeric CSV column and the arithmetic of (federated) means."""
from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from algorithms.common.errors import DataError


@dataclass(frozen=True)
class Partial:
    """What one node contributes to a federated mean."""

    sum: float
    count: int

    def to_json(self) -> dict:
        return {"sum": self.sum, "count": self.count}


def read_column(path: Path, column: str) -> list[float]:
    """The values of `column` as floats. DataError for an unreadable or empty file, a missing
    column (naming the available ones) or a value that is not a finite number (with its line)."""
    try:
        # utf-8-sig: spreadsheets often write a byte-order mark before the header.
        with open(path, newline="", encoding="utf-8-sig") as f:
            return _parse(csv.reader(f, skipinitialspace=True), path, column)
    except FileNotFoundError:
        raise DataError(f"database file {path} does not exist") from None
    except IsADirectoryError:
        raise DataError(f"database path {path} is a directory, not a CSV file") from None
    except PermissionError as e:
        raise DataError(f"cannot read database file {path}: permission denied") from e
    except OSError as e:
        raise DataError(f"cannot read database file {path}: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise DataError(f"database file {path} is not UTF-8 text (byte {e.start})") from e
    except csv.Error as e:
        raise DataError(f"database file {path} is not valid CSV: {e}") from e


def _parse(reader, path: Path, column: str) -> list[float]:
    header = next(reader, None)
    if header is None or not any(h.strip() for h in header):
        raise DataError(f"database file {path} is empty (no header row)")
    names = [h.strip() for h in header]
    if column not in names:
        raise DataError(f"column {column!r} not found in {path}; "
                        f"available columns: {', '.join(repr(n) for n in names)}")
    index = names.index(column)
    values = []
    for row_number, row in enumerate(reader, start=1):
        if not row:  # csv yields [] for a blank line
            continue
        where = f"row {row_number} (line {reader.line_num})"
        if index >= len(row):
            raise DataError(f"{where} of {path} has no value for column {column!r}")
        raw = row[index].strip()
        values.append(_number(raw, where, column))
    if not values:
        raise DataError(f"database file {path} has no data rows")
    return values


def _number(raw: str, where: str, column: str) -> float:
    if raw == "":
        raise DataError(f"{where}: empty value in column {column!r}")
    try:
        value = float(raw)
    except ValueError:
        raise DataError(f"{where}: value {raw!r} in column {column!r} is not a number") from None
    if not math.isfinite(value):
        raise DataError(f"{where}: value {raw!r} in column {column!r} is not a finite number")
    return value


def partial(values: Iterable[float]) -> Partial:
    values = list(values)
    return Partial(sum=math.fsum(values), count=len(values))


def mean(values: Iterable[float]) -> float:
    p = partial(values)
    if p.count == 0:
        raise DataError("no values to average")
    return p.sum / p.count


def combine(partials: Iterable[Partial]) -> tuple[float, int]:
    """(mean, count) over the union of the partials' data."""
    partials = list(partials)
    count = sum(p.count for p in partials)
    if count == 0:
        raise DataError("no values to average: every partial result has count 0")
    return math.fsum(p.sum for p in partials) / count, count


def parse_partial(data: object, source: str) -> Partial:
    """A partial result as the server returns it: the JSON text of the run's output file."""
    if isinstance(data, (str, bytes)):
        try:
            data = json.loads(data)
        except ValueError as e:
            raise DataError(f"{source}: result is not JSON: {e}") from e
    if not isinstance(data, dict):
        raise DataError(f"{source}: result is not a JSON object")
    s, n = data.get("sum"), data.get("count")
    if (not isinstance(s, (int, float)) or isinstance(s, bool) or not math.isfinite(s)
            or not isinstance(n, int) or isinstance(n, bool) or n < 0):
        raise DataError(f"{source}: result needs a finite number 'sum' and a count >= 0, "
                        f"got sum={s!r}, count={n!r}")
    return Partial(sum=float(s), count=n)
