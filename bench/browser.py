"""Debian's Chromium as the benchmarks, the browser tests and the screenshot script start it.

Example:
    ```python
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
    ```
"""

import os

CHROMIUM = os.environ.get("CALLBOARD_CHROMIUM", "/usr/bin/chromium")
# Headless as root, with nothing that phones home: this machine's network is closed.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def launch_chromium(playwright):
    """A headless Chromium browser from Playwright's sync API."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
