"""Headless Chromium for the browser tests: find the system Chromium, launch it with Playwright."""

import os
import shutil
from contextlib import contextmanager

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path():
    "The system Chromium: `$RNN_TUTORIAL_CHROMIUM` if set, else `chromium` or `chromium-browser` on PATH, else None."
    env = os.environ.get("RNN_TUTORIAL_CHROMIUM")
    if env:
        return env  # named on purpose: if it is wrong, launching fails loudly rather than skipping
    return shutil.which("chromium") or shutil.which("chromium-browser")


@contextmanager
def chromium(executable_path):
    "Playwright's chromium, headless, on `executable_path`; yields the Browser and closes it."
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable_path, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
