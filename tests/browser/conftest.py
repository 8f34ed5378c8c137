"""Fixtures of the browser tests: the system's headless Chromium (one per module, a new
context per test) and the relying party of browserkit.py.

Where Playwright or a Chromium is missing the browser tests skip, saying which;
SOFTKEY_REQUIRE_BROWSER=1 (set by .ci/run) makes that a failure instead.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # browserkit: shared helpers (importlib mode)
from browserkit import RpServer, launch_options  # noqa: E402


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """A headless Chromium (Playwright's sync API) shared by the module's tests."""
    options = launch_options()  # skips or fails first when there is no browser
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(**options)
        yield browser
        browser.close()


@pytest.fixture
def browser_context(chromium: Any) -> Iterator[Any]:
    context = chromium.new_context()
    yield context
    context.close()


@pytest.fixture
def rp_server() -> Iterator[RpServer]:
    server = RpServer()
    yield server
    server.close()
