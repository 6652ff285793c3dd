"""A tiny real Keras model for end-to-end tests."""

import time

import keras
import numpy as np


def tiny_model(seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)]
    )
    model.compile(optimizer="adam", loss="mse", metrics=["mae"])
    return model


def tiny_data(samples=128, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(samples, 4)).astype("float32")
    return x, x.sum(axis=1, keepdims=True)


def slow_batches(seconds):
    """A callback that makes each batch take at least `seconds`."""
    return keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: time.sleep(seconds)
    )


def inject_logs(**values):
    """A callback that adds `values` to each epoch's logs (for later callbacks to see)."""

    def add(epoch, logs):
        for key, value in values.items():
            logs[key] = value(epoch) if callable(value) else value

    return keras.callbacks.LambdaCallback(on_epoch_end=add)
