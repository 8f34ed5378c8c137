"""softkey behind ``navigator.credentials`` in Playwright browser tests.

    from softkey.playwright import attach

    key = attach(context)                    # sync API; a new key closed with the context
    key = attach(context, softkey=softkey)   # the pytest fixture's key
    key = await attach(context)              # async API (or attach_async)

Every page of the context then runs its unmodified WebAuthn JavaScript against the key, through
python-fido2's WebAuthn client in the page's origin (README "Use from a browser test",
docs/ci.md "Playwright, headless, any OS"). The pytest plugin adds the fixture
``softkey_context``: pytest-playwright's ``context`` with the ``softkey`` fixture attached.

This package is transports/playwright_api/ in the repository (pyproject.toml maps it): the
implementation lives in softkey.transports.playwright_bridge and .webauthn_bridge.
"""

from __future__ import annotations

from softkey.transports.playwright_bridge import attach, attach_async, bridge_for
from softkey.transports.webauthn_bridge import (
    BINDING_NAME,
    Account,
    WebAuthnBridge,
    bridge_script,
    most_recent,
)

__all__ = [
    "BINDING_NAME",
    "Account",
    "WebAuthnBridge",
    "attach",
    "attach_async",
    "bridge_for",
    "bridge_script",
    "most_recent",
]
