"""What a metric's key says: the metric a run is judged by.

The runs list, its sparklines and the compare page all show this one choice:

    >>> main_metric(["accuracy", "loss", "val_loss"])
    'val_loss'
"""

PREFERRED = ("val_loss", "loss")
NOT_MAIN = ("learning_rate", "lr")


def main_metric(keys):
    """The metric a run is judged by: val_loss, else loss, else its first epoch metric."""
    keys = sorted(keys)
    for key in PREFERRED:
        if key in keys:
            return key
    epoch_keys = [k for k in keys if not k.startswith(("batch/", "system/")) and k not in NOT_MAIN]
    return (epoch_keys or keys or [None])[0]
