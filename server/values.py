"""Metric values in and out: non-finite floats travel as "NaN", "Infinity", "-Infinity"."""

import math

NON_FINITE_NAMES = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def parse_number(value):
    """Return `value` as a float; accept numbers and the three non-finite names.

    Raises ValueError for anything else (booleans, other strings, containers,
    integers too large for a float).

    Example:
        >>> parse_number("-Infinity")
        -inf
    """
    if isinstance(value, bool):
        raise ValueError("must be a number, got a boolean")
    if isinstance(value, (int, float)):
        try:
            return float(value)
        except OverflowError:  # an integer beyond any float
            raise ValueError("must be a number within the range of a float") from None
    if isinstance(value, str) and value in NON_FINITE_NAMES:
        return NON_FINITE_NAMES[value]
    raise ValueError(f'must be a number or "NaN" / "Infinity" / "-Infinity", got {value!r}')


def encode_number(value):
    """The JSON form of a stored value; NULL (how NaN is stored) reads back as "NaN"."""
    if value is None or math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def to_column(value):
    """The stored form of a float: NaN becomes NULL (SQLite cannot hold NaN)."""
    return None if math.isnan(value) else value


def json_safe(value):
    """`value` with every non-finite float inside it replaced by its name, for JSON columns."""
    if isinstance(value, float) and not math.isfinite(value):
        return encode_number(value)
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
