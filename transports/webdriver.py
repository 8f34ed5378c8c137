"""WebDriver's Virtual Authenticator credential commands on the pytest fixture's key.

``SoftKey`` (pytest_plugin.py) inherits these methods, so a test ported from Chromium's or
WebKit's virtual authenticator (WebAuthn L3 §11.7 "WebAuthn WebDriver Extension Capability")
reads the same, in snake_case:

=============================  ===================================================
WebDriver command              fixture method
=============================  ===================================================
Add Credential                 ``softkey.add_credential(credential_id, rp_id, private_key,
                               user_handle=None, sign_count=0, resident=False,
                               large_blob=None)``
Get Credentials                ``softkey.get_credentials(include_private_keys=False)``
Remove Credential              ``softkey.remove_credential(credential_id)``
Remove All Credentials         ``softkey.remove_all_credentials()``
Set Credential Properties      ``softkey.set_credential_properties(credential_id,
                               backup_eligible=None, backup_state=None)``
=============================  ===================================================

Bytes arguments (credential ID, user handle, large blob) take ``bytes`` or WebDriver's
base64url text; the private key is PKCS#8 PEM or DER ``bytes``, PEM text, WebDriver's base64url
DER text, or a ``cryptography`` private key. Any credential ID works: one the key did not make
is stored as an *imported* credential (authenticator/imported.py says how and what a real key
could not do). Credentials come back as ``StoredCredential`` records (bytes fields, the private
key only when asked for). A refusal raises ``CredentialError`` (a ``ValueError``) with one
sentence, e.g. backup state without backup eligibility.
"""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from softkey.authenticator import Authenticator
    from softkey.authenticator.imported import StoredCredential


def _bytes(value: Any, what: str) -> bytes:
    """bytes as they are; text as WebDriver carries bytes: base64url (padding optional)."""
    from softkey.authenticator.imported import CredentialError

    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        try:
            return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        except (binascii.Error, ValueError):
            raise CredentialError(f"{what} {value!r} is not base64url") from None
    raise CredentialError(f"{what} must be bytes or base64url text")


def _private_key(value: Any) -> Any:
    if isinstance(value, str) and not value.lstrip().startswith("-----BEGIN"):
        return _bytes(value, "the private key")  # WebDriver: base64url of PKCS#8 DER
    return value


class VirtualAuthenticatorMethods:
    """The WebDriver credential commands; the class using it provides ``authenticator``."""

    authenticator: Authenticator

    def add_credential(
        self,
        credential_id: bytes | str,
        rp_id: str,
        private_key: Any,
        user_handle: bytes | str | None = None,
        sign_count: int = 0,
        resident: bool = False,
        large_blob: bytes | str | None = None,
        *,
        user_name: str | None = None,
        user_display_name: str | None = None,
        backup_eligible: bool | None = None,
        backup_state: bool | None = None,
    ) -> StoredCredential:
        """Add Credential: store a credential with this ID and private key (any ID; a
        ``resident`` one takes a slot and needs a ``user_handle``). ``backup_eligible`` /
        ``backup_state`` default to the profile's (off). Returns what get_credentials lists."""
        from softkey.authenticator import imported

        return imported.add_credential(
            self.authenticator,
            _bytes(credential_id, "the credential ID"),
            rp_id,
            _private_key(private_key),
            user_handle=None if user_handle is None else _bytes(user_handle, "the user handle"),
            user_name=user_name,
            user_display_name=user_display_name,
            sign_count=sign_count,
            resident=resident,
            large_blob=None if large_blob is None else _bytes(large_blob, "the large blob"),
            backup_eligible=backup_eligible,
            backup_state=backup_state,
        )

    def get_credentials(self, include_private_keys: bool = False) -> list[StoredCredential]:
        """Get Credentials: every credential stored on the key (resident ones, native and
        imported, then imported non-resident ones), with sign counts. Non-resident
        credentials the key made itself are stored nowhere but in their IDs: not listed."""
        from softkey.authenticator import imported

        return imported.get_credentials(self.authenticator, include_private_keys)

    def remove_credential(self, credential_id: bytes | str) -> None:
        """Remove Credential: delete the stored credential with exactly this ID."""
        from softkey.authenticator import imported

        cred_id = _bytes(credential_id, "the credential ID")
        if not imported.remove_credential(self.authenticator, cred_id):
            raise imported.CredentialError(
                "no credential with that ID is stored on this key", code="not_found"
            )

    def remove_all_credentials(self) -> None:
        """Remove All Credentials: delete every stored credential (the master key stays, so
        non-resident IDs the key made itself still work: only ``reset()`` kills those)."""
        from softkey.authenticator import imported

        imported.remove_all_credentials(self.authenticator)

    def set_credential_properties(
        self,
        credential_id: bytes | str,
        backup_eligible: bool | None = None,
        backup_state: bool | None = None,
    ) -> StoredCredential:
        """Set Credential Properties: the BE/BS flags makeCredential/getAssertion report for
        this stored credential (None keeps the current value; BS without BE is refused)."""
        from softkey.authenticator import imported

        return imported.set_credential_properties(
            self.authenticator,
            _bytes(credential_id, "the credential ID"),
            backup_eligible=backup_eligible,
            backup_state=backup_state,
        )
