"""What a metric's key says: the metric a run is judged by.

The runs list, its sparklines and the compare page all show this one choice:

    >>> main_metric(["accuracy", "loss", "val_loss"])
    'val_loss'
"""

PREFERRED = ("val_loss", "loss")
LEARNING_RATE_KEYS = ("learning_rate", "lr")  # Keras 3, tf.keras 2: never the main metric


def main_metric(keys):
    """The metric a run is judged by: val_loss, else loss, else its first epoch metric."""
    keys = sorted(keys)
    for key in PREFERRED:
        if key in keys:
            return key
    epoch_keys = [
        k for k in keys if not k.startswith(("batch/", "system/")) and k not in LEARNING_RATE_KEYS
    ]
    return (epoch_keys or keys or [None])[0]
