"""Non-finite floats on the wire: JSON has no NaN, so they travel as strings."""

import functools
import math
import re

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
        try:
            return float(value)
        except OverflowError:  # an integer beyond any float
            return None
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


# The server's rule for names of metrics, runs and projects (`MetricKey` and `Name` in
# server/schemas.py), mirrored so a bad metric name is dropped here alone instead of the
# server refusing its whole event, and a bad run name is said before training starts.
MAX_NAME_LENGTH = 200
_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f]")


@functools.lru_cache(maxsize=4096)
def name_problem(name):
    """Why the server would refuse `name` (of a metric, run or project), or None if it takes it.

    Example:
        >>> name_problem("val_loss") is None, name_problem("a\\nb")
        (True, 'holds a control character')
    """
    if not name:
        return "is empty"
    if len(name) > MAX_NAME_LENGTH:
        return f"is longer than {MAX_NAME_LENGTH} characters"
    if _CONTROL_CHARACTER.search(name):
        return "holds a control character"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "holds a lone surrogate"
    return None


def check_run_names(name, project):
    """Raise `ValueError` for a run or project name the server would refuse.

    Example:
        >>> check_run_names("baseline", "vision")
    """
    for label, value in (("name", name), ("project", project)):
        if value is not None and (problem := name_problem(str(value))):
            raise ValueError(f"run {label} {value!r} {problem}")


def clean_metrics(metrics):
    """Split `metrics` into what the server takes and what it would refuse.

    Returns `(kept, dropped)`: `kept` maps valid names to JSON-safe numbers
    (numbers, or the strings "NaN" / "Infinity" / "-Infinity"); `dropped` maps
    each refused name to why.

    Example:
        >>> clean_metrics({"loss": 0.5, "x" * 201: 1.0, "acc": "high"})[0]
        {'loss': 0.5}
    """
    kept, dropped = {}, {}
    for key, value in (metrics or {}).items():
        name = str(key)
        problem = name_problem(name)
        if isinstance(value, str) and value in NON_FINITE:
            number = value
        else:
            number = as_float(value)
            if number is None and problem is None:
                problem = f"has a value that is not a number ({type(value).__name__})"
        if problem is None:
            kept[name] = encode_number(number)
        else:
            dropped[name] = problem
    return kept, dropped


# The server's limits on JSON it stores (`limit_nesting` in server/schemas.py).
MAX_JSON_NESTING = 8
MAX_JSON_KEY_LENGTH = 200


def plain_json(value, notes, where="config", depth=0):
    """`value` as JSON the server stores, noting in `notes` what had to change.

    NumPy, torch, JAX and TensorFlow values become numbers or lists, non-finite
    floats their strings, tuples and sets lists; a key over 200 characters is
    dropped, a container nested past 8 levels and any other object become
    text. Each such change appends a note naming where it happened.

    Example:
        >>> import numpy as np
        >>> notes = []
        >>> plain_json({"lr": np.float32(0.5), "sizes": (1, 2), "opt": object}, notes)
        {'lr': 0.5, 'sizes': [1, 2], 'opt': "<class 'object'>"}
        >>> notes
        ['config.opt (type) sent as text']
    """
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return encode_number(value)
    if isinstance(value, (dict, list, tuple, set, frozenset)) and depth >= MAX_JSON_NESTING:
        notes.append(f"{where} nested deeper than {MAX_JSON_NESTING} levels sent as text")
        return str(value)
    if isinstance(value, dict):
        kept = {}
        for key, item in value.items():
            key = str(key)
            if len(key) > MAX_JSON_KEY_LENGTH:
                notes.append(f"{where}: key {key[:40]!r}... over 200 characters dropped")
                continue
            kept[key] = plain_json(item, notes, f"{where}.{key}", depth + 1)
        return kept
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain_json(item, notes, f"{where}[{i}]", depth + 1) for i, item in enumerate(value)]
    for convert in ("tolist", "numpy"):  # NumPy, torch, JAX; a TensorFlow tensor
        if callable(getattr(value, convert, None)):
            try:
                return plain_json(getattr(value, convert)(), notes, where, depth)
            except Exception:  # noqa: BLE001 - any failure: fall back to text below
                break
    notes.append(f"{where} ({type(value).__name__}) sent as text")
    return str(value)
