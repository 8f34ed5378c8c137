"""WebDriver's Virtual Authenticator credential commands as tools.admin operations.

The same vocabulary as the pytest fixture (transports/webdriver.py), for the CLI and the
control socket: tools/admin.py registers ``OPERATIONS`` below, so each runs offline on a state
file and inside a running key (``{"op": "admin", "name": "get_credentials", "args": {...}}``).
Arguments and results are JSON: bytes as hex (``credential_id``) with base64url beside them
(``credential_id_b64url``); on input either form (tools.admin.parse_id).

=============================  ==========================  ======================================
WebDriver command              admin operation             CLI
=============================  ==========================  ======================================
Add Credential                 ``add_credential`` (with    ``softkey add-credential
                               ``credential_id``)          --credential-id ID``
Get Credentials                ``get_credentials``         ``softkey credentials list --all``
Remove Credential              ``remove_credential``       ``softkey credentials delete ID``
Remove All Credentials         ``remove_all_credentials``  ``softkey credentials delete --all``
Set Credential Properties      ``set_credential_properties``  ``softkey credentials set-properties``
=============================  ==========================  ======================================

Private keys leave only through ``get_credentials(include_private_keys=true)``.

tools/admin.py imports this module at its end; this module imports admin only inside
functions, so either may be imported first.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from softkey.authenticator import Authenticator
    from softkey.authenticator.imported import StoredCredential


def record(cred: StoredCredential) -> dict[str, Any]:
    """The JSON form of one stored credential (README "JSON": `credentials list`)."""
    from softkey.authenticator.events import b64url

    created = None
    if cred.created_at is not None:
        created = datetime.fromtimestamp(cred.created_at, timezone.utc).isoformat()
    handle = cred.user_handle
    data: dict[str, Any] = {
        # hex (as ykman and fido2-token print them) and base64url (WebAuthn JSON, WebDriver).
        "credential_id": cred.credential_id.hex(),
        "credential_id_b64url": b64url(cred.credential_id),
        "rp_id": cred.rp_id,
        "rp_name": cred.rp_name,
        "user_handle": None if handle is None else handle.hex(),
        "user_handle_b64url": None if handle is None else b64url(handle),
        "user_name": cred.user_name,
        "user_display_name": cred.user_display_name,
        "alg": cred.alg,
        "cred_protect": cred.cred_protect,
        "counter": cred.sign_count,  # WebDriver's signCount: what the last signature carried
        "created": created,
        "order": cred.order,
        "resident": cred.resident,
        "imported": cred.imported,
        "backup_eligible": cred.backup_eligible,
        "backup_state": cred.backup_state,
        "public_key_cose": None if cred.public_key is None else cred.public_key.hex(),
        "large_blob": None if cred.large_blob is None else cred.large_blob.hex(),
        "large_blob_b64url": None if cred.large_blob is None else b64url(cred.large_blob),
    }
    if cred.private_key is not None:
        data["private_key"] = cred.private_key.decode("ascii")
    return data


def _admin_error(exc: Exception) -> Exception:
    """An imported.CredentialError as the AdminError dispatch reports."""
    from softkey.tools.admin import AdminError

    return AdminError(str(exc), code=getattr(exc, "code", "usage"))


def _flag(value: Any, what: str) -> bool | None:
    from softkey.tools.admin import AdminError

    if value is None or isinstance(value, bool):
        return value
    raise AdminError(f"{what} must be true, false or null", code="usage")


def stored(auth: Authenticator, rp: str | None = None) -> list[StoredCredential]:
    """Every stored credential (of ``rp``), resident ones first."""
    from softkey.authenticator import imported

    return imported.get_credentials(auth, rp_id=rp or None)


def match_stored(auth: Authenticator, prefix: str) -> StoredCredential:
    """The stored credential whose ID is ``prefix`` or the only one starting with it (hex or
    base64url, as `softkey credentials list` shows them)."""
    from softkey.authenticator.events import b64url
    from softkey.tools.admin import _B64URL, AdminError

    text = prefix.strip() if isinstance(prefix, str) else ""
    if not text or not _B64URL.fullmatch(text.rstrip("=")):
        raise AdminError(
            f"{prefix!r} is not a credential ID prefix (hex or base64url); copy one from "
            "`softkey credentials list --all`",
            code="usage",
        )
    text = text.rstrip("=")
    creds = stored(auth)
    exact = [
        c for c in creds if c.credential_id.hex() == text.lower() or b64url(c.credential_id) == text
    ]
    if len(exact) == 1:
        return exact[0]
    matches = [
        c
        for c in creds
        if c.credential_id.hex().startswith(text.lower())
        or b64url(c.credential_id).startswith(text)
    ]
    if not matches:
        raise AdminError(
            f"no stored credential ID starts with {text}; non-resident credentials are not "
            "stored on the key unless imported (only `softkey reset` revokes the key's own), "
            "see `softkey credentials list --all`",
            code="not_found",
        )
    if len(matches) > 1:
        raise AdminError(
            f"{len(matches)} credentials start with {text}; give more characters",
            code="ambiguous",
        )
    return matches[0]


def _exact_id(auth: Authenticator, credential_id: Any) -> bytes:
    from softkey.tools.admin import AdminError, parse_id

    if not isinstance(credential_id, str):
        raise AdminError("credential_id must be hex or base64url text", code="usage")
    return parse_id(credential_id, "credential ID")


# -- operations -------------------------------------------------------------------------------


def get_credentials(
    auth: Authenticator,
    rp: str | None = None,
    include_private_keys: bool = False,
    resident_only: bool = False,
) -> dict[str, Any]:
    """WebDriver getCredentials: every stored credential (``resident_only``: the slots), with
    the private keys (PKCS#8 PEM) only when ``include_private_keys``."""
    from softkey.authenticator import imported
    from softkey.tools.admin import slot_usage

    creds = imported.get_credentials(
        auth,
        bool(_flag(include_private_keys, "include_private_keys")),
        rp_id=rp or None,
        resident_only=bool(_flag(resident_only, "resident_only")),
    )
    return {**slot_usage(auth), "credentials": [record(c) for c in creds]}


def remove_credential(auth: Authenticator, credential_id: str) -> dict[str, Any]:
    """WebDriver removeCredential: the stored credential with exactly this ID."""
    from softkey.authenticator import imported
    from softkey.tools.admin import AdminError, slot_usage

    cred_id = _exact_id(auth, credential_id)
    found = imported.get_credential(auth, cred_id)
    if found is None:
        raise AdminError(
            "no credential with that ID is stored on this key; see "
            "`softkey credentials list --all`",
            code="not_found",
        )
    imported.remove_credential(auth, cred_id)
    return {"removed": record(found), **slot_usage(auth)}


def remove_all_credentials(auth: Authenticator) -> dict[str, Any]:
    """WebDriver removeAllCredentials: every stored credential (the master key stays)."""
    from softkey.authenticator import imported
    from softkey.tools.admin import slot_usage

    removed = [record(c) for c in stored(auth)]
    imported.remove_all_credentials(auth)
    return {"removed": removed, **slot_usage(auth)}


def set_credential_properties(
    auth: Authenticator,
    credential_id: str,
    backup_eligible: bool | None = None,
    backup_state: bool | None = None,
) -> dict[str, Any]:
    """WebDriver setCredentialProperties: the backup flags (BE, BS) of a stored credential,
    named by its ID or a unique prefix; null keeps a flag as it is."""
    from softkey.authenticator import imported

    eligible = _flag(backup_eligible, "backup_eligible")
    state = _flag(backup_state, "backup_state")
    target = match_stored(auth, credential_id)
    try:
        cred = imported.set_credential_properties(auth, target.credential_id, eligible, state)
    except imported.CredentialError as exc:
        raise _admin_error(exc) from None
    return {"credential": record(cred)}


def add_with_id(
    auth: Authenticator,
    *,
    rp: str,
    private_key_pem: str,
    credential_id: str,
    user_handle: str | None,
    user_name: str | None,
    user_display_name: str | None,
    resident: bool,
    counter: int,
    cred_protect: int,
    large_blob: str | None,
    backup_eligible: bool | None,
    backup_state: bool | None,
) -> dict[str, Any]:
    """`add_credential` with a ``credential_id``: any ID (imported.add_credential)."""
    from softkey.authenticator import imported
    from softkey.tools.admin import AdminError, parse_id, slot_usage

    cred_id = parse_id(credential_id, "--credential-id")
    handle = None if user_handle is None else parse_id(user_handle, "--user-handle")
    blob = None if large_blob is None else parse_id(large_blob, "--large-blob")
    if not isinstance(private_key_pem, str):
        raise AdminError("private_key_pem must be PEM text", code="usage")
    try:
        cred = imported.add_credential(
            auth,
            cred_id,
            rp,
            private_key_pem.encode(),
            user_handle=handle,
            user_name=user_name,
            user_display_name=user_display_name,
            sign_count=counter,
            resident=bool(resident),
            large_blob=blob,
            backup_eligible=_flag(backup_eligible, "backup_eligible"),
            backup_state=_flag(backup_state, "backup_state"),
            cred_protect=cred_protect,
        )
    except imported.CredentialError as exc:
        raise _admin_error(exc) from None
    data = record(cred)
    return {
        **{k: data[k] for k in _ADD_FIELDS},
        "counter": counter,
        **slot_usage(auth),
    }


# What `add-credential --json` reports (README), taken from the credential's record.
_ADD_FIELDS = (
    "credential_id",
    "credential_id_b64url",
    "rp_id",
    "resident",
    "imported",
    "user_handle",
    "user_handle_b64url",
    "alg",
    "public_key_cose",
    "backup_eligible",
    "backup_state",
)


OPERATIONS: dict[str, Callable[..., dict[str, Any]]] = {
    "get_credentials": get_credentials,
    "remove_credential": remove_credential,
    "remove_all_credentials": remove_all_credentials,
    "set_credential_properties": set_credential_properties,
}
READ_ONLY = frozenset({"get_credentials"})
