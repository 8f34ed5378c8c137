"""softkey.playwright in headless Chromium (Playwright's sync API): an unmodified WebAuthn page
against the pytest fixture's key, every ceremony verified by the relying party's Fido2Server.

The page (browserkit.PAGE) returns either the server's verification record (``server``) or
the exception the page caught (``error``: name, message, whether it is a DOMException).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import load_der_public_key
from fido2.webauthn import AuthenticatorData

from softkey.playwright import attach, bridge_for

sys.path.insert(0, str(Path(__file__).parent))  # browserkit: shared helpers (importlib mode)
from browserkit import RpServer, decode  # noqa: E402


@pytest.fixture
def rp_page(browser_context: Any, rp_server: RpServer, softkey: Any) -> Any:
    """The relying party's page in a context whose WebAuthn is the softkey fixture's key."""
    assert attach(browser_context, softkey=softkey) is softkey
    page = browser_context.new_page()
    page.goto(rp_server.url)
    return page


def _error(outcome: dict[str, Any]) -> str:
    assert "error" in outcome, outcome
    assert outcome["error"]["domException"] or outcome["error"]["name"] == "TypeError"
    return str(outcome["error"]["name"])


def _wait_for_call(page: Any, context: Any, count: int) -> None:
    """Let Playwright deliver the page's binding calls until the bridge has seen ``count``."""
    bridge = bridge_for(context)
    assert bridge is not None
    for _ in range(500):
        if len(bridge.calls) >= count:
            return
        page.wait_for_timeout(10)
    raise AssertionError(f"the page made {len(bridge.calls)} WebAuthn calls, not {count}")


# -- registration and login ------------------------------------------------------------------


def test_register_resident_key_then_usernameless_login(
    rp_page: Any, rp_server: RpServer, softkey: Any
) -> None:
    registered = rp_page.evaluate("register('alice', {residentKey: 'required'})")
    record = registered["server"]
    assert record["ceremony"] == "register" and record["username"] == "alice"
    (stored,) = rp_server.rp.credentials("alice")
    (resident,) = softkey.credentials("localhost")
    assert resident.credential_id == stored.credential_id and resident.user_name == "alice"

    shape = registered["shape"]
    assert shape["isPublicKeyCredential"] and shape["isAttestationResponse"]
    assert shape["attachment"] == "cross-platform" and shape["transports"] == ["usb"]
    assert shape["toJSONid"] == record["credential_id"]
    # getPublicKey() is the attested COSE key as SubjectPublicKeyInfo, with its algorithm.
    spki = load_der_public_key(decode(shape["publicKey"]))
    assert type(stored.public_key).from_cryptography_key(spki) == stored.public_key
    assert shape["publicKeyAlgorithm"] == stored.public_key.ALGORITHM
    auth_data = AuthenticatorData(decode(shape["authenticatorData"]))
    assert auth_data.credential_data == stored

    login = rp_page.evaluate("login(null)")  # empty allowCredentials: usernameless
    assert login["server"]["username"] == "alice"
    assert login["server"]["credential_id"] == record["credential_id"]
    assert login["shape"]["isPublicKeyCredential"] and login["shape"]["isAssertionResponse"]
    assert decode(login["shape"]["userHandle"]) == rp_server.rp.users["alice"]["id"]


def test_login_with_allow_credentials_for_a_non_resident_credential(
    rp_page: Any, rp_server: RpServer, softkey: Any
) -> None:
    registered = rp_page.evaluate("register('bob', {residentKey: 'discouraged'})")
    assert registered["server"]["username"] == "bob"
    assert softkey.credentials() == []  # the key kept nothing: the ID carries the key
    login = rp_page.evaluate("login('bob')")  # allowCredentials: bob's credential ID
    assert login["server"]["credential_id"] == registered["server"]["credential_id"]
    # Seed 002's bug: a usernameless login cannot find a non-resident credential.
    assert _error(rp_page.evaluate("login(null)")) == "NotAllowedError"
    assert [r["ceremony"] for r in rp_server.rp.verified] == ["register", "login"]


# -- conditional mediation -------------------------------------------------------------------


def test_conditional_mediation_answers_with_the_most_recent_or_the_chosen_account(
    rp_page: Any, browser_context: Any, softkey: Any
) -> None:
    for name in ("alice", "carol"):
        assert "server" in rp_page.evaluate(f"register('{name}')")
    assert rp_page.evaluate("PublicKeyCredential.isConditionalMediationAvailable()") is True

    rp_page.evaluate("startConditional()")
    outcome = rp_page.evaluate("conditional.promise")
    assert outcome["server"]["username"] == "carol"  # the most recent credential

    # The person at the autofill list picks alice this time (attach again: same context).
    attach(
        browser_context,
        softkey=softkey,
        choose=lambda accounts: [a.user_name for a in accounts].index("alice"),
    )
    rp_page.evaluate("startConditional()")
    assert rp_page.evaluate("conditional.promise")["server"]["username"] == "alice"


def test_conditional_mediation_stays_pending_without_a_credential_until_aborted(
    rp_page: Any, browser_context: Any, softkey: Any
) -> None:
    rp_page.evaluate("startConditional()")
    _wait_for_call(rp_page, browser_context, 1)
    bridge = bridge_for(browser_context)
    assert bridge is not None
    assert bridge.calls[-1]["mediation"] == "conditional"
    assert bridge.calls[-1]["outcome"] == "pending"
    assert rp_page.evaluate("conditional.settled") is False
    assert softkey.presence_requests == []  # nothing was offered, the key was not asked

    rp_page.evaluate("conditional.controller.abort()")
    assert _error(rp_page.evaluate("conditional.promise")) == "AbortError"


# -- what a real key refuses -----------------------------------------------------------------


def test_exclude_credentials_is_invalid_state(rp_page: Any, rp_server: RpServer) -> None:
    assert "server" in rp_page.evaluate("register('alice')")
    again = rp_page.evaluate("register('alice', {exclude: true})")
    assert _error(again) == "InvalidStateError"
    assert "CREDENTIAL_EXCLUDED" in again["error"]["message"]
    assert len(rp_server.rp.verified) == 1


@pytest.mark.softkey(profile="yubikey-5")
def test_a_full_yubikey_5_refuses_the_26th_passkey(
    rp_page: Any, rp_server: RpServer, softkey: Any
) -> None:
    outcomes = rp_page.evaluate(
        """async () => {
            const out = [];
            for (let i = 0; i < 26; i++) out.push(await register('user' + i));
            return out;
        }"""
    )
    assert all("server" in o for o in outcomes[:25]), outcomes[:25]
    assert _error(outcomes[25]) == "NotAllowedError"
    assert "KEY_STORE_FULL" in outcomes[25]["error"]["message"]
    assert len(softkey.credentials("localhost")) == 25
    assert len(rp_server.rp.verified) == 25


def test_after_a_reset_the_old_credential_fails(
    rp_page: Any, rp_server: RpServer, softkey: Any
) -> None:
    for residency in ("required", "discouraged"):
        assert "server" in rp_page.evaluate(f"register('alice', {{residentKey: '{residency}'}})")
    assert "server" in rp_page.evaluate("login('alice')")
    softkey.reset()
    assert _error(rp_page.evaluate("login('alice')")) == "NotAllowedError"  # both IDs dead
    assert _error(rp_page.evaluate("login(null)")) == "NotAllowedError"
    assert [r["ceremony"] for r in rp_server.rp.verified] == ["register", "register", "login"]


def test_denied_presence_is_not_allowed(rp_page: Any, rp_server: RpServer, softkey: Any) -> None:
    assert "server" in rp_page.evaluate("register('alice')")
    softkey.deny()
    assert _error(rp_page.evaluate("login('alice')")) == "NotAllowedError"
    assert _error(rp_page.evaluate("register('bob')")) == "NotAllowedError"
    softkey.next_verdicts("approve")
    assert rp_page.evaluate("login('alice')")["server"]["username"] == "alice"
    assert len(rp_server.rp.verified) == 2


def test_an_rp_id_not_suffixing_the_origin_is_a_security_error(rp_page: Any, softkey: Any) -> None:
    assert _error(rp_page.evaluate("register('alice', {rpId: 'example.com'})")) == "SecurityError"
    assert _error(rp_page.evaluate("login(null, {rpId: 'example.com'})")) == "SecurityError"
    assert softkey.presence_requests == []


def test_aborted_signal_and_bad_options(rp_page: Any, rp_server: RpServer) -> None:
    assert "server" in rp_page.evaluate("register('alice')")
    assert _error(rp_page.evaluate("login('alice', {abort: true})")) == "AbortError"
    unsupported = rp_page.evaluate("register('bob', {algorithms: [-65535]})")  # RS1 only
    assert _error(unsupported) == "NotSupportedError"
    # WebIDL: a challenge must be a BufferSource; a base64 string is the page's bug.
    wrong_type = rp_page.evaluate(
        """navigator.credentials.create({publicKey: {
              rp: {name: 'x'}, user: {id: new Uint8Array(4), name: 'a', displayName: 'A'},
              challenge: 'AAAA', pubKeyCredParams: [{type: 'public-key', alg: -7}]}})
           .then(() => 'resolved', (e) => e.constructor.name)"""
    )
    assert wrong_type == "TypeError"
    conditional_create = rp_page.evaluate(
        """navigator.credentials.create({mediation: 'conditional', publicKey: {
              rp: {name: 'x'}, user: {id: new Uint8Array(4), name: 'a', displayName: 'A'},
              challenge: new Uint8Array(16), pubKeyCredParams: []}})
           .then(() => 'resolved', (e) => e.name)"""
    )
    assert conditional_create == "NotSupportedError"
    assert len(rp_server.rp.verified) == 1


def test_register_without_a_pin_when_uv_is_required_is_not_allowed(rp_page: Any) -> None:
    outcome = rp_page.evaluate("register('alice', {userVerification: 'required'})")
    assert _error(outcome) == "NotAllowedError"
    assert "PIN" in outcome["error"]["message"]  # says how to give the key one


@pytest.mark.softkey(pin="1234")
def test_pin_protected_user_verification_required(rp_page: Any, rp_server: RpServer) -> None:
    # The server's state demands UV: register_complete / authenticate_complete check the flag.
    registered = rp_page.evaluate("register('alice', {userVerification: 'required'})")
    assert registered["server"]["user_verified"] is True
    login = rp_page.evaluate("login('alice', {userVerification: 'required'})")
    assert login["server"]["user_verified"] is True


# -- extensions ------------------------------------------------------------------------------


@pytest.mark.softkey(profile="ctap2.1", pin="1234")
def test_prf_and_large_blob_results(rp_page: Any, rp_server: RpServer, softkey: Any) -> None:
    from fido2.utils import websafe_encode
    from fido2.webauthn import PublicKeyCredentialRequestOptions

    registered = rp_page.evaluate(
        """register('alice', {userVerification: 'required',
                   extensions: {prf: {}, largeBlob: {support: 'required'}, credProps: true}})"""
    )
    record = registered["server"]
    assert record["client_extension_results"] == {
        "prf": {"enabled": True},
        "largeBlob": {"supported": True},
        "credProps": {"rk": True},
    }
    assert record["authenticator_extensions"] == {"hmac-secret": True}  # signed authData

    salt, other = websafe_encode(b"\x01" * 32), websafe_encode(b"\x02" * 32)

    def prf(first: str) -> bytes:
        outcome = rp_page.evaluate(
            "(first) => login('alice', {userVerification: 'required',"
            " extensions: {prf: {eval: {first}}}})",
            first,
        )
        assert outcome["shape"]["prfFirstType"] == "[object ArrayBuffer]"
        return decode(outcome["server"]["client_extension_results"]["prf"]["results"]["first"])

    value = prf(salt)
    assert len(value) == 32 and prf(salt) == value and prf(other) != value
    # The same credential and salt through python-fido2's own client on the same key.
    (cred,) = rp_server.rp.credentials("alice")
    direct = softkey.client_for(rp_server.origin).get_assertion(
        PublicKeyCredentialRequestOptions.from_dict(
            {
                "challenge": websafe_encode(os.urandom(16)),
                "rpId": "localhost",
                "allowCredentials": [
                    {"type": "public-key", "id": websafe_encode(cred.credential_id)}
                ],
                "userVerification": "required",
                "extensions": {"prf": {"eval": {"first": salt}}},
            }
        )
    )
    assert direct.get_response(0).client_extension_results.prf.results.first == value

    blob = b"softkey large blob \x00\xff"
    written = rp_page.evaluate(
        "(write) => login('alice', {userVerification: 'required',"
        " extensions: {largeBlob: {write}}})",
        websafe_encode(blob),
    )
    assert written["server"]["client_extension_results"] == {"largeBlob": {"written": True}}
    read = rp_page.evaluate(
        "login('alice', {userVerification: 'required', extensions: {largeBlob: {read: true}}})"
    )
    assert decode(read["server"]["client_extension_results"]["largeBlob"]["blob"]) == blob
    assert read["shape"]["largeBlobType"] == "[object ArrayBuffer]"
    (stored,) = softkey.get_credentials()  # WebDriver's Get Credentials, from the key itself
    assert stored.large_blob == blob


# -- the rest of the API surface -------------------------------------------------------------


@pytest.mark.softkey(profile="yubikey-5")
def test_feature_queries_describe_a_roaming_key(rp_page: Any) -> None:
    answers = rp_page.evaluate(
        """Promise.all([
             PublicKeyCredential.isUserVerifyingPlatformAuthenticatorAvailable(),
             PublicKeyCredential.isConditionalMediationAvailable(),
             PublicKeyCredential.getClientCapabilities()])"""
    )
    platform, conditional, capabilities = answers
    assert platform is False and conditional is True
    assert capabilities["conditionalGet"] is True and capabilities["conditionalCreate"] is False
    assert capabilities["extension:prf"] is True
    assert capabilities["extension:largeBlob"] is False  # a YubiKey 5 has no largeBlobs


def test_a_page_open_before_attach_gets_the_key(
    browser_context: Any, rp_server: RpServer, softkey: Any
) -> None:
    page = browser_context.new_page()
    page.goto(rp_server.url)
    attach(browser_context, softkey=softkey)
    assert page.evaluate("register('alice')")["server"]["username"] == "alice"
    assert [c.user_name for c in softkey.credentials()] == ["alice"]


def test_attach_makes_a_key_from_settings(browser_context: Any, rp_server: RpServer) -> None:
    key = attach(browser_context, profile="ctap2.0", presence="deny")
    page = browser_context.new_page()
    page.goto(rp_server.url)
    assert _error(page.evaluate("register('alice')")) == "NotAllowedError"
    key.approve()
    assert page.evaluate("register('alice')")["server"]["username"] == "alice"
    assert key.profile == "ctap2.0"


def test_a_seeded_credential_logs_in_like_playwrights_credentials_create(
    rp_page: Any, rp_server: RpServer, softkey: Any
) -> None:
    """docs/ci.md maps ``context.credentials.create(rp_id, id=..., private_key=...,
    user_handle=..., sign_count=...)`` to ``add_credential(..., resident=True)``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from fido2.cose import ES256
    from fido2.utils import websafe_encode
    from fido2.webauthn import Aaguid, AttestedCredentialData

    private = ec.generate_private_key(ec.SECP256R1())
    pkcs8 = private.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # The base64url texts context.credentials.create(...) takes and .get() returns.
    softkey.add_credential(
        websafe_encode(b"seeded-1"),
        "localhost",
        websafe_encode(pkcs8),
        user_handle=websafe_encode(b"dana"),
        sign_count=10,
        resident=True,
    )
    public = ES256.from_cryptography_key(private.public_key())
    rp_server.rp.users["dana"] = {  # what the RP's database holds for the seeded user
        "id": b"dana",
        "credentials": [AttestedCredentialData.create(Aaguid.NONE, b"seeded-1", public)],
    }
    login = rp_page.evaluate("login(null)")
    assert login["server"]["username"] == "dana"
    assert login["server"]["sign_count"] == 11
