"""softkey behind ``navigator.credentials`` in a Playwright browser context (public API:
``softkey.playwright``, transports/playwright_api/).

``attach(context)`` exposes one binding to the context (``BrowserContext.expose_binding``: the
page calls it, Playwright runs the Python callback with the calling frame) and adds the page
script (webauthn_bridge.js) to every document before the page's own scripts
(``add_init_script``), and to the documents already open. The callback hands the request to a
``WebAuthnBridge`` (transports/webauthn_bridge.py) with the frame's origin as Playwright reports
it, never as the page claims it.

Playwright's sync and async APIs both work: a context whose ``expose_binding`` is a coroutine
function is an async one, and ``attach`` then returns an awaitable. Playwright itself is never
imported here; this module only calls the context's methods.
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from softkey.transports.webauthn_bridge import (
    BINDING_NAME,
    Chooser,
    WebAuthnBridge,
    bridge_script,
    origin_of,
)

if TYPE_CHECKING:
    from softkey.transports.pytest_plugin import SoftKey


class _Attachment:
    """What a context's binding answers with; ``attach`` again swaps the key in place."""

    def __init__(self, bridge: WebAuthnBridge) -> None:
        self.bridge = bridge

    def __call__(self, source: Any, request: Any) -> str:
        origin, cross_origin = frame_origin(source.get("frame") if source else None)
        return self.bridge.handle(origin, str(request), cross_origin=cross_origin)


# One attachment per browser context (weakly held: a closed, dropped context takes it along).
_ATTACHED: weakref.WeakKeyDictionary[Any, _Attachment] = weakref.WeakKeyDictionary()


def bridge_for(context: Any) -> WebAuthnBridge | None:
    """The bridge answering ``context`` (its ``key``, ``choose`` and ``calls`` log), or None."""
    attachment = _ATTACHED.get(context)
    return attachment.bridge if attachment is not None else None


def frame_origin(frame: Any) -> tuple[str | None, bool]:
    """(origin, cross_origin) of the frame that called, from the URLs Playwright reports.

    about:blank / about:srcdoc frames have the origin of the frame that made them (HTML's
    origin inheritance), blob: URLs the origin they embed, data: URLs an opaque one (None).
    cross_origin: an ancestor frame has another origin (WebAuthn L3 §5.1.3's
    sameOriginWithAncestors is false)."""
    chain = []
    while frame is not None:
        chain.append(frame)
        frame = frame.parent_frame
    origins: list[str | None] = []
    parent: str | None = None
    for current in reversed(chain):  # the top-level frame first
        url = str(current.url)
        if url.startswith("about:"):
            origin = parent
        elif url.startswith("blob:"):
            origin = origin_of(url[len("blob:") :])
        else:
            origin = origin_of(url)
        origins.append(origin)
        parent = origin
    if not origins:
        return None, False
    own = origins[-1]
    return own, any(other != own for other in origins[:-1])


def _key(softkey: SoftKey | None, options: dict[str, Any]) -> tuple[SoftKey, bool]:
    if softkey is not None:
        if options:
            raise TypeError(
                f"attach() got key settings {sorted(options)} and softkey=: give one or the "
                "other (the key you pass already has its profile, PIN and presence)"
            )
        return softkey, False
    from softkey.transports.pytest_plugin import _FACTORY_ARGS, make_softkey

    unknown = set(options) - set(_FACTORY_ARGS)
    if unknown:
        raise TypeError(
            f"attach() got unknown arguments {sorted(unknown)}; key settings are "
            f"{', '.join(_FACTORY_ARGS)}"
        )
    return make_softkey(**options), True


def _prepare(
    context: Any, softkey: SoftKey | None, choose: Chooser | None, options: dict[str, Any]
) -> tuple[SoftKey, _Attachment | None]:
    """The key, and a new attachment to install (None: the context had one, now updated)."""
    key, owned = _key(softkey, options)
    bridge = WebAuthnBridge(key, choose=choose)
    existing = _ATTACHED.get(context)
    if owned:
        # A key attach() made lives as long as the context.
        context.on("close", lambda *_: key.close())
    if existing is not None:
        existing.bridge = bridge
        return key, None
    attachment = _ATTACHED[context] = _Attachment(bridge)
    return key, attachment


def attach(
    context: Any, softkey: SoftKey | None = None, *, choose: Chooser | None = None, **options: Any
) -> Any:
    """Put a softkey behind ``navigator.credentials`` in every page of ``context``.

    ``softkey``: the key to use, e.g. the ``softkey`` pytest fixture; else one is made from
    ``options`` (``profile``, ``pin``, ``presence``, ``state``, ``template``, ``enrolled``:
    the fixture's settings) and closed with the context. ``choose(accounts)`` is the person at
    the account chooser and at Conditional UI's list (see ``WebAuthnBridge``). Returns the key
    (a ``SoftKey``: presence, PIN, credentials, reset ...).

    With Playwright's async API, ``await attach(context)``. Attaching a context again replaces
    its key. Attach before the pages load, or reload them: documents already open get the
    script now, but a page that captured ``navigator.credentials.create`` earlier keeps it.
    """
    if inspect.iscoroutinefunction(getattr(context, "expose_binding", None)):
        return attach_async(context, softkey, choose=choose, **options)
    key, attachment = _prepare(context, softkey, choose, options)
    if attachment is not None:
        script = bridge_script()
        context.expose_binding(BINDING_NAME, attachment)
        context.add_init_script(script=script)
        for page in context.pages:
            for frame in page.frames:
                _run_in_open_frame(lambda f=frame: f.evaluate(script))
    return key


async def attach_async(
    context: Any, softkey: SoftKey | None = None, *, choose: Chooser | None = None, **options: Any
) -> SoftKey:
    """``attach`` for Playwright's async API (``attach`` returns this coroutine for one)."""
    key, attachment = _prepare(context, softkey, choose, options)
    if attachment is not None:
        script = bridge_script()
        await context.expose_binding(BINDING_NAME, attachment)
        await context.add_init_script(script=script)
        for page in context.pages:
            for frame in page.frames:
                await _run_in_open_frame_async(frame.evaluate(script))
    return key


def _run_in_open_frame(call: Any) -> None:
    try:
        call()
    except Exception:  # noqa: BLE001 - a frame navigating or closing: its next document
        pass  # gets the script from add_init_script


async def _run_in_open_frame_async(call: Awaitable[Any]) -> None:
    try:
        await call
    except Exception:  # noqa: BLE001 - as above
        pass
