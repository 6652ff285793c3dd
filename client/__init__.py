"""Callboard's training-side callbacks and run API.

`import callboard.client` stays light: Keras is imported only when a Keras
callback is first used.

Example:
    ```python
    from callboard.client import RemoteMonitor, RemoteStop

    model.fit(x, y, epochs=10, callbacks=[RemoteMonitor(run="baseline"), RemoteStop()])
    ```
"""

import importlib

from .run import Run

_CALLBACK_MODULES = {
    "RemoteMonitor": "remote_monitor",
    "RemoteStop": "remote_stop",
}

__all__ = ["Run", *_CALLBACK_MODULES]


def __getattr__(name):
    module_name = _CALLBACK_MODULES.get(name)
    if module_name is None:
        raise AttributeError(f"module 'callboard.client' has no attribute {name!r}")
    module = importlib.import_module(f".{module_name}", __name__)
    value = getattr(module, name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(__all__)
