"""Regenerate docs/screenshots/: the runs, run, compare and rules pages over real Keras runs.

Starts a server on a fresh SQLite file, trains three small real Keras models against it
(two that finish, one that a plateau rule stops mid-training), and shoots the pages in
Debian's Chromium. Usage: `python docs/make_screenshots.py`.
"""

import os
import sys
import tempfile
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for `bench`
from bench.browser import launch_chromium  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

OUT = Path(__file__).resolve().parent / "screenshots"


def train(root, name, hidden, learning_rate, epochs, seed=0, project="screenshots"):
    """A small binary classifier, reporting every epoch and every 10 batches."""
    import keras
    import numpy as np

    from callboard.client import ModelCheckpoint, ReduceLROnPlateau, RemoteControl, RemoteMonitor

    keras.utils.set_random_seed(hidden + seed)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4096, 20)).astype("float32")
    y = (x[:, :5].sum(axis=1) + 0.8 * rng.normal(size=4096) > 0).astype("float32")
    model = keras.Sequential(
        [
            keras.Input((20,)),
            keras.layers.Dense(hidden, activation="relu"),
            keras.layers.Dense(hidden, activation="relu"),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    model.compile(keras.optimizers.Adam(learning_rate), "binary_crossentropy", metrics=["accuracy"])
    folder = tempfile.mkdtemp()
    return model.fit(
        x,
        y,
        validation_split=0.25,
        epochs=epochs,
        batch_size=64,
        verbose=0,
        callbacks=[
            RemoteMonitor(
                root=root,
                run=name,
                project=project,
                batch_frequency=10,
                tags=["mlp", f"h{hidden}"],
                config={
                    "optimizer": "adam",
                    "learning_rate": learning_rate,
                    "hidden": hidden,
                    "layers": 2,
                    "seed": seed,
                    "data": {"samples": 4096, "noise": 0.8},
                },
            ),
            RemoteControl(),
            ModelCheckpoint(f"{folder}/best.keras", monitor="val_loss", save_best_only=True),
            ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=2),
        ],
    )


PLATEAU_RULE = {
    "name": "val_loss stopped improving",
    "project": "screenshots",
    "condition": {"kind": "plateau", "metric": "val_loss", "patience": 4, "min_delta": 0.002},
    "actions": [{"kind": "command", "command": "stop_after_epoch"}],
}


def shoot(root, run_id, compare_ids, seeds_ids):
    from playwright.sync_api import sync_playwright

    OUT.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        for scheme, suffix in (("light", ""), ("dark", "-dark")):
            context = browser.new_context(
                viewport={"width": 1280, "height": 900}, color_scheme=scheme
            )
            page = context.new_page()
            page.goto(root + "/")
            page.wait_for_selector("body[data-ready=true]")
            page.locator("svg.sparkline polyline").last.wait_for()
            page.screenshot(path=OUT / f"runs{suffix}.png", full_page=True)
            page.goto(f"{root}/runs/{run_id}")
            page.wait_for_selector("body[data-charts-ready=true]")
            page.wait_for_selector("#timeline li")
            page.screenshot(path=OUT / f"run{suffix}.png", full_page=True)
            page.goto(f"{root}/compare?ids={','.join(map(str, compare_ids))}")
            page.wait_for_selector("body[data-charts-ready=true]")
            page.wait_for_selector("#best-table tbody tr")
            page.screenshot(path=OUT / f"compare{suffix}.png", full_page=True)
            # Three seeds of each setting (a project the plateau rule leaves alone): grouped by
            # learning rate, mean ± std bands.
            ids = ",".join(map(str, seeds_ids))
            page.goto(f"{root}/compare?ids={ids}&metric=val_loss&group=config.learning_rate")
            page.wait_for_selector("body[data-charts-ready=true]")
            page.wait_for_selector("#parallel-chart .scatterlayer .trace")
            page.screenshot(path=OUT / f"groups{suffix}.png", full_page=True)
            page.goto(f"{root}/rules")
            page.wait_for_selector("#notifications li.alert")
            page.screenshot(path=OUT / f"rules{suffix}.png", full_page=True)
            context.close()
        browser.close()


def main():
    from tests.server_process import ServerProcess

    with tempfile.TemporaryDirectory() as folder:
        server = ServerProcess(f"sqlite:///{Path(folder) / 'screenshots.db'}").start()
        root = server.root
        try:
            train(root, "baseline-h16", hidden=16, learning_rate=1e-3, epochs=30)
            train(root, "wide-h64", hidden=64, learning_rate=3e-3, epochs=30)
            httpx.post(f"{root}/api/v1/rules", json=PLATEAU_RULE).raise_for_status()
            train(root, "wide-h64-lr1e-2", hidden=64, learning_rate=1e-2, epochs=60)
            runs = httpx.get(f"{root}/api/v1/runs", params={"sort": "oldest"}).json()["runs"]
            ids = [run["id"] for run in runs]
            for learning_rate in (1e-3, 1e-2):
                for seed in (1, 2, 3):
                    name = f"h32-lr{learning_rate:g}-seed{seed}"
                    train(root, name, 32, learning_rate, 20, seed, project="seeds")
            runs = httpx.get(f"{root}/api/v1/runs", params={"sort": "oldest"}).json()["runs"]
            shoot(root, ids[-1], ids, [run["id"] for run in runs][len(ids) :])
        finally:
            server.stop()
    print(f"Wrote {', '.join(sorted(p.name for p in OUT.glob('*.png')))} to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
