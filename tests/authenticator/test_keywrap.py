"""Credential ID format: the documented vectors, tamper resistance, RP binding, reset."""

from __future__ import annotations

import hashlib
import hmac
import re
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given
from hypothesis import strategies as st

from softkey.authenticator import cose
from softkey.authenticator.keywrap import MAX_ID_LEN, CredentialSecrets, KeyWrapper

DOC = Path(__file__).resolve().parents[2] / "docs" / "credential-id.md"


def _vectors() -> list[dict[str, str]]:
    blocks = re.findall(r"```vector\n(.*?)```", DOC.read_text(), re.S)
    out = []
    for block in blocks:
        fields = {}
        for line in block.strip().splitlines():
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
        out.append(fields)
    return out


VECTORS = _vectors()


def test_doc_has_at_least_three_vectors() -> None:
    assert len(VECTORS) >= 3


def _hkdf(master: bytes, info: bytes, n: int) -> bytes:
    return HKDF(hashes.SHA256(), n, None, info).derive(master)


@pytest.mark.parametrize("v", VECTORS, ids=lambda v: v["rp_id"])
def test_vector_rederived_from_the_description(v: dict[str, str]) -> None:
    """Independent of KeyWrapper: raw HKDF/AES-CTR/HMAC as docs/credential-id.md says."""
    master = bytes.fromhex(v["master_key"])
    k_enc = _hkdf(master, b"softkey/v1/credential-id/enc", 16)
    k_mac = _hkdf(master, b"softkey/v1/credential-id/mac", 32)
    assert k_enc.hex() == v["k_enc"]
    assert k_mac.hex() == v["k_mac"]
    key = bytes.fromhex(v["private_key"])
    blob = bytes.fromhex(v["cred_blob"])
    plaintext = (
        struct.pack(
            ">hBBB",
            int(v["alg"]),
            1 if v["discoverable"] == "true" else 0,
            int(v["cred_protect"]),
            len(key),
        )
        + key
        + bytes.fromhex(v["cred_random"])
        + bytes([len(blob)])
        + blob
    )
    assert plaintext.hex() == v["plaintext"]
    iv = bytes.fromhex(v["iv"])
    enc = Cipher(algorithms.AES(k_enc), modes.CTR(iv)).encryptor()
    body = b"\x01" + iv + enc.update(plaintext) + enc.finalize()
    rp_hash = hashlib.sha256(v["rp_id"].encode()).digest()
    tag = hmac.new(k_mac, body + rp_hash, hashlib.sha256).digest()[:16]
    assert (body + tag).hex() == v["credential_id"]


@pytest.mark.parametrize("v", VECTORS, ids=lambda v: v["rp_id"])
def test_key_wrapper_matches_vector(v: dict[str, str]) -> None:
    iv = bytes.fromhex(v["iv"])
    wrapper = KeyWrapper(bytes.fromhex(v["master_key"]), random=lambda n: iv[:n])
    secrets = CredentialSecrets(
        alg=int(v["alg"]),
        private_key=bytes.fromhex(v["private_key"]),
        discoverable=v["discoverable"] == "true",
        cred_protect=int(v["cred_protect"]),
        cred_random=bytes.fromhex(v["cred_random"]),
        cred_blob=bytes.fromhex(v["cred_blob"]),
    )
    rp_hash = hashlib.sha256(v["rp_id"].encode()).digest()
    cid = bytes.fromhex(v["credential_id"])
    assert wrapper.wrap(secrets, rp_hash) == cid
    assert wrapper.unwrap(cid, rp_hash) == secrets


def _fresh() -> tuple[KeyWrapper, CredentialSecrets, bytes, bytes]:
    wrapper = KeyWrapper(b"\x42" * 32)
    secrets = CredentialSecrets(alg=-7, private_key=cose.generate(-7), cred_random=b"\x01" * 32)
    rp_hash = hashlib.sha256(b"example.com").digest()
    return wrapper, secrets, rp_hash, wrapper.wrap(secrets, rp_hash)


def test_every_single_bit_flip_is_rejected() -> None:
    wrapper, _, rp_hash, cid = _fresh()
    for i in range(len(cid) * 8):
        bad = bytearray(cid)
        bad[i // 8] ^= 1 << (i % 8)
        assert wrapper.unwrap(bytes(bad), rp_hash) is None, f"bit {i}"


def test_other_rp_other_master_key_truncation_rejected() -> None:
    wrapper, secrets, rp_hash, cid = _fresh()
    assert wrapper.unwrap(cid, rp_hash) == secrets
    assert wrapper.unwrap(cid, hashlib.sha256(b"evil.example").digest()) is None
    assert KeyWrapper(b"\x43" * 32).unwrap(cid, rp_hash) is None
    for n in range(len(cid)):
        assert wrapper.unwrap(cid[:n], rp_hash) is None


def test_random_iv_makes_distinct_ids_for_the_same_key() -> None:
    wrapper, secrets, rp_hash, cid = _fresh()
    assert wrapper.wrap(secrets, rp_hash) != cid


def test_largest_id_fits_a_u2f_key_handle() -> None:
    wrapper = KeyWrapper(b"\x00" * 32)
    secrets = CredentialSecrets(
        alg=-35, private_key=cose.generate(-35), cred_random=b"\0" * 32, cred_blob=b"\xff" * 64
    )
    cid = wrapper.wrap(secrets, b"\0" * 32)
    assert len(cid) == MAX_ID_LEN <= 255


@given(st.binary(max_size=300))
def test_arbitrary_bytes_are_never_an_exception(data: bytes) -> None:
    wrapper = KeyWrapper(b"\x42" * 32)
    assert wrapper.unwrap(data, b"\0" * 32) is None


@pytest.mark.parametrize("alg", [-7, -8, -35])
@pytest.mark.parametrize("blob_len", [0, 1, 2, 31, 64])
def test_round_trip_keeps_every_field(alg: int, blob_len: int) -> None:
    wrapper = KeyWrapper(b"\x42" * 32)
    rp_hash = hashlib.sha256(b"example.com").digest()
    flag_sets = [(False, False, 1), (True, False, 2), (False, True, 3), (True, True, 3)]
    for discoverable, hmac_secret, cred_protect in flag_sets:
        secrets = CredentialSecrets(
            alg=alg,
            private_key=cose.generate(alg),
            discoverable=discoverable,
            cred_protect=cred_protect,
            cred_random=bytes(range(32)),
            cred_blob=bytes(range(1, blob_len + 1)),
            hmac_secret=hmac_secret,
        )
        assert wrapper.unwrap(wrapper.wrap(secrets, rp_hash), rp_hash) == secrets


def test_master_key_must_be_32_bytes() -> None:
    for size in (0, 31, 33, 64):
        with pytest.raises(ValueError):
            KeyWrapper(b"\x42" * size)


def test_decode_refuses_every_malformed_plaintext() -> None:
    # decode only ever sees plaintext behind a valid tag, i.e. written by this master key; it
    # still checks every length, so a bug in encode can never turn into a wrong key.
    good = CredentialSecrets(
        alg=-7, private_key=cose.generate(-7), cred_random=b"\x07" * 32, cred_blob=b"blob"
    ).encode()
    assert CredentialSecrets.decode(good) is not None
    key_len = good[4]
    random_at = 5 + key_len
    blob_at = random_at + 32
    bad = {
        "empty": b"",
        "header only": good[:5],
        "trailing byte": good + b"\x00",
        "blob cut short": good[:-1],
        "blob length too big": good[:blob_at] + bytes([5]) + good[blob_at + 1 :],
        "blob length too small": good[:blob_at] + bytes([3]) + good[blob_at + 1 :],
        "credRandom cut short": good[:random_at] + b"\x07" * 31,
        "unknown alg": struct.pack(">h", -9) + good[2:],
        "key not on the curve": good[:5] + b"\xff" * key_len + good[random_at:],
    }
    for what, data in bad.items():
        assert CredentialSecrets.decode(data) is None, what


def test_ids_shorter_than_version_iv_tag_are_refused_even_with_a_valid_tag() -> None:
    # Only the master key's owner could make such an ID; it must still be "not mine", never a
    # crash (an IV shorter than 16 bytes would make AES-CTR raise).
    master = b"\x42" * 32
    wrapper = KeyWrapper(master)
    k_mac = _hkdf(master, b"softkey/v1/credential-id/mac", 32)
    rp_hash = hashlib.sha256(b"example.com").digest()
    for body_len in range(1, 18):
        body = b"\x01" + bytes(body_len - 1)
        forged = body + hmac.new(k_mac, body + rp_hash, hashlib.sha256).digest()[:16]
        assert wrapper.unwrap(forged, rp_hash) is None, body_len


@pytest.mark.parametrize("version", [0x00, 0x02, 0xFF])
def test_unknown_version_is_refused_even_with_a_valid_tag(version: int) -> None:
    master = b"\x42" * 32
    wrapper, secrets, rp_hash, cid = _fresh()
    k_mac = _hkdf(master, b"softkey/v1/credential-id/mac", 32)
    body = bytes([version]) + cid[1:-16]
    forged = body + hmac.new(k_mac, body + rp_hash, hashlib.sha256).digest()[:16]
    assert wrapper.unwrap(forged, rp_hash) is None
    assert wrapper.unwrap(cid, rp_hash) == secrets
