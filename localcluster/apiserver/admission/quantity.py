"""Resource quantities ("500m", "1Gi", 2) as exact numbers, and back in Kubernetes' canonical
form (what a Quantity's String() gives: "1536Mi", "500m", "1k"), for quota usage and messages."""
from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_BINARY = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_RE = re.compile(r"([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(Ki|Mi|Gi|Ti|Pi|Ei|[eE][+-]?[0-9]+|[numkMGTPE]?)")


class QuantityError(ValueError):
    pass


class Quantity:
    """An exact value and whether it was written with a binary suffix (which its sums keep)."""

    __slots__ = ("value", "binary")

    def __init__(self, value: Decimal, binary: bool = False) -> None:
        self.value = value
        self.binary = binary

    @classmethod
    def parse(cls, raw: object) -> "Quantity":
        if isinstance(raw, bool):
            raise QuantityError(f"quantities must match the regular expression: {raw!r}")
        if isinstance(raw, (int, float)):
            return cls(Decimal(str(raw)))
        m = _RE.fullmatch(str(raw).strip()) if isinstance(raw, str) else None
        if m is None:
            raise QuantityError(f"quantities must match the regular expression "
                                f"'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$': {raw!r}")
        try:
            number = Decimal(m.group(1))
        except InvalidOperation as e:
            raise QuantityError(f"invalid quantity {raw!r}") from e
        suffix = m.group(2)
        if suffix in _BINARY:
            return cls(number * (2 ** _BINARY[suffix]), True)
        if suffix[:1] in ("e", "E"):
            return cls(number.scaleb(int(suffix[1:])))
        return cls(number.scaleb(_DECIMAL[suffix]))

    def __add__(self, other: "Quantity") -> "Quantity":
        return Quantity(self.value + other.value, self.binary)

    def __str__(self) -> str:
        return canonical(self.value, self.binary)

    def __repr__(self) -> str:
        return f"Quantity({self})"


def _round_up_nano(value: Decimal) -> Decimal:
    # Quantities keep nano precision; anything finer is rounded up, as resource.Quantity does
    scaled = value.scaleb(9)
    integral = scaled.to_integral_value(rounding="ROUND_CEILING")
    return integral.scaleb(-9)


def canonical(value: Decimal, binary: bool = False) -> str:
    value = _round_up_nano(value)
    if value == 0:
        return "0"
    if binary and value == value.to_integral_value() and abs(value) >= 1024:
        n = int(value)
        for suffix, shift in sorted(_BINARY.items(), key=lambda kv: -kv[1]):
            if n % (1 << shift) == 0:
                return f"{n >> shift}{suffix}"
        return str(n)
    # decimal SI: the largest exponent (a multiple of 3) that leaves an integral mantissa
    for suffix, exp in sorted(_DECIMAL.items(), key=lambda kv: -kv[1]):
        mantissa = value.scaleb(-exp)
        if mantissa == mantissa.to_integral_value():
            return f"{int(mantissa)}{suffix}"
    return f"{int(value.scaleb(9))}n"
