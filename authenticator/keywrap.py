"""Master key hierarchy and the credential ID format (docs/credential-id.md).

A non-resident credential's private key lives only inside its credential ID, encrypted
under a key derived from the device's master key. The same format wraps resident keys (the
slot table stores the ID, never a clear private key) and, later, U2F key handles.

    version (1) | IV (16) | AES-128-CTR(plaintext) | HMAC-SHA256(...)[:16]

The tag covers version | IV | ciphertext | rpIdHash (encrypt-then-MAC), so an ID presented
for another RP, tampered with anywhere, or made under an earlier master key (before a reset)
fails the constant-time tag check and is answered as "not mine" (None), never an exception.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from . import cose
from .environment import RandomSource, system_random

VERSION = 1
IV_LEN = 16
TAG_LEN = 16
CRED_RANDOM_LEN = 32
MAX_CRED_BLOB = 64
MASTER_KEY_LEN = 32

FLAG_DISCOVERABLE = 0x01
# Made with the hmac-secret extension (CTAP 2.1 §12.5): only such credentials answer it.
FLAG_HMAC_SECRET = 0x02
# Made with thirdPartyPayment: true (CTAP 2.2 §12 thirdPartyPayment): the flag is part of the
# credential, resident or not, so getAssertion and credential management can report it.
FLAG_THIRD_PARTY_PAYMENT = 0x04

# Largest plaintext: alg(2) flags(1) credProtect(1) keylen(1) key(48) credRandom(32)
# bloblen(1) blob(64) -> ID of 1 + 16 + 150 + 16 = 183 bytes, under U2F's 255-byte limit.
MAX_ID_LEN = 1 + IV_LEN + 2 + 1 + 1 + 1 + 48 + CRED_RANDOM_LEN + 1 + MAX_CRED_BLOB + TAG_LEN


def _derive(master_key: bytes, label: bytes, length: int) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=length, salt=None, info=b"softkey/v1/" + label
    ).derive(master_key)


@dataclass(frozen=True)
class CredentialSecrets:
    """What a credential ID carries, encrypted."""

    alg: int
    private_key: bytes
    discoverable: bool = False
    cred_protect: int = 1
    cred_random: bytes = b"\x00" * CRED_RANDOM_LEN
    cred_blob: bytes = b""
    hmac_secret: bool = False
    third_party_payment: bool = False

    def encode(self) -> bytes:
        flags = (
            (FLAG_DISCOVERABLE if self.discoverable else 0)
            | (FLAG_HMAC_SECRET if self.hmac_secret else 0)
            | (FLAG_THIRD_PARTY_PAYMENT if self.third_party_payment else 0)
        )
        return (
            struct.pack(">hBBB", self.alg, flags, self.cred_protect, len(self.private_key))
            + self.private_key
            + self.cred_random
            + bytes([len(self.cred_blob)])
            + self.cred_blob
        )

    @classmethod
    def decode(cls, data: bytes) -> CredentialSecrets | None:
        try:
            alg, flags, cred_protect, key_len = struct.unpack_from(">hBBB", data, 0)
            pos = 5
            private_key = data[pos : pos + key_len]
            pos += key_len
            cred_random = data[pos : pos + CRED_RANDOM_LEN]
            pos += CRED_RANDOM_LEN
            blob_len = data[pos]
            pos += 1
            cred_blob = data[pos : pos + blob_len]
            pos += blob_len
        except (struct.error, IndexError):
            return None
        # pos is where the fields say the data ends: equal to the length only when every slice
        # above was whole (a short one means the data ended earlier), and nothing trails.
        if pos != len(data):
            return None
        if alg not in cose.SUPPORTED or not cose.private_key_valid(alg, private_key):
            return None
        return cls(
            alg=alg,
            private_key=private_key,
            discoverable=bool(flags & FLAG_DISCOVERABLE),
            cred_protect=cred_protect,
            cred_random=cred_random,
            cred_blob=cred_blob,
            hmac_secret=bool(flags & FLAG_HMAC_SECRET),
            third_party_payment=bool(flags & FLAG_THIRD_PARTY_PAYMENT),
        )


class KeyWrapper:
    """Wraps and unwraps credential secrets under keys derived from one master key."""

    def __init__(self, master_key: bytes, random: RandomSource = system_random) -> None:
        if len(master_key) != MASTER_KEY_LEN:
            raise ValueError("master key must be 32 bytes")
        self._enc_key = _derive(master_key, b"credential-id/enc", 16)
        self._mac_key = _derive(master_key, b"credential-id/mac", 32)
        self._random = random

    def _tag(self, header_iv_ct: bytes, rp_id_hash: bytes) -> bytes:
        return hmac.new(self._mac_key, header_iv_ct + rp_id_hash, hashlib.sha256).digest()[:TAG_LEN]

    def _ctr(self, iv: bytes, data: bytes) -> bytes:
        # CTR is its own inverse; the IV is random per credential and authenticated.
        cipher = Cipher(algorithms.AES(self._enc_key), modes.CTR(iv))
        ctx = cipher.encryptor()
        return ctx.update(data) + ctx.finalize()

    def wrap(self, secrets: CredentialSecrets, rp_id_hash: bytes) -> bytes:
        if len(secrets.cred_blob) > MAX_CRED_BLOB:
            raise ValueError("credBlob too large")
        iv = self._random(IV_LEN)
        body = bytes([VERSION]) + iv + self._ctr(iv, secrets.encode())
        return body + self._tag(body, rp_id_hash)

    def unwrap(self, credential_id: bytes, rp_id_hash: bytes) -> CredentialSecrets | None:
        """The secrets if this ID was made by this master key for this RP, else None."""
        if len(credential_id) < 1 + IV_LEN + TAG_LEN or credential_id[0] != VERSION:
            return None
        body, tag = credential_id[:-TAG_LEN], credential_id[-TAG_LEN:]
        if not hmac.compare_digest(tag, self._tag(body, rp_id_hash)):
            return None
        iv = body[1 : 1 + IV_LEN]
        return CredentialSecrets.decode(self._ctr(iv, body[1 + IV_LEN :]))
