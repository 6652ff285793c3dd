"""`callboard demo`: a real (small) Keras training reporting live to a Callboard server.

It trains until someone presses Stop (or Ctrl-C), so a newcomer has time to open the
page and try the controls; `--epochs N` trains N epochs instead.
"""

import threading
import time

from rich.console import Console

from callboard.client._api import DEFAULT_ROOT, same_root

console = Console()
UNTIL_STOPPED = 1_000_000  # epochs: about 10 days at the demo's pace
SECONDS_BETWEEN_EPOCHS = 0.5


class DemoServerFailed(RuntimeError):
    """The demo's own server did not start listening."""


def start_server_thread(settings, host, port):
    """Run a server in a daemon thread; return the uvicorn `Server` once it listens."""
    import uvicorn

    from callboard.server.http.serving import uvicorn_options
    from callboard.server.main import create_app

    config = uvicorn.Config(
        create_app(settings),
        host=host,
        port=port,
        log_level="warning",
        timeout_graceful_shutdown=1,
        **uvicorn_options(settings),
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="callboard-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise DemoServerFailed(f"The demo server could not start on {host}:{port}")
        time.sleep(0.05)
    return server


def train_demo_model(root, epochs=None, run_name="demo", token=None):
    """Train a small classifier on synthetic data, reporting to `root`; return its History.

    With `epochs=None` it trains until a remote stop (no early stopping); else at most
    `epochs` epochs, ended early when `val_loss` stops improving. `token` goes with
    every request (a server with tokens needs an ingest token for project `demo`).
    """
    import keras
    import numpy as np

    from callboard.client import EarlyStopping, ReduceLROnPlateau, RemoteMonitor, RemoteStop

    rng = np.random.default_rng(0)
    x = rng.normal(size=(4096, 20)).astype("float32")
    y = (x[:, :5].sum(axis=1) + 0.5 * rng.normal(size=4096) > 0).astype("float32")
    model = keras.Sequential(
        [
            keras.Input((20,)),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy", metrics=["accuracy"]
    )
    slow_down = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda *_: time.sleep(SECONDS_BETWEEN_EPOCHS)
    )
    callbacks = [
        RemoteMonitor(
            root=root,
            run=run_name,
            project="demo",
            batch_frequency=5,
            config={"optimizer": "adam", "learning_rate": 1e-3, "hidden": 32},
            token=token,
        ),
        RemoteStop(),
        ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=3, min_lr=1e-6),
        slow_down,
    ]
    if epochs is not None:
        callbacks.append(EarlyStopping(monitor="val_loss", patience=8))
    try:
        return model.fit(
            x,
            y,
            validation_split=0.2,
            epochs=UNTIL_STOPPED if epochs is None else epochs,
            batch_size=64,
            verbose=2,
            callbacks=callbacks,
        )
    except KeyboardInterrupt as exc:  # Keras calls no callback: the run ends `stopped`
        if callbacks[0].run is not None:
            callbacks[0].run.end_with(exc)
        raise


def run_demo(settings, port=8000, epochs=None, root=None, keep_serving=True, token=None):
    """Serve on `port` (unless `root` names a running server) and train the demo model."""
    server = None
    if root is None:
        server = start_server_thread(settings, "127.0.0.1", port)
        root = f"http://127.0.0.1:{port}"
        console.print(f"Callboard is serving [bold]{root}[/bold]")
    length = "until you stop it" if epochs is None else f"for at most {epochs} epochs"
    elsewhere = "" if same_root(root, DEFAULT_ROOT) else f" --root {root}"
    console.print(
        f"Training a small Keras model {length}: watch it live at {root}/ and press Stop "
        f"there (or run `callboard stop demo{elsewhere}`, or press Ctrl-C here).",
        soft_wrap=True,
    )
    try:
        train_demo_model(root, epochs, token=token)
    except KeyboardInterrupt:
        console.print("Training interrupted.")
        keep_serving = False
    else:
        console.print(f"Training ended. The run is at {root}/  —  REST: {root}/api/v1/runs")
    if server is None or not keep_serving:
        if server is not None:
            server.should_exit = True
        return
    console.print("Serving until Ctrl-C.")
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        server.should_exit = True
