"""The ``softkey_context`` fixture in a relying party's pytest-playwright suite, run as such: a
separate pytest process (pytester) where pytest-playwright's own fixtures launch the browser
(the system's Chromium, through its documented ``browser_type_launch_args`` override) and
softkey's plugin, loaded through its entry point, supplies the fixture."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # browserkit: shared helpers (importlib mode)
from browserkit import CHROMIUM_ARGS, RpServer, require_browser  # noqa: E402

pytest_plugins = ["pytester"]

CONFTEST = """
import pytest

@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    return {{**browser_type_launch_args, "executable_path": {path!r}, "args": {args!r}}}
"""

RP_TEST = """
import pytest

@pytest.mark.softkey(profile="yubikey-5")
def test_login_page(softkey_context, softkey, page):
    assert page.context is softkey_context
    page.goto({url!r})
    registered = page.evaluate("register('alice')")
    assert registered["server"]["username"] == "alice", registered
    assert page.evaluate("login(null)")["server"]["username"] == "alice"
    assert [c.user_name for c in softkey.credentials()] == ["alice"]
    softkey.deny()
    assert page.evaluate("login('alice')")["error"]["name"] == "NotAllowedError"
"""


def test_softkey_context_in_a_pytest_playwright_suite(
    pytester: pytest.Pytester, rp_server: RpServer
) -> None:
    chromium = require_browser(pytest_playwright=True)
    pytester.makeconftest(CONFTEST.format(path=chromium, args=CHROMIUM_ARGS))
    pytester.makepyfile(test_rp=RP_TEST.format(url=rp_server.url))
    result = pytester.runpytest_subprocess(
        "-q", "-p", "no:randomly", "-p", "no:cacheprovider", timeout=300
    )
    result.assert_outcomes(passed=1)
    assert [r["ceremony"] for r in rp_server.rp.verified] == ["register", "login"]
