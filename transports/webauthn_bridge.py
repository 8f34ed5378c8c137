"""A browser page's ``navigator.credentials`` answered by a softkey, through a real client.

The browser side (webauthn_bridge.js, injected into every page of a browser context by
softkey.playwright) serialises what the page passes to ``navigator.credentials.create`` /
``.get`` as WebAuthn JSON (BufferSources as base64url, WebAuthn L3 §5.1.10) and sends it here
with the frame's origin. ``WebAuthnBridge.handle`` then does what a browser's WebAuthn client
does and the page cannot see: it checks the RP ID against the origin, runs python-fido2's
``Fido2Client`` in that origin (so clientDataJSON, PIN/UV and extension processing are a real
client's) against the key in-process, picks the account when several credentials answer, and
sends back either the credential as its JSON form (RegistrationResponseJSON /
AuthenticationResponseJSON plus what the page's ``getPublicKey()`` etc. need) or the name of the
DOMException a browser would reject with (§5.1.3, §5.1.4, §6.3.2, §6.3.3).

Nothing here imports Playwright; transports/playwright_bridge.py is the glue.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from softkey.authenticator.events import b64url

if TYPE_CHECKING:
    from softkey.transports.pytest_plugin import SoftKey
    from softkey.transports.rp_client import RpClient

logger = logging.getLogger(__name__)

# The name of the page -> Python binding (window[BINDING_NAME]); softkey.playwright exposes it.
BINDING_NAME = "__softkeyWebAuthn"
_BINDING_PLACEHOLDER = "__SOFTKEY_BINDING__"

# ES256 then RS256: what a client uses when pubKeyCredParams is empty (WebAuthn L3 §5.1.3
# step 10).
_DEFAULT_ALGORITHMS = (-7, -257)
_USER_ID_MAX = 64  # §5.4.3: user.id is 1..64 bytes, else TypeError (§5.1.3 step 5)


def bridge_script(binding_name: str = BINDING_NAME) -> str:
    """The JavaScript to run in every document: overrides ``navigator.credentials``."""
    text = resources.files("softkey.transports").joinpath("webauthn_bridge.js").read_text("utf-8")
    return text.replace(_BINDING_PLACEHOLDER, binding_name)


@dataclass(frozen=True)
class Account:
    """One credential a browser's account chooser would show (most recent first)."""

    credential_id: bytes
    user_handle: bytes | None
    user_name: str | None
    display_name: str | None


# choose(accounts) -> an index into accounts, one of the Account objects, or None for "the
# user picks nothing" (a modal request then fails NotAllowedError, a conditional one stays
# pending).
Chooser = Callable[[Sequence[Account]], "int | Account | None"]


def most_recent(accounts: Sequence[Account]) -> int:
    """The default choice: the first account, i.e. the most recent credential."""
    return 0


class DomError(Exception):
    """What the page's promise rejects with: a DOMException ``name`` (or "TypeError")."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name
        self.message = message


class _Pending(Exception):
    """A conditional request with nothing to offer: the page's promise stays pending."""


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _credential(response: Any, body: dict[str, Any]) -> dict[str, Any]:
    """The PublicKeyCredential JSON around a create or get ``response`` body."""
    return {
        "id": response.id,
        "rawId": b64url(response.raw_id),
        "type": "public-key",
        "authenticatorAttachment": "cross-platform",
        "response": body,
        "clientExtensionResults": _extension_results(response.client_extension_results),
    }


def origin_of(url: str) -> str | None:
    """The serialised origin of an http(s) URL (scheme://host[:port]); None for others."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    host = parts.hostname
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    port = parts.port
    default = {"http": 80, "https": 443}[parts.scheme]
    return f"{parts.scheme}://{host}" + (f":{port}" if port and port != default else "")


def spki_from_cose(cose: Mapping[int, Any]) -> bytes | None:
    """The credential public key as DER SubjectPublicKeyInfo, what ``getPublicKey()`` returns
    (WebAuthn L3 §5.2.1.1); None where a browser would return null (a key type it does not
    parse into SPKI, such as ML-DSA's AKP here)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

    kty, crv = cose.get(1), cose.get(-1)
    public: Any
    try:
        if kty == 2:  # EC2 (RFC 9053 §7.1)
            curves = {1: ec.SECP256R1(), 2: ec.SECP384R1(), 3: ec.SECP521R1()}
            if crv not in curves:
                return None
            x, y = (int.from_bytes(cose[k], "big") for k in (-2, -3))
            public = ec.EllipticCurvePublicNumbers(x, y, curves[crv]).public_key()
        elif kty == 1:  # OKP (RFC 9053 §7.2)
            if crv == 6:
                public = ed25519.Ed25519PublicKey.from_public_bytes(cose[-2])
            elif crv == 7:
                public = ed448.Ed448PublicKey.from_public_bytes(cose[-2])
            else:
                return None
        elif kty == 3:  # RSA (RFC 8230 §4)
            n, e = (int.from_bytes(cose[k], "big") for k in (-1, -2))
            public = rsa.RSAPublicNumbers(e, n).public_key()
        else:
            return None
    except (KeyError, TypeError, ValueError):
        return None
    return bytes(
        public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def _extension_results(outputs: Any) -> dict[str, Any]:
    results: dict[str, Any] = json.loads(json.dumps(dict(outputs)))
    prf = results.get("prf")
    if isinstance(prf, dict) and isinstance(prf.get("results"), dict):
        # python-fido2 2.x reports an absent second PRF output as b"" (serialised as []);
        # a browser leaves `second` out when no second salt was given (L3 §10.1.4).
        second = prf["results"].get("second")
        if not isinstance(second, str) or not second:
            prf["results"].pop("second", None)
    return results


def dom_error_for(error: BaseException, op: str) -> DomError:
    """The DOMException a browser rejects with for what the client or key answered.

    Chromium's mapping (and WebAuthn L3 §6.3.2 step 3, §6.3.3 step 7): an excluded credential
    is InvalidStateError; no supported algorithm NotSupportedError; everything the user or the
    key refused - denied or timed-out presence, no credential, a full key, a blocked PIN -
    NotAllowedError, which hides from the page why (a privacy rule, §14.5.2). The message keeps
    softkey's explanation for the person reading the test's failure."""
    from fido2.client import ClientError
    from fido2.ctap import CtapError

    message = str(error) or type(error).__name__
    if isinstance(error, ClientError):
        cause = error.cause
        if isinstance(cause, CtapError):
            if cause.code == CtapError.ERR.CREDENTIAL_EXCLUDED:
                return DomError("InvalidStateError", message)
            if cause.code == CtapError.ERR.UNSUPPORTED_ALGORITHM:
                return DomError("NotSupportedError", message)
            return DomError("NotAllowedError", message)
        if op == "create" and error.code == ClientError.ERR.DEVICE_INELIGIBLE and cause is None:
            # python-fido2's U2F (CTAP1) path: a key handle in excludeCredentials was
            # recognised (CTAP 2.1 §10.2 "excludeList" over U2F).
            return DomError("InvalidStateError", message)
        if isinstance(cause, ValueError):
            # An extension input the client cannot send (e.g. prf evalByCredential without
            # allowCredentials, L3 §10.1.4: NotSupportedError).
            return DomError("NotSupportedError", message)
        return DomError("NotAllowedError", message)
    return DomError("UnknownError", f"softkey's bridge failed: {type(error).__name__}: {message}")


class WebAuthnBridge:
    """Answers one browser context's WebAuthn calls with ``key``.

    ``choose(accounts)`` is the person at the account chooser (several discoverable
    credentials for an empty allowCredentials) and at Conditional UI's autofill list; it
    returns an index, an ``Account`` or None (no choice). The default takes the most recent.
    """

    def __init__(self, key: SoftKey, choose: Chooser | None = None) -> None:
        self.key = key
        self.choose: Chooser = choose or most_recent
        # What the pages asked and got, oldest first: {"op", "origin", "mediation",
        # "outcome"} with outcome "credential", "pending", "capabilities" or an error name.
        self.calls: list[dict[str, Any]] = []
        self._clients: dict[str, RpClient] = {}

    # -- the entry point the binding calls --------------------------------------------------

    def handle(self, origin: str | None, request: str, *, cross_origin: bool = False) -> str:
        """``request``: the JSON text the page script sends; returns JSON text for it:
        ``{"credential": ...}``, ``{"error": {"name", "message"}}``, ``{"pending": true}``
        or ``{"capabilities": ...}``. Never raises: a bug here reaches the page as
        UnknownError with its reason, and the test's log has the traceback."""
        call: dict[str, Any] = {"op": None, "origin": origin, "mediation": None}
        try:
            result = self._dispatch(origin, request, cross_origin, call)
        except DomError as exc:
            result = {"error": {"name": exc.name, "message": exc.message}}
        except _Pending:
            result = {"pending": True}
        except Exception as exc:  # noqa: BLE001 - reported to the page, logged for the test
            logger.exception("softkey WebAuthn bridge: unexpected failure")
            error = dom_error_for(exc, "")
            result = {"error": {"name": error.name, "message": error.message}}
        call["outcome"] = result["error"]["name"] if "error" in result else next(iter(result))
        self.calls.append(call)
        return json.dumps(result)

    def _dispatch(
        self, origin: str | None, request: str, cross_origin: bool, call: dict[str, Any]
    ) -> dict[str, Any]:
        try:
            message = json.loads(request)
            op = message["op"]
        except (ValueError, TypeError, KeyError):
            raise DomError("TypeError", "softkey's bridge got a malformed request") from None
        call["op"], call["mediation"] = op, message.get("mediation")
        if op == "capabilities":
            return {"capabilities": self.capabilities()}
        if op not in ("create", "get"):
            raise DomError("NotSupportedError", f"unknown operation {op!r}")
        if origin is None:
            # Opaque origins (data:, sandboxed frames) have no effective domain (§5.1.3 step 7).
            raise DomError("SecurityError", "the document's origin is opaque")
        if cross_origin:
            raise DomError(
                "NotAllowedError",
                "WebAuthn from a cross-origin iframe: softkey's bridge does not model the "
                "publickey-credentials-create/get permissions policy (L3 §5.9); call it from "
                "the top-level page",
            )
        options = message.get("publicKey")
        if not isinstance(options, dict):
            raise DomError("TypeError", "publicKey must be a dictionary")
        if op == "create":
            return {"credential": self.create(origin, options)}
        return {"credential": self.get(origin, options, message.get("mediation"))}

    # -- capabilities --------------------------------------------------------------------------

    def capabilities(self) -> dict[str, bool]:
        """``PublicKeyCredential.getClientCapabilities()`` (L3 §5.1.7) for this key."""
        extensions = set(self.key.ctap2.info.extensions or ())
        return {
            "conditionalCreate": False,
            "conditionalGet": True,
            "hybridTransport": False,
            "passkeyPlatformAuthenticator": False,
            "userVerifyingPlatformAuthenticator": False,
            "relatedOrigins": False,
            "signalAllAcceptedCredentials": False,
            "signalCurrentUserDetails": False,
            "signalUnknownCredential": False,
            "extension:credProps": True,
            "extension:credProtect": "credProtect" in extensions,
            "extension:credBlob": "credBlob" in extensions,
            "extension:largeBlob": "largeBlobKey" in extensions,
            "extension:minPinLength": "minPinLength" in extensions,
            "extension:prf": "hmac-secret" in extensions,
        }

    # -- the ceremonies ------------------------------------------------------------------------

    def create(self, origin: str, options: dict[str, Any]) -> dict[str, Any]:
        from fido2.client import ClientError
        from fido2.webauthn import PublicKeyCredentialCreationOptions

        options = dict(options)
        rp = options.get("rp")
        if not isinstance(rp, dict):
            raise DomError("TypeError", "publicKey.rp is required")
        rp = dict(rp)
        if rp.get("id") is None:  # §5.1.3 step 8: the origin's effective domain
            rp["id"] = urlsplit(origin).hostname
        options["rp"] = rp
        self._check_rp_id(str(rp["id"]), origin)
        if not options.get("pubKeyCredParams"):
            options["pubKeyCredParams"] = [
                {"type": "public-key", "alg": alg} for alg in _DEFAULT_ALGORITHMS
            ]
        selection = options.get("authenticatorSelection") or {}
        if isinstance(selection, dict) and selection.get("authenticatorAttachment") == "platform":
            raise DomError(
                "NotAllowedError",
                'authenticatorAttachment "platform": softkey is a roaming (cross-platform) '
                "security key, so no authenticator can answer this request",
            )
        parsed = self._parse(PublicKeyCredentialCreationOptions, options)
        if not 1 <= len(parsed.user.id) <= _USER_ID_MAX:
            raise DomError("TypeError", "user.id must be 1 to 64 bytes (WebAuthn L3 §5.4.3)")
        client = self._client(origin)
        try:
            response = client.make_credential(parsed)
        except ClientError as exc:
            raise dom_error_for(exc, "create") from exc
        attestation = response.response.attestation_object
        credential_data = attestation.auth_data.credential_data
        public_key = credential_data.public_key if credential_data is not None else {}
        spki = spki_from_cose(public_key)
        body: dict[str, Any] = {
            "clientDataJSON": b64url(response.response.client_data),
            "attestationObject": b64url(attestation),
            "authenticatorData": b64url(attestation.auth_data),
            "transports": sorted(str(t) for t in (client.info.transports or ["usb"])),
            "publicKeyAlgorithm": public_key.get(3),
        }
        if spki is not None:
            body["publicKey"] = b64url(spki)
        return _credential(response, body)

    def get(
        self, origin: str, options: dict[str, Any], mediation: str | None = None
    ) -> dict[str, Any]:
        from fido2.client import ClientError
        from fido2.ctap import CtapError
        from fido2.webauthn import PublicKeyCredentialRequestOptions

        options = dict(options)
        if options.get("rpId") is None:  # §5.1.4.1 step 8: the origin's effective domain
            options["rpId"] = urlsplit(origin).hostname
        rp_id = str(options["rpId"])
        self._check_rp_id(rp_id, origin)
        parsed = self._parse(PublicKeyCredentialRequestOptions, options)
        conditional = mediation == "conditional"
        if conditional and not self._discoverable(rp_id, parsed.allow_credentials):
            # Conditional UI offers nothing, so nothing resolves: the page waits (or aborts).
            raise _Pending
        client = self._client(origin)
        try:
            selection = client.get_assertion(parsed)
        except ClientError as exc:
            cause = exc.cause
            if conditional and isinstance(cause, CtapError):
                if cause.code == CtapError.ERR.NO_CREDENTIALS:
                    raise _Pending from exc  # e.g. credProtect hid them all
            raise dom_error_for(exc, "get") from exc
        assertions = selection.get_assertions()
        index = 0
        if len(assertions) > 1 or conditional:
            index = self._pick(assertions, conditional, rp_id)
        try:
            response = selection.get_response(index)
        except ClientError as exc:  # extension outputs are processed here (python-fido2)
            raise dom_error_for(exc, "get") from exc
        body: dict[str, Any] = {
            "clientDataJSON": b64url(response.response.client_data),
            "authenticatorData": b64url(response.response.authenticator_data),
            "signature": b64url(response.response.signature),
        }
        if response.response.user_handle is not None:
            body["userHandle"] = b64url(response.response.user_handle)
        return _credential(response, body)

    # -- helpers ---------------------------------------------------------------------------------

    def _client(self, origin: str) -> RpClient:
        client = self._clients.get(origin)
        if client is None:
            client = self._clients[origin] = self.key.client_for(origin)
        return client

    @staticmethod
    def _check_rp_id(rp_id: str, origin: str) -> None:
        """§5.1.3 step 8 / §5.1.4.1 step 8: the RP ID must be the origin's effective domain or
        a registrable suffix of it; python-fido2's check (the same the client repeats)."""
        from fido2.rpid import verify_rp_id

        if not verify_rp_id(rp_id, origin):
            raise DomError(
                "SecurityError",
                f"the RP ID {rp_id!r} is not a registrable domain suffix of, nor equal to, "
                f"the origin {origin!r} (WebAuthn L3 §5.1.3)",
            )

    @staticmethod
    def _parse(cls: Any, options: dict[str, Any]) -> Any:
        """WebIDL conversion of the options dictionary: a missing required member or a wrong
        type is a TypeError, as in a browser."""
        try:
            return cls.from_dict(options)
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            raise DomError("TypeError", f"invalid publicKey options: {exc}") from None

    def _discoverable(self, rp_id: str, allow: Sequence[Any] | None) -> bool:
        stored = self.key.credentials(rp_id)
        if allow:
            wanted = {bytes(descriptor.id) for descriptor in allow}
            stored = [c for c in stored if c.credential_id in wanted]
        return bool(stored)

    def _pick(self, assertions: Sequence[Any], conditional: bool, rp_id: str) -> int:
        # Without UV the key returns only user IDs (CTAP 2.1 §6.2.2, numberOfCredentials):
        # names come from its own records, as the person choosing knows their accounts.
        stored = {c.credential_id: c for c in self.key.credentials(rp_id)}
        accounts = []
        for assertion in assertions:
            credential_id = bytes(assertion.credential["id"])
            user = assertion.user or {}
            record = stored.get(credential_id)
            accounts.append(
                Account(
                    credential_id=credential_id,
                    user_handle=bytes(user["id"]) if "id" in user else None,
                    user_name=user.get("name") or (record.user_name if record else None),
                    display_name=user.get("displayName")
                    or (record.user_display_name if record else None),
                )
            )
        picked = self.choose(accounts)
        if isinstance(picked, Account):
            picked = accounts.index(picked)
        if picked is None:
            if conditional:
                raise _Pending
            raise DomError("NotAllowedError", "the user closed the account chooser (choose=)")
        if not isinstance(picked, int) or not 0 <= picked < len(accounts):
            raise DomError(
                "UnknownError",
                f"choose() returned {picked!r}: give an index below {len(accounts)}, "
                "an Account from the list, or None",
            )
        return picked
