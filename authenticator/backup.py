"""Backup flags BE and BS of authenticatorData (WebAuthn L3 §6.1, §6.1.3): a testing aid.

Bit 3 (BE, backup eligibility) says a credential may be backed up (a multi-device, "synced"
passkey); bit 4 (BS, backup state) says it is backed up now. A hardware security key never
sets either: its credentials are single-device. softkey sets them only when asked, so a
relying party can test how it treats synced passkeys (WebDriver's setCredentialProperties):

- ``Profile.backup_eligible`` / ``Profile.backup_state``: the default of every credential of a
  key (off on every preset);
- a per-credential setting (store table credential_properties), made by
  ``imported.set_credential_properties`` or ``imported.add_credential``, which wins.

makeCredential and getAssertion then put exactly these bits in authenticatorData. BS without BE
is refused wherever it could be set: WebAuthn §6.1.3 lists BE=0, BS=1 as "not allowed", and
relying parties reject it (py_webauthn raises InvalidBackupFlags).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .ctap import FLAG_BE, FLAG_BS

if TYPE_CHECKING:
    from .device import Authenticator

BS_WITHOUT_BE = (
    "backup state (BS) without backup eligibility (BE) is not allowed (WebAuthn §6.1.3: a "
    "credential that cannot be backed up cannot be backed up now); set backup eligibility too"
)


def check(backup_eligible: bool, backup_state: bool) -> None:
    """Refuse BS=1 with BE=0 (ValueError with BS_WITHOUT_BE)."""
    if backup_state and not backup_eligible:
        raise ValueError(BS_WITHOUT_BE)


def properties(auth: Authenticator, credential_id: bytes) -> tuple[bool, bool]:
    """(backup_eligible, backup_state) of a credential: its own setting, else the profile's."""
    stored = auth.store.get_properties(credential_id)
    if stored is not None:
        return stored
    return auth.profile.backup_eligible, auth.profile.backup_state


def flags(auth: Authenticator, credential_id: bytes) -> int:
    """The BE and BS bits of authenticatorData's flags byte for this credential."""
    eligible, state = properties(auth, credential_id)
    return (FLAG_BE if eligible else 0) | (FLAG_BS if state else 0)
