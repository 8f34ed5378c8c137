"""softkey.playwright with Playwright's async API.

The coroutine runs in a thread of its own: a sync Playwright started by another browser test
module leaves its event loop marked running on the main thread, where ``asyncio.run`` would
refuse to start. The key is made in that thread too (its SQLite connection stays there).
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from softkey.playwright import attach, attach_async, bridge_for

sys.path.insert(0, str(Path(__file__).parent))  # browserkit: shared helpers (importlib mode)
from browserkit import RpServer, launch_options  # noqa: E402


def _run(main: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """asyncio.run(main()) in a new thread; its result, or its exception re-raised here."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = asyncio.run(main())
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
            outcome["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def test_async_api_register_and_login(rp_server: RpServer) -> None:
    options = launch_options()

    async def main() -> dict[str, Any]:
        from playwright.async_api import async_playwright

        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(**options)
            context = await browser.new_context()
            key = await attach(context, profile="yubikey-5", pin="1234")
            page = await context.new_page()
            await page.goto(rp_server.url)
            registered = await page.evaluate("register('alice', {userVerification: 'required'})")
            usernameless = await page.evaluate("login(null)")
            key.deny()
            denied = await page.evaluate("login('alice')")
            # A second context, the same key: attach_async with softkey=.
            other = await browser.new_context()
            assert await attach_async(other, softkey=key) is key
            key.approve()
            second = await other.new_page()
            await second.goto(rp_server.url)
            from_other = await second.evaluate("login('alice')")
            bridge = bridge_for(context)
            result = {
                "registered": registered,
                "usernameless": usernameless,
                "denied": denied,
                "from_other": from_other,
                "residents": [c.user_name for c in key.credentials("localhost")],
                "profile": key.profile,
                "outcomes": [c["outcome"] for c in bridge.calls] if bridge else None,
            }
            await browser.close()
            return result

    result = _run(main)
    assert result["registered"]["server"]["user_verified"] is True
    assert result["usernameless"]["server"]["username"] == "alice"
    assert result["denied"]["error"]["name"] == "NotAllowedError"
    assert result["from_other"]["server"]["username"] == "alice"
    assert result["residents"] == ["alice"] and result["profile"] == "yubikey-5"
    assert result["outcomes"] == ["credential", "credential", "NotAllowedError"]
    assert [r["ceremony"] for r in rp_server.rp.verified] == ["register", "login", "login"]
