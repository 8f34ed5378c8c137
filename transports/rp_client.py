"""python-fido2's ``Fido2Client`` as a relying party's test uses it: WebAuthn JSON in and out,
and errors that say what the key answered.

Imported lazily by the pytest plugin (python-fido2's client costs ~0.3 s to import, and the
plugin loads in every pytest run of a project that has softkey installed).

JSON: relying parties hand options to the browser as JSON (py_webauthn's ``options_to_json``,
SimpleWebAuthn, java-webauthn-server ...) and get the credential back as the browser's
``toJSON()`` (WebAuthn L3 §5.1.8). python-fido2 2.x speaks the same JSON (``from_dict`` decodes
base64url members, ``dict(response)`` encodes them), so the glue is only accepting every shape
of options a test has at hand.

Errors: python-fido2 folds several CTAP errors into one ``ClientError`` code (KEY_STORE_FULL,
UNSUPPORTED_ALGORITHM and UNSUPPORTED_OPTION all become CONFIGURATION_UNSUPPORTED) and keeps
the CTAP error in ``.cause``. ``ExplainedClientError`` keeps the code and cause (``except
ClientError`` still catches it) and adds a message naming the CTAP error, the device's own
reason and, when the fix is a fixture setting, which one.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from fido2.client import ClientError, Fido2Client, PinRequiredError
from fido2.ctap import CtapError
from fido2.webauthn import PublicKeyCredentialCreationOptions, PublicKeyCredentialRequestOptions

from softkey.authenticator import Authenticator
from softkey.transports.display import printable


def _public_key_member(options: Any) -> Any:
    """JSON text -> mapping; unwrap ``{"publicKey": ...}`` and ``CredentialCreationOptions``."""
    if isinstance(options, str | bytes):
        options = json.loads(options)
    if isinstance(options, Mapping):
        return options.get("publicKey", options)
    return getattr(options, "public_key", options)  # Fido2Server's register/authenticate_begin


def _options(options: Any, cls: Any, kind: str) -> Any:
    value = _public_key_member(options)
    if isinstance(value, cls):
        return value
    if isinstance(value, Mapping):
        return cls.from_dict(value)
    raise TypeError(f"cannot read {kind} options from {type(options).__name__}")


def creation_options(options: Any) -> PublicKeyCredentialCreationOptions:
    """What ``navigator.credentials.create({publicKey})`` is given, as python-fido2 takes it.

    Accepts py_webauthn's ``options_to_json(...)`` text, that text parsed, a ``{"publicKey":
    ...}`` wrapper, Fido2Server's ``register_begin`` result, or the options object itself.
    """
    return _options(options, PublicKeyCredentialCreationOptions, "creation")


def request_options(options: Any) -> PublicKeyCredentialRequestOptions:
    """What ``navigator.credentials.get({publicKey})`` is given (the same shapes as above)."""
    return _options(options, PublicKeyCredentialRequestOptions, "request")


class ExplainedClientError(ClientError):
    """A python-fido2 ``ClientError`` (same ``code`` and ``cause``) with a readable message."""

    def __init__(self, original: ClientError, message: str) -> None:
        super().__init__(original.code, original.cause)
        self.args = (message,)
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"ExplainedClientError({self.code.name}: {self.message})"


PIN_HINT = (
    'give the key a PIN: @pytest.mark.softkey(pin="1234"), softkey_factory(pin=...), '
    "--softkey-pin / the softkey_pin ini option, or softkey.set_pin(...)"
)


def explain(error: ClientError, authenticator: Authenticator) -> str:
    """One message saying what the key answered and, where the fixture can fix it, how."""
    cause = error.cause
    if isinstance(cause, CtapError):
        outcome = authenticator.last_outcome
        # The reason may quote the request's rp.id: shown to a person, so escaped (display.py).
        reason = (
            printable(outcome.reason)
            if outcome is not None and outcome.status == cause.code
            else ""
        )
        message = f"{cause.code.name}: " + (reason or "the key refused the request")
        profile = authenticator.profile.name
        message += f" (key profile {profile}; python-fido2 reports {error.code.name})"
        if cause.code == CtapError.ERR.KEY_STORE_FULL:
            message += (
                "; free a slot (softkey.authenticator.delete_credential(id), "
                "softkey.reset()) or use a profile with more slots (`softkey profiles`)"
            )
        if cause.code == CtapError.ERR.UV_INVALID:
            message += (
                "; the fingerprint check failed as the fixture said (set_user_verified(False) "
                "or next_uv_verdicts); softkey.set_user_verified(True) makes it match"
            )
        return message
    if error.code == ClientError.ERR.CONFIGURATION_UNSUPPORTED and "verification" in str(cause):
        return (
            f"{error.code.name}: {cause}: python-fido2's client needs a PIN when "
            "userVerification is 'required' (or 'preferred' on a key that supports clientPIN) "
            f"and this key has none; {PIN_HINT}"
        )
    return f"{error.code.name}: {cause}" if cause else error.code.name


class RpClient(Fido2Client):
    """``Fido2Client`` whose errors are explained and which also takes/returns WebAuthn JSON."""

    def __init__(self, *args: Any, authenticator: Authenticator, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._authenticator = authenticator

    def _explained(self, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except PinRequiredError as exc:
            raise ExplainedClientError(
                exc,
                "the key has a PIN and the client was given none (python-fido2 "
                f"PinRequiredError); {PIN_HINT}",
            ) from exc
        except ClientError as exc:
            raise ExplainedClientError(exc, explain(exc, self._authenticator)) from exc

    def make_credential(self, options: Any, event: Any = None) -> Any:  # type: ignore[override]
        return self._explained(lambda: super(RpClient, self).make_credential(options, event))

    def get_assertion(self, options: Any, event: Any = None) -> Any:  # type: ignore[override]
        return self._explained(lambda: super(RpClient, self).get_assertion(options, event))

    def create(self, options: Any) -> dict[str, Any]:
        """``navigator.credentials.create`` then ``toJSON()``: options in any shape
        (see ``creation_options``), the new credential as a RegistrationResponseJSON dict."""
        return dict(self.make_credential(creation_options(options)))

    def get(self, options: Any, *, index: int = 0) -> dict[str, Any]:
        """``navigator.credentials.get`` then ``toJSON()``. With several discoverable
        credentials (an empty allowCredentials), ``index`` picks the one the user would choose;
        the key returns them most recent first."""
        return dict(self.get_assertion(request_options(options)).get_response(index))
