"""The bridge's browser semantics without a browser: WebAuthnBridge.handle takes the JSON the
page script sends and answers what the page's promise settles with, and attach() drives a
context through its methods only. These run everywhere (no Playwright, no Chromium)."""

from __future__ import annotations

import inspect
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from fido2.cose import ES256, RS256, EdDSA
from fido2.server import Fido2Server
from fido2.utils import websafe_decode, websafe_encode
from fido2.webauthn import PublicKeyCredentialRpEntity, PublicKeyCredentialUserEntity

from softkey.playwright import Account, WebAuthnBridge, attach, bridge_for, bridge_script
from softkey.transports.playwright_bridge import frame_origin
from softkey.transports.webauthn_bridge import BINDING_NAME, origin_of, spki_from_cose

ORIGIN = "http://localhost:8080"


def _create_options(name: str = "alice", **extra: Any) -> dict[str, Any]:
    options: dict[str, Any] = {
        "rp": {"name": "RP"},  # no id: the origin's effective domain, localhost
        "user": {"id": websafe_encode(name.encode()), "name": name, "displayName": name},
        "challenge": websafe_encode(b"c" * 16),
        "pubKeyCredParams": [{"type": "public-key", "alg": -7}],
        "authenticatorSelection": {"residentKey": "required", "userVerification": "discouraged"},
    }
    options.update(extra)
    return options


def _call(bridge: WebAuthnBridge, op: str, options: Any, **kw: Any) -> dict[str, Any]:
    origin = kw.pop("origin", ORIGIN)
    message = {"op": op, "publicKey": options, **kw}
    answer: dict[str, Any] = json.loads(bridge.handle(origin, json.dumps(message)))
    return answer


def _get(bridge: WebAuthnBridge, **kw: Any) -> dict[str, Any]:
    """A login with an empty allowCredentials (UV discouraged: the keys here have no PIN)."""
    return _call(bridge, "get", {"challenge": "AAAA", "userVerification": "discouraged"}, **kw)


def _error(answer: dict[str, Any]) -> str:
    assert "error" in answer, answer
    return str(answer["error"]["name"])


@pytest.fixture
def bridge(softkey: Any) -> WebAuthnBridge:
    return WebAuthnBridge(softkey)


def test_registration_verifies_at_fido2server_and_carries_the_getters(bridge: Any) -> None:
    server = Fido2Server(PublicKeyCredentialRpEntity(id="localhost", name="RP"))
    begin, state = server.register_begin(
        PublicKeyCredentialUserEntity(id=b"alice", name="alice"), user_verification="discouraged"
    )
    answer = _call(bridge, "create", dict(begin)["publicKey"])
    credential = answer["credential"]
    auth_data = server.register_complete(state, credential)  # plus our extra members
    assert credential["authenticatorAttachment"] == "cross-platform"
    response = credential["response"]
    assert websafe_decode(response["authenticatorData"]) == auth_data
    public_key = auth_data.credential_data.public_key
    assert response["publicKeyAlgorithm"] == public_key[3]
    spki = serialization.load_der_public_key(websafe_decode(response["publicKey"]))
    assert type(public_key).from_cryptography_key(spki) == public_key
    assert response["transports"] == ["usb"]
    client_data = json.loads(websafe_decode(response["clientDataJSON"]))
    assert client_data["origin"] == ORIGIN and client_data["type"] == "webauthn.create"


def test_rp_id_defaults_to_the_origins_host_and_must_suffix_it(bridge: Any) -> None:
    answer = _call(bridge, "create", _create_options())
    assert "credential" in answer
    (stored,) = bridge.key.credentials()
    assert stored.rp_id == "localhost"  # the host, without the port
    bad = _create_options(rp={"name": "RP", "id": "example.com"})
    assert _error(_call(bridge, "create", bad)) == "SecurityError"
    assert _error(_call(bridge, "get", {"challenge": "AAAA", "rpId": "localhost.evil"})) == (
        "SecurityError"
    )
    # https: a registrable suffix of the origin's host is fine, a public suffix is not.
    parent = _create_options(rp={"name": "RP", "id": "example.com"})
    assert "credential" in _call(bridge, "create", parent, origin="https://login.example.com")
    com = _create_options(rp={"name": "RP", "id": "com"})
    assert _error(_call(bridge, "create", com, origin="https://example.com")) == "SecurityError"


def test_empty_pub_key_cred_params_means_es256_and_rs256(bridge: Any) -> None:
    answer = _call(bridge, "create", _create_options(pubKeyCredParams=[]))
    assert answer["credential"]["response"]["publicKeyAlgorithm"] == -7


def test_webidl_errors_are_type_errors(bridge: Any) -> None:
    no_challenge = _create_options()
    del no_challenge["challenge"]
    assert _error(_call(bridge, "create", no_challenge)) == "TypeError"
    long_id = _create_options()
    long_id["user"]["id"] = websafe_encode(b"x" * 65)
    assert _error(_call(bridge, "create", long_id)) == "TypeError"
    assert _error(_call(bridge, "get", "not a dictionary")) == "TypeError"
    assert _error(json.loads(bridge.handle(ORIGIN, "{not json"))) == "TypeError"
    assert bridge.key.presence_requests == []


def test_key_refusals_map_to_the_browsers_dom_exceptions(bridge: Any) -> None:
    first = _call(bridge, "create", _create_options())["credential"]
    excluded = _create_options(excludeCredentials=[{"type": "public-key", "id": first["rawId"]}])
    assert _error(_call(bridge, "create", excluded)) == "InvalidStateError"
    rs1_only = _create_options("bob", pubKeyCredParams=[{"type": "public-key", "alg": -65535}])
    assert _error(_call(bridge, "create", rs1_only)) == "NotSupportedError"
    platform = _create_options(authenticatorSelection={"authenticatorAttachment": "platform"})
    assert _error(_call(bridge, "create", platform)) == "NotAllowedError"
    bridge.key.timeout()
    answer = _get(bridge)
    assert _error(answer) == "NotAllowedError"
    assert "USER_ACTION_TIMEOUT" in answer["error"]["message"]


def test_a_cross_origin_frame_or_an_opaque_origin_gets_nothing(bridge: Any) -> None:
    request = json.dumps({"op": "create", "publicKey": _create_options()})
    assert _error(json.loads(bridge.handle(None, request))) == "SecurityError"
    crossed = json.loads(bridge.handle(ORIGIN, request, cross_origin=True))
    assert _error(crossed) == "NotAllowedError"
    assert bridge.key.credentials() == []


def _register(bridge: WebAuthnBridge, *names: str) -> None:
    for name in names:
        assert "credential" in _call(bridge, "create", _create_options(name))


def _user(answer: dict[str, Any]) -> bytes:
    return websafe_decode(answer["credential"]["response"]["userHandle"])


def test_conditional_get_is_pending_without_a_credential(bridge: Any) -> None:
    assert _get(bridge, mediation="conditional") == {"pending": True}
    assert bridge.key.presence_requests == []
    _register(bridge, "alice")
    answer = _get(bridge, mediation="conditional")
    assert _user(answer) == b"alice"
    assert [c["outcome"] for c in bridge.calls] == ["pending", "credential", "credential"]
    assert bridge.calls[0]["mediation"] == "conditional"


def test_choose_picks_the_account(bridge: Any) -> None:
    _register(bridge, "alice", "bob", "carol")
    assert _user(_get(bridge)) == b"carol"  # most recent
    seen: list[list[Account]] = []

    def by_name(accounts: Any) -> Any:
        seen.append(list(accounts))
        return next(a for a in accounts if a.user_name == "alice")

    bridge.choose = by_name
    assert _user(_get(bridge)) == b"alice"
    assert [a.user_name for a in seen[0]] == ["carol", "bob", "alice"]
    assert seen[0][2].user_handle == b"alice"
    bridge.choose = lambda accounts: 1
    assert _user(_get(bridge, mediation="conditional")) == b"bob"
    bridge.choose = lambda accounts: None  # the person picks nothing
    assert _error(_get(bridge)) == "NotAllowedError"
    assert _get(bridge, mediation="conditional") == {"pending": True}
    bridge.choose = lambda accounts: 7
    wrong = _get(bridge)
    assert _error(wrong) == "UnknownError" and "choose()" in wrong["error"]["message"]


def test_prf_output_has_no_empty_second(softkey_factory: Any) -> None:
    bridge = WebAuthnBridge(softkey_factory(pin="1234"))
    options = _create_options(extensions={"prf": {}})
    options["authenticatorSelection"]["userVerification"] = "required"
    created = _call(bridge, "create", options)["credential"]
    assert created["clientExtensionResults"] == {"prf": {"enabled": True}}
    salt = websafe_encode(b"s" * 32)
    request = {"challenge": "AAAA", "userVerification": "required"}
    answer = _call(bridge, "get", {**request, "extensions": {"prf": {"eval": {"first": salt}}}})
    results = answer["credential"]["clientExtensionResults"]["prf"]["results"]
    assert set(results) == {"first"} and len(websafe_decode(results["first"])) == 32
    by_credential = _call(
        bridge,
        "get",
        {"challenge": "AAAA", "extensions": {"prf": {"evalByCredential": {"x": {"first": salt}}}}},
    )
    assert _error(by_credential) == "NotSupportedError"  # L3 §10.1.4: needs allowCredentials


@pytest.mark.parametrize(
    ("profile", "prf", "large_blob"), [("ctap2.1", True, True), ("yubikey-5", True, False)]
)
def test_capabilities_follow_the_profile(
    softkey_factory: Any, profile: str, prf: bool, large_blob: bool
) -> None:
    bridge = WebAuthnBridge(softkey_factory(profile=profile))
    caps = json.loads(bridge.handle(ORIGIN, '{"op": "capabilities"}'))["capabilities"]
    assert caps["extension:prf"] is prf and caps["extension:largeBlob"] is large_blob
    assert caps["conditionalGet"] is True and caps["hybridTransport"] is False


def test_spki_from_cose_for_each_key_type() -> None:
    keys = [
        (ES256, ec.generate_private_key(ec.SECP256R1()).public_key()),
        (EdDSA, ed25519.Ed25519PrivateKey.generate().public_key()),
        (RS256, rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()),
    ]
    for cose_class, public in keys:
        expected = public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        assert spki_from_cose(cose_class.from_cryptography_key(public)) == expected
    assert spki_from_cose({1: 7, 3: -48, -1: b"\x00" * 1312}) is None  # ML-DSA (AKP)
    assert spki_from_cose({1: 2, 3: -7, -1: 1, -2: b"\x01"}) is None  # malformed: no y


class _Frame:
    def __init__(self, url: str, parent: _Frame | None = None) -> None:
        self.url = url
        self.parent_frame = parent


def test_frame_origin_follows_html_origin_rules() -> None:
    top = _Frame("http://localhost:8080/login?x=1")
    assert frame_origin(top) == ("http://localhost:8080", False)
    assert frame_origin(_Frame("about:blank", top)) == ("http://localhost:8080", False)
    assert frame_origin(_Frame("https://idp.example/", top)) == ("https://idp.example", True)
    blob = _Frame("blob:http://localhost:8080/0b5f", top)
    assert frame_origin(blob) == ("http://localhost:8080", False)
    assert frame_origin(_Frame("data:text/html,hi", top)) == (None, True)
    assert origin_of("https://EXAMPLE.com:443/a") == "https://example.com"
    assert origin_of("http://[::1]:8000/") == "http://[::1]:8000"


class _Context:
    """The methods attach() calls on a Playwright BrowserContext (sync API)."""

    def __init__(self) -> None:
        self.bindings: dict[str, Any] = {}
        self.scripts: list[str] = []
        self.handlers: dict[str, list[Any]] = {}
        self.pages: list[Any] = []

    def expose_binding(self, name: str, callback: Any) -> None:
        assert name not in self.bindings  # Playwright refuses a name twice
        self.bindings[name] = callback

    def add_init_script(self, script: str) -> None:
        self.scripts.append(script)

    def on(self, event: str, handler: Any) -> None:
        self.handlers.setdefault(event, []).append(handler)


def test_attach_installs_once_and_swaps_the_key(softkey: Any, softkey_factory: Any) -> None:
    context = _Context()
    assert attach(context, softkey=softkey) is softkey
    (script,) = context.scripts
    assert BINDING_NAME in script and "__SOFTKEY_BINDING__" not in script
    assert script == bridge_script()
    call = context.bindings[BINDING_NAME]
    source = {"frame": _Frame(ORIGIN + "/")}
    request = json.dumps({"op": "create", "publicKey": _create_options()})
    assert "credential" in json.loads(call(source, request))
    assert len(softkey.credentials()) == 1

    other = softkey_factory()
    assert attach(context, softkey=other) is other  # the same binding, now the other key
    assert len(context.bindings) == 1 and len(context.scripts) == 1
    assert "credential" in json.loads(call(source, request))
    assert len(other.credentials()) == 1 and len(softkey.credentials()) == 1
    bridge = bridge_for(context)
    assert bridge is not None and bridge.key is other
    assert bridge_for(_Context()) is None


def test_attach_makes_and_closes_its_own_key() -> None:
    context = _Context()
    key = attach(context, profile="yubikey-5", pin="1234")
    assert key.profile == "yubikey-5" and key.pin == "1234"
    (on_close,) = context.handlers["close"]
    on_close(context)
    with pytest.raises(Exception):  # noqa: B017 - closed: its store is gone
        key.credentials()


def test_attach_refuses_mixed_or_unknown_settings(softkey: Any) -> None:
    with pytest.raises(TypeError, match="give one or the other"):
        attach(_Context(), softkey=softkey, profile="ctap2.0")
    with pytest.raises(TypeError, match="unknown arguments"):
        attach(_Context(), profle="ctap2.0")


def test_attach_on_an_async_context_returns_an_awaitable(softkey: Any) -> None:
    class _AsyncContext(_Context):
        async def expose_binding(self, name: str, callback: Any) -> None:  # type: ignore[override]
            _Context.expose_binding(self, name, callback)

        async def add_init_script(self, script: str) -> None:  # type: ignore[override]
            _Context.add_init_script(self, script)

    context = _AsyncContext()
    pending = attach(context, softkey=softkey)
    assert inspect.isawaitable(pending)
    try:
        pending.send(None)
    except StopIteration as done:
        assert done.value is softkey
    assert BINDING_NAME in context.bindings and len(context.scripts) == 1
