"""Credentials with any credential ID, and the listing of every stored credential.

WebDriver's Virtual Authenticator (WebAuthn L3 §11.7.4 Add Credential) adds a credential with a
credential ID and a private key chosen by the test: a relying party's fixture already holds
them. softkey's own IDs carry their private key wrapped under the master key
(docs/credential-id.md), so a foreign ID cannot be honoured that way. An *imported* credential
is therefore stored on the key instead:

- table ``imported_credentials`` (store.py, schema 4): the ID, the RP, and the credential's
  secrets (keywrap.CredentialSecrets: alg, private key, credProtect, CredRandom) sealed with
  AES-256-GCM under ``HKDF-SHA-256(master key, info "softkey/v1/imported-credential/key")``,
  a random 12-byte nonce per credential, and associated data
  ``"softkey/v1/imported-credential" || SHA-256(rp.id) || credential ID``. A row moved to
  another credential or RP, or a key whose master key changed (reset), does not open.
- resident ones also take a slot (a row of ``credentials``), so they count against the
  capacity, are discoverable (empty allowList), and credential management lists and deletes
  them like any resident credential.

Lookup (``Authenticator.locate``): an ID is first unwrapped as softkey's own format; only if
that fails is it looked up here (one primary-key read), then opened. A non-resident imported
credential takes no slot, which a real key could not do: a key with no storage per
non-resident credential can only recognise IDs it made itself. Reset wipes the table and
makes a new master key, so imported credentials die like every other.

The functions here are the device-side half of the WebDriver vocabulary (add_credential,
get_credentials, remove_credential, remove_all_credentials, set_credential_properties); the
pytest fixture (transports/webdriver.py) and the CLI / control socket (tools/webdriver_ops.py)
call them.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from . import backup, cbor, cose, large_blobs, params
from .ctap import CtapError
from .keywrap import CRED_RANDOM_LEN, CredentialSecrets
from .store import ImportedRow, ResidentCredential

if TYPE_CHECKING:
    from .device import Authenticator

# WebAuthn L3 §4 "Credential ID": at most 1023 bytes.
MAX_CREDENTIAL_ID_LEN = 1023
NONCE_LEN = 12
KEY_INFO = b"softkey/v1/imported-credential/key"
AAD_LABEL = b"softkey/v1/imported-credential"
LARGE_BLOB_KEY_LEN = 32
_MAX_COUNTER = 0xFFFFFFFF


class CredentialError(ValueError):
    """A refused request; ``str()`` is one sentence, ``code`` its kind (usage, not_found,
    full, refused)."""

    def __init__(self, message: str, *, code: str = "usage") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class StoredCredential:
    """One credential stored on the key, as WebDriver's getCredentials describes it.

    ``public_key`` is the COSE_Key (CBOR bytes); ``private_key`` a PKCS#8 PEM, only when
    asked for; ``sign_count`` the value the last signature carried; ``order`` the slot's
    insertion order (None for a non-resident credential, which has no slot)."""

    credential_id: bytes
    rp_id: str
    user_handle: bytes | None
    user_name: str | None
    user_display_name: str | None
    sign_count: int
    resident: bool
    imported: bool
    backup_eligible: bool
    backup_state: bool
    alg: int | None
    public_key: bytes | None
    cred_protect: int = 1
    rp_name: str | None = None
    large_blob: bytes | None = None
    created_at: int | None = None
    order: int | None = None
    private_key: bytes | None = None


def rp_hash_of(rp_id: str) -> bytes:
    return hashlib.sha256(rp_id.encode("utf-8")).digest()


# -- sealing ---------------------------------------------------------------------------------


def _cipher(auth: Authenticator) -> AESGCM:
    master = auth.store.get_meta("master_key")
    if master is None:  # cannot happen: an Authenticator makes one before anything else
        raise CredentialError("the key has no master key", code="refused")
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=KEY_INFO)
    return AESGCM(hkdf.derive(master))


def _aad(credential_id: bytes, rp_hash: bytes) -> bytes:
    return AAD_LABEL + rp_hash + credential_id


def unseal(auth: Authenticator, credential_id: bytes, rp_hash: bytes) -> CredentialSecrets | None:
    """The secrets of an imported credential of this RP, or None ("not mine")."""
    row = auth.store.get_imported(credential_id)
    if row is None or not hmac.compare_digest(row.rp_id_hash, rp_hash):
        return None
    try:
        plaintext = _cipher(auth).decrypt(row.nonce, row.sealed, _aad(credential_id, rp_hash))
    except (InvalidTag, ValueError):
        return None
    return CredentialSecrets.decode(plaintext)


# -- keys --------------------------------------------------------------------------------------


def load_private_key(key: Any) -> tuple[int, bytes]:
    """(COSE alg, raw private key) from PKCS#8 PEM or DER bytes (or PEM text, or a
    cryptography private key object)."""
    if isinstance(key, str):
        key = key.encode()
    if isinstance(key, (bytes, bytearray, memoryview)):
        data = bytes(key)
        try:
            if data.lstrip().startswith(b"-----BEGIN"):
                key = serialization.load_pem_private_key(data, password=None)
            else:
                key = serialization.load_der_private_key(data, password=None)
        except TypeError:
            raise CredentialError(
                "the private key is encrypted; give it unencrypted "
                "(openssl pkcs8 -in key.pem -topk8 -nocrypt -out plain.pem)"
            ) from None
        except Exception as exc:  # cryptography raises several types for a bad key
            raise CredentialError(
                f"cannot read the private key ({exc.__class__.__name__}); give a PKCS#8 PEM "
                "or DER of a P-256, P-384, Ed25519 or ML-DSA key"
            ) from None
    try:
        return cose.from_private_key(key)
    except ValueError as exc:
        raise CredentialError(str(exc)) from None


def private_key_pem(alg: int, raw: bytes) -> bytes:
    """The PKCS#8 PEM of a credential's private key (unencrypted: handle with care)."""
    key = cose.load_private(alg, raw)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


# -- large blobs (CTAP 2.1 §6.10.3: what a platform writes for a credential) --------------------


def _blob_aad(size: int) -> bytes:
    return b"blob" + struct.pack("<Q", size)


def _array_entries(auth: Authenticator) -> list[Any] | None:
    serialized = large_blobs.read_array(auth)
    try:
        entries = cbor.decode(serialized[: -large_blobs.CHECKSUM_LEN])
    except CtapError:
        return None
    return entries if isinstance(entries, list) else None


def _append_large_blob(auth: Authenticator, key: bytes, blob: bytes) -> None:
    if not large_blobs.is_supported(auth.profile):
        raise CredentialError(
            f"the {auth.profile.name} profile has no large blobs (largeBlobKey is a CTAP 2.1 "
            "extension); leave out the large blob or use a 2.1 profile"
        )
    entries = _array_entries(auth)
    if entries is None:
        raise CredentialError(
            "the key's large-blob array is not valid CBOR; a platform wrote something else into it",
            code="refused",
        )
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)  # raw DEFLATE, RFC 1951
    compressed = compressor.compress(blob) + compressor.flush()
    nonce = auth.random(NONCE_LEN)
    ciphertext = AESGCM(key).encrypt(nonce, compressed, _blob_aad(len(blob)))
    entries.append({1: ciphertext, 2: nonce, 3: len(blob)})
    body = cbor.encode(entries)
    serialized = body + hashlib.sha256(body).digest()[: large_blobs.CHECKSUM_LEN]
    limit = auth.profile.max_serialized_large_blob_array
    if len(serialized) > limit:
        raise CredentialError(
            f"the large blob does not fit: the key's array would be {len(serialized)} bytes, "
            f"and it stores at most {limit}",
            code="full",
        )
    auth.store.set_meta(large_blobs.META_ARRAY, serialized)


def read_large_blob(auth: Authenticator, key: bytes | None) -> bytes | None:
    """The large blob stored for a credential's largeBlobKey, if any (the first entry that
    opens, as a platform reads it)."""
    if key is None:
        return None
    for entry in _array_entries(auth) or []:
        if not isinstance(entry, dict) or not {1, 2, 3} <= set(entry):
            continue
        ciphertext, nonce, size = entry[1], entry[2], entry[3]
        if not isinstance(ciphertext, bytes) or not isinstance(nonce, bytes):
            continue
        if not isinstance(size, int) or len(nonce) != NONCE_LEN:
            continue
        try:
            compressed = AESGCM(key).decrypt(nonce, ciphertext, _blob_aad(size))
            blob = zlib.decompressobj(wbits=-zlib.MAX_WBITS).decompress(compressed)
        except (InvalidTag, ValueError, zlib.error):
            continue
        if len(blob) == size:
            return blob
    return None


# -- add ---------------------------------------------------------------------------------------


def _check_bytes(value: Any, what: str) -> bytes:
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise CredentialError(f"{what} must be bytes")
    return bytes(value)


def add_credential(
    auth: Authenticator,
    credential_id: bytes,
    rp_id: str,
    private_key: Any,
    *,
    user_handle: bytes | None = None,
    user_name: str | None = None,
    user_display_name: str | None = None,
    sign_count: int = 0,
    resident: bool = False,
    large_blob: bytes | None = None,
    backup_eligible: bool | None = None,
    backup_state: bool | None = None,
    cred_protect: int = 1,
) -> StoredCredential:
    """Store a credential with the given ID and private key (WebDriver addCredential).

    An ID this key made itself for ``rp_id`` with the same private key is kept as the native
    credential it is (re-adding what get_credentials listed works); any other ID becomes an
    imported credential. An ID the key already stores is replaced. Resident credentials need
    a user handle and a free slot (or replace the slot of the same RP and user handle, as
    makeCredential does). Raises CredentialError; on refusal nothing is changed.
    """
    credential_id = _check_bytes(credential_id, "the credential ID")
    if not 1 <= len(credential_id) <= MAX_CREDENTIAL_ID_LEN:
        raise CredentialError(
            f"a credential ID is 1 to {MAX_CREDENTIAL_ID_LEN} bytes (WebAuthn), "
            f"not {len(credential_id)}"
        )
    problem = params.rp_id_problem(rp_id) if isinstance(rp_id, str) and rp_id else "it is empty"
    if problem:
        raise CredentialError(f"the RP ID is not usable: {problem}")
    alg, raw = load_private_key(private_key)
    offered = [a for a in auth.profile.algorithms if a in cose.SUPPORTED]
    if alg not in offered:
        raise CredentialError(
            f"the {auth.profile.name} profile does not make credentials of COSE algorithm "
            f"{alg} (it offers {', '.join(map(str, offered))}); use a key of one of those types"
        )
    if isinstance(sign_count, bool) or not isinstance(sign_count, int):
        raise CredentialError("the sign count must be an integer")
    if not 0 <= sign_count <= _MAX_COUNTER:
        raise CredentialError(f"the sign count must be between 0 and {_MAX_COUNTER}")
    if cred_protect not in (1, 2, 3):
        raise CredentialError("credProtect must be 1, 2 or 3")
    user_id = None
    if user_handle is not None:
        user_id = _check_bytes(user_handle, "the user handle")
        handle_problem = params.user_handle_problem(user_id)
        if handle_problem:
            raise CredentialError(f"the user handle is not usable: {handle_problem}")
    if resident:
        if not auth.profile.ctap2:
            raise CredentialError(
                "a U2F-only key has no discoverable credentials; add it as non-resident",
                code="refused",
            )
        if user_id is None:
            raise CredentialError("a resident credential needs a user handle (the RP's user.id)")
    elif user_name is not None or user_display_name is not None:
        raise CredentialError(
            "a user name only applies to a resident credential: a non-resident one keeps no "
            "user account on the key"
        )
    if large_blob is not None:
        large_blob = _check_bytes(large_blob, "the large blob")
        if not resident:
            raise CredentialError(
                "a large blob needs a resident credential (largeBlobKey is only kept in a slot)"
            )
    eligible = auth.profile.backup_eligible if backup_eligible is None else bool(backup_eligible)
    state = auth.profile.backup_state if backup_state is None else bool(backup_state)
    try:
        backup.check(eligible, state)
    except ValueError as exc:
        raise CredentialError(str(exc)) from None

    rp_hash = rp_hash_of(rp_id)
    native = auth.wrapper.unwrap(credential_id, rp_hash)
    if native is not None and (
        native.private_key != raw or native.alg != alg or native.discoverable != resident
    ):
        raise CredentialError(
            f"that ID is a credential this key made itself for {rp_id}, with another private "
            "key or residency; it cannot be given another one"
        )
    large_blob_key = auth.random(LARGE_BLOB_KEY_LEN) if large_blob is not None else None
    auth.pending = None
    with auth.store.transaction():
        if auth.store.get_resident(credential_id) or auth.store.get_imported(credential_id):
            remove_credential(auth, credential_id)
        if resident:
            assert user_id is not None
            stored = auth.store.put_resident(
                ResidentCredential(
                    credential_id=credential_id,
                    rp_id=rp_id,
                    rp_id_hash=rp_hash,
                    user_id=user_id,
                    rp_name=rp_id,
                    user_name=params.truncate_name(user_name),
                    user_display_name=params.truncate_name(user_display_name),
                    cred_protect=native.cred_protect if native else cred_protect,
                    large_blob_key=large_blob_key,
                    # Kept with the slot for credential management (store.py schema 5).
                    public_key=cbor.encode(cose.public_cose(alg, raw)),
                    third_party_payment=bool(native and native.third_party_payment),
                ),
                auth.profile.rk_capacity,
            )
            if not stored:
                used, capacity = auth.store.resident_count(), auth.profile.rk_capacity
                raise CredentialError(
                    f"slots full ({used}/{capacity}); delete some with "
                    "`softkey credentials delete` or reset",
                    code="full",
                )
        if native is None:
            secrets = CredentialSecrets(
                alg=alg,
                private_key=raw,
                discoverable=resident,
                cred_protect=cred_protect,
                cred_random=auth.random(CRED_RANDOM_LEN),
            )
            nonce = auth.random(NONCE_LEN)
            sealed = _cipher(auth).encrypt(nonce, secrets.encode(), _aad(credential_id, rp_hash))
            auth.store.put_imported(
                ImportedRow(
                    credential_id=credential_id,
                    rp_id=rp_id,
                    rp_id_hash=rp_hash,
                    resident=resident,
                    user_id=None if resident else user_id,
                    nonce=nonce,
                    sealed=sealed,
                )
            )
        auth.store.set_counter(credential_id, sign_count)
        if backup_eligible is not None or backup_state is not None:
            auth.store.set_properties(credential_id, eligible, state)
        if large_blob_key is not None and large_blob is not None:
            _append_large_blob(auth, large_blob_key, large_blob)
    found = get_credential(auth, credential_id)
    if found is None:  # a non-resident ID of this key's own: valid, but stored nowhere
        found = _describe(
            auth,
            credential_id,
            rp_hash,
            False,
            rp_id=rp_id,
            user_handle=None,
            user_name=None,
            user_display_name=None,
            resident=False,
            imported=False,
            cred_protect=native.cred_protect if native else cred_protect,
        )
    # An added credential is an added credential, however it got there (WebDriver's
    # addCredential reports it as credentialAdded too).
    auth.events.emit(
        "credentialAdded",
        rp_id=rp_id,
        credential_id=credential_id,
        sign_count=sign_count,
        resident=resident,
        imported=found.imported,
    )
    return found


# -- list --------------------------------------------------------------------------------------


def _describe(
    auth: Authenticator,
    credential_id: bytes,
    rp_hash: bytes,
    include_private_key: bool,
    **fields: Any,
) -> StoredCredential:
    secrets = auth.secrets_of(credential_id, rp_hash)
    eligible, state = backup.properties(auth, credential_id)
    public_key = private = None
    if secrets is not None:
        public_key = cbor.encode(cose.public_cose(secrets.alg, secrets.private_key))
        if include_private_key:
            private = private_key_pem(secrets.alg, secrets.private_key)
    return StoredCredential(
        credential_id=credential_id,
        sign_count=auth.counter(credential_id),
        backup_eligible=eligible,
        backup_state=state,
        alg=secrets.alg if secrets is not None else None,
        public_key=public_key,
        private_key=private,
        **fields,
    )


def describe_resident(
    auth: Authenticator, cred: ResidentCredential, include_private_key: bool = False
) -> StoredCredential:
    return _describe(
        auth,
        cred.credential_id,
        cred.rp_id_hash,
        include_private_key,
        rp_id=cred.rp_id,
        rp_name=cred.rp_name,
        user_handle=cred.user_id,
        user_name=cred.user_name,
        user_display_name=cred.user_display_name,
        resident=True,
        imported=auth.store.get_imported(cred.credential_id) is not None,
        cred_protect=cred.cred_protect,
        large_blob=read_large_blob(auth, cred.large_blob_key),
        created_at=cred.created_at,
        order=cred.created,
    )


def _describe_imported(
    auth: Authenticator, row: ImportedRow, include_private_key: bool
) -> StoredCredential:
    secrets = unseal(auth, row.credential_id, row.rp_id_hash)
    return _describe(
        auth,
        row.credential_id,
        row.rp_id_hash,
        include_private_key,
        rp_id=row.rp_id,
        user_handle=row.user_id,
        user_name=None,
        user_display_name=None,
        resident=False,
        imported=True,
        cred_protect=secrets.cred_protect if secrets is not None else 1,
        created_at=row.created_at,
    )


def get_credentials(
    auth: Authenticator,
    include_private_keys: bool = False,
    *,
    rp_id: str | None = None,
    resident_only: bool = False,
) -> list[StoredCredential]:
    """Every credential stored on the key (WebDriver getCredentials): resident ones (native and
    imported), most recent first, then imported non-resident ones, most recent first.
    Non-resident credentials the key made itself are not stored anywhere but in their IDs,
    so no listing can show them. Private keys only when ``include_private_keys``."""
    rp_hash = rp_hash_of(rp_id) if rp_id else None
    found = [
        describe_resident(auth, cred, include_private_keys)
        for cred in auth.store.list_resident(rp_hash)
    ]
    if not resident_only:
        found += [
            _describe_imported(auth, row, include_private_keys)
            for row in auth.store.list_imported()
            if not row.resident and (rp_hash is None or row.rp_id_hash == rp_hash)
        ]
    return found


def get_credential(
    auth: Authenticator, credential_id: bytes, include_private_key: bool = False
) -> StoredCredential | None:
    """The stored credential with exactly this ID, or None."""
    resident = auth.store.get_resident(credential_id)
    if resident is not None:
        return describe_resident(auth, resident, include_private_key)
    row = auth.store.get_imported(credential_id)
    if row is not None and not row.resident:
        return _describe_imported(auth, row, include_private_key)
    return None


# -- remove, properties -----------------------------------------------------------------------


def remove_credential(auth: Authenticator, credential_id: bytes) -> bool:
    """Delete the stored credential with exactly this ID (WebDriver removeCredential); False
    if there is none. A resident one frees its slot."""
    auth.pending = None
    with auth.store.transaction():
        if auth.store.get_resident(credential_id) is not None:
            return auth.delete_credential(credential_id)
        row = next(
            (r for r in auth.store.list_imported() if r.credential_id == credential_id), None
        )
        deleted = auth.store.delete_imported(credential_id)
        if deleted:
            auth.events.emit(
                "credentialDeleted",
                rp_id=row.rp_id if row is not None else None,
                credential_id=credential_id,
            )
        return deleted


def remove_all_credentials(auth: Authenticator) -> int:
    """Delete every stored credential (WebDriver removeAllCredentials); how many there were.
    Unlike a reset the master key stays: non-resident IDs the key made keep working."""
    with auth.store.transaction():
        ids = [c.credential_id for c in auth.store.list_resident()]
        ids += [r.credential_id for r in auth.store.list_imported() if not r.resident]
        for credential_id in ids:
            remove_credential(auth, credential_id)
    return len(ids)


def set_credential_properties(
    auth: Authenticator,
    credential_id: bytes,
    backup_eligible: bool | None = None,
    backup_state: bool | None = None,
) -> StoredCredential:
    """Set a stored credential's backup flags (WebDriver setCredentialProperties); None keeps
    the current value. BS without BE is refused."""
    credential_id = _check_bytes(credential_id, "the credential ID")
    if get_credential(auth, credential_id) is None:
        raise CredentialError(
            "no credential with that ID is stored on this key (non-resident credentials the "
            "key made itself live only in their IDs and carry the profile's backup flags)",
            code="not_found",
        )
    current_eligible, current_state = backup.properties(auth, credential_id)
    eligible = current_eligible if backup_eligible is None else bool(backup_eligible)
    state = current_state if backup_state is None else bool(backup_state)
    try:
        backup.check(eligible, state)
    except ValueError as exc:
        raise CredentialError(str(exc)) from None
    auth.store.set_properties(credential_id, eligible, state)
    found = get_credential(auth, credential_id)
    assert found is not None
    return found
