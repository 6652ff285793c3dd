"""`callboard demo`: a real (small) Keras training reporting live to a Callboard server."""

import threading
import time

from rich.console import Console

console = Console()


def start_server_thread(settings, host, port):
    """Run a server in a daemon thread; return the uvicorn `Server` once it listens."""
    import uvicorn

    from .main import create_app
    from .serving import uvicorn_options

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
            raise RuntimeError(f"the demo server could not start on {host}:{port}")
        time.sleep(0.05)
    return server


def train_demo_model(root, epochs, run_name="demo"):
    """Train a small classifier on synthetic data, reporting to `root`; return its History."""
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
    slow_down = keras.callbacks.LambdaCallback(on_epoch_end=lambda *_: time.sleep(0.5))
    return model.fit(
        x,
        y,
        validation_split=0.2,
        epochs=epochs,
        batch_size=64,
        verbose=2,
        callbacks=[
            RemoteMonitor(
                root=root,
                run=run_name,
                project="demo",
                batch_frequency=5,
                config={"optimizer": "adam", "learning_rate": 1e-3, "hidden": 32},
            ),
            RemoteStop(),
            ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=3),
            EarlyStopping(monitor="val_loss", patience=8),
            slow_down,
        ],
    )


def run_demo(settings, port=8000, epochs=30, root=None, keep_serving=True):
    server = None
    if root is None:
        server = start_server_thread(settings, "127.0.0.1", port)
        root = f"http://127.0.0.1:{port}"
        console.print(
            f"Callboard is serving [bold]{root}[/bold]  (database {settings.database_url})"
        )
    console.print(
        f"Training a small Keras model; watch it live at {root}/ "
        f"and press Stop there (or run `callboard stop demo`)."
    )
    train_demo_model(root, epochs)
    console.print(f"Training done. The run is at {root}/  —  REST: {root}/api/v1/runs")
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
