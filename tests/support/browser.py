"""Chromium for the browser tests (Debian's ``/usr/bin/chromium`` driven by Playwright), with
the rule of every external part: skip locally when it is missing, fail under ``CI=true``
(`tests.support.services.require_service`). Screenshots go to ``screenshots/console/``."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.support.services import require_service

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parents[2] / "screenshots" / "console"
# Flags for a headless Chromium in a container: no sandbox (no user namespaces here), no GPU,
# nothing that reaches the network on its own.
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def require_chromium() -> None:
    """Skip (fail under ``CI=true``) unless Chromium and Playwright are both installed."""
    require_service(
        "Chromium", CHROMIUM.exists(), f"{CHROMIUM} is not installed (apt-get install chromium)"
    )
    require_service(
        "Playwright",
        importlib.util.find_spec("playwright") is not None,
        "the playwright package is not installed",
    )


@contextmanager
def chromium() -> Iterator[Any]:
    """A launched Chromium (Playwright's sync API), closed afterwards; makes `SHOTS`."""
    require_chromium()
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield browser
        finally:
            browser.close()
