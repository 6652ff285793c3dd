"""Keras callbacks that take no action worth reporting, re-exported unchanged.

`from callboard.client import TensorBoard` is `keras.callbacks.TensorBoard`, so a
script can import every callback from one place.
"""

from keras.callbacks import (
    Callback,
    CSVLogger,
    History,
    LambdaCallback,
    ProgbarLogger,
    TensorBoard,
)

__all__ = ["CSVLogger", "Callback", "History", "LambdaCallback", "ProgbarLogger", "TensorBoard"]
