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


def as_float(value):
    """A Python, NumPy, tensor or array scalar as a float; None for anything else.

    Example:
        >>> import numpy as np
        >>> as_float(np.float32(0.5)), as_float([1.0]), as_float(True)
        (0.5, None, None)
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if hasattr(value, "item"):  # NumPy, torch, JAX: only a one-element array has an item
        try:
            value = value.item()
        except (TypeError, ValueError, RuntimeError, IndexError):
            return None
        return None if isinstance(value, bool) else as_float(value)
    if hasattr(value, "__float__") and getattr(value, "shape", ()) in ((), []):
        try:
            return float(value)  # e.g. a scalar tf.Tensor
        except (TypeError, ValueError):
            return None
    return None


def scalar_logs(logs):
    """Keep the scalar entries of Keras `logs`, as JSON-safe Python numbers."""
    metrics = {}
    for key, value in (logs or {}).items():
        number = as_float(value)
        if number is not None:
            metrics[str(key)] = encode_number(number)
    return metrics
