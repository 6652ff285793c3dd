"""Non-finite floats on the wire: JSON has no NaN, so they travel as strings."""

import math

NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def encode_number(value):
    """Return `value` as a JSON-safe number, or "NaN" / "Infinity" / "-Infinity".

    Example:
        >>> encode_number(float("inf"))
        'Infinity'
    """
    if isinstance(value, float) and not math.isfinite(value):
        if math.isnan(value):
            return "NaN"
        return "Infinity" if value > 0 else "-Infinity"
    return value


def scalar_logs(logs):
    """Keep the scalar entries of Keras `logs`, as JSON-safe Python numbers."""
    metrics = {}
    for key, value in (logs or {}).items():
        if hasattr(value, "item") and getattr(value, "size", 1) == 1:
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        metrics[str(key)] = encode_number(float(value))
    return metrics
