"""Values in and out: non-finite floats travel as "NaN", "Infinity", "-Infinity"; text as UTF-8.

Text that UTF-8 cannot encode (lone surrogates, e.g. from a JSON `"\\ud800"`)
or PostgreSQL cannot store (NUL) is kept with U+FFFD in its place.
"""

import math
import re

NON_FINITE_NAMES = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
REPLACEMENT = "\ufffd"
LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # a str holds a valid pair as one character
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


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


def valid_unicode(text):
    """`text` with each lone surrogate replaced by U+FFFD; anything not a str as it is.

    Example:
        >>> valid_unicode("a\\ud800b")
        'a\ufffdb'
    """
    if isinstance(text, str) and not text.isascii():
        return LONE_SURROGATE.sub(REPLACEMENT, text)
    return text


def storable_text(text):
    """`valid_unicode(text)` with NUL replaced by U+FFFD too: text any database stores.

    Example:
        >>> storable_text("gpu\\x001")
        'gpu\ufffd1'
    """
    if isinstance(text, str) and (not text.isascii() or "\x00" in text):
        return UNSTORABLE.sub(REPLACEMENT, text)
    return text


def json_safe(value):
    """`value` as strict JSON any database stores, for JSON columns and answers.

    Non-finite floats become their names, text and keys go through
    `storable_text`, bytes are decoded (undecodable ones as U+FFFD).
    """
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, float) and not math.isfinite(value):
        return encode_number(value)
    if isinstance(value, dict):
        return {storable_text(str(k)): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, bytes):
        return storable_text(value.decode("utf-8", "replace"))
    return value
