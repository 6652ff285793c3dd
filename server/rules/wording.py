"""A rule in words, as people read it: its condition and its actions, from the rule's JSON.

The command line (`callboard rules`) prints them; the dashboard says the same. Plain
functions of the JSON, importing nothing: the command line starts without the server's models.

Example:
    >>> condition_in_words({"kind": "above", "metric": "val_loss", "value": 2.5})
    'val_loss above 2.5'
    >>> actions_in_words([{"kind": "command", "command": "stop", "value": None, "factor": None}])
    'command stop'
"""


def _number(value):
    return f"{value:g}"


def _better(condition):
    """What "better" means for a `mode max` metric; nothing for `min`, the usual case (a loss)."""
    return " (higher is better)" if condition.get("mode") == "max" else ""


def _plateau(condition):
    delta = condition.get("min_delta") or 0
    by = f" by {_number(delta)}" if delta else ""
    epochs = condition["patience"]
    return (
        f"{condition['metric']} has not improved{by}{_better(condition)} "
        f"for {epochs} epoch{'s' if epochs != 1 else ''}"
    )


def _worse_than_median(condition):
    warmup = condition.get("warmup") or 0
    since = f" from epoch {warmup} on" if warmup else ""
    better = _better(condition)
    return f"{condition['metric']} worse than the project's median{better}{since}"


WORDING = {
    "nan": lambda condition: f"{condition['metric']} is NaN or infinite",
    "above": lambda condition: f"{condition['metric']} above {_number(condition['value'])}",
    "below": lambda condition: f"{condition['metric']} below {_number(condition['value'])}",
    "plateau": _plateau,
    "worse_than_median": _worse_than_median,
    "status": lambda condition: f"run status becomes {condition['status']}",
    "silent": lambda condition: f"no event for {_number(condition['seconds'])} s",
}


def condition_in_words(condition):
    """A rule's condition (its JSON) as a short phrase; a kind this version does not know as
    its fields.

    Example:
        >>> condition_in_words({"kind": "nan", "metric": "loss"})
        'loss is NaN or infinite'
        >>> condition_in_words({"kind": "plateau", "metric": "val_loss", "patience": 3,
        ...                     "min_delta": 0.001, "mode": "min"})
        'val_loss has not improved by 0.001 for 3 epochs'
        >>> condition_in_words({"kind": "worse_than_median", "metric": "acc", "warmup": 2,
        ...                     "mode": "max", "min_runs": 3})
        "acc worse than the project's median (higher is better) from epoch 2 on"
        >>> condition_in_words({"kind": "status", "status": "failed"})
        'run status becomes failed'
        >>> condition_in_words({"kind": "silent", "seconds": 60.0})
        'no event for 60 s'
        >>> condition_in_words({"kind": "someday", "metric": "loss"})
        'someday (metric loss)'
    """
    kind = condition.get("kind")
    try:
        return WORDING[kind](condition)
    except (KeyError, TypeError, ValueError):  # a newer kind, or fields of another shape
        fields = ", ".join(f"{key} {value}" for key, value in condition.items() if key != "kind")
        return f"{kind} ({fields})" if fields else str(kind)


def action_in_words(action):
    """One action of a rule as its answer shows it (a webhook's URL cut, never its secret).

    Example:
        >>> action_in_words({"kind": "webhook", "url": "https://hooks.example.org/…",
        ...                  "has_secret": True})
        'webhook https://hooks.example.org/… (signed)'
        >>> action_in_words({"kind": "command", "command": "set_learning_rate", "factor": 0.5})
        'command set_learning_rate ×0.5'
    """
    kind = action.get("kind")
    if kind == "webhook":
        return f"webhook {action.get('url')}{' (signed)' if action.get('has_secret') else ''}"
    if kind == "command":
        words = f"command {action.get('command')}"
        if action.get("value") is not None:
            return f"{words} {_number(action['value'])}"
        if action.get("factor") is not None:
            return f"{words} ×{_number(action['factor'])}"
        return words
    return str(kind)


def actions_in_words(actions):
    """A rule's actions, in order, as one phrase: "webhook https://…/… (signed), command stop"."""
    return ", ".join(action_in_words(action) for action in actions)
