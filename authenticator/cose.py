"""Credential key pairs per COSE algorithm: generate, sign, COSE_Key public form (RFC 9053).

Private keys travel as raw bytes (P-256/P-384 scalar, Ed25519 seed, ML-DSA seed) so they fit
inside a wrapped credential ID.

ML-DSA (FIPS 204) keys are kept in seed form: the 32-byte xi of ML-DSA.KeyGen (FIPS 204
Algorithm 1), from which ML-DSA.KeyGen_internal (Algorithm 6) rebuilds the key pair. Their
COSE_Key is key type AKP (7) with the raw public key in parameter pub (-1), the form
draft-ietf-cose-dilithium registers and python-fido2's MLDSA44/65/87 classes read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, mldsa

from .ctap import CoseAlg


@dataclass(frozen=True)
class _EcCurve:
    curve: ec.EllipticCurve
    size: int
    cose_crv: int
    hash: hashes.HashAlgorithm
    order: int  # n: a private scalar is valid iff 0 < d < n (SEC 1 §3.2.1)


_EC: dict[int, _EcCurve] = {
    CoseAlg.ES256: _EcCurve(
        ec.SECP256R1(),
        32,
        1,
        hashes.SHA256(),
        0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
    ),
    CoseAlg.ES384: _EcCurve(
        ec.SECP384R1(),
        48,
        2,
        hashes.SHA384(),
        int(
            "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF"
            "C7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973",
            16,
        ),
    ),
}

MlDsaPrivateKey = mldsa.MLDSA44PrivateKey | mldsa.MLDSA65PrivateKey | mldsa.MLDSA87PrivateKey


@dataclass(frozen=True)
class _MlDsaSet:
    """One ML-DSA parameter set (FIPS 204 §4, Tables 1 and 2)."""

    key_class: type[MlDsaPrivateKey]
    public_len: int
    signature_len: int


_MLDSA: dict[int, _MlDsaSet] = {
    CoseAlg.MLDSA44: _MlDsaSet(mldsa.MLDSA44PrivateKey, 1312, 2420),
    CoseAlg.MLDSA65: _MlDsaSet(mldsa.MLDSA65PrivateKey, 1952, 3309),
    CoseAlg.MLDSA87: _MlDsaSet(mldsa.MLDSA87PrivateKey, 2592, 4627),
}
MLDSA_SEED_LEN = 32  # xi, FIPS 204 Algorithm 1
COSE_KTY_AKP = 7  # IANA COSE Key Types "AKP" (algorithm key pair)


def _mldsa_supported() -> bool:
    """cryptography has ML-DSA only on OpenSSL >= 3.5, AWS-LC or BoringSSL backends."""
    try:
        mldsa.MLDSA44PrivateKey.from_seed_bytes(bytes(MLDSA_SEED_LEN))
    except UnsupportedAlgorithm:
        return False
    return True


# ML-DSA algorithms this installation can run; empty if the backend lacks ML-DSA, and then no
# profile offers them and no credential ID claiming one unwraps.
MLDSA = tuple(_MLDSA) if _mldsa_supported() else ()

SUPPORTED = frozenset({CoseAlg.ES256, CoseAlg.ES384, CoseAlg.EDDSA, *MLDSA})


PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | MlDsaPrivateKey


def public_key_len(alg: int) -> int:
    """Bytes of key material in the COSE public key (ML-DSA pub; EC x and y; Ed25519 x)."""
    if alg in _MLDSA:
        return _MLDSA[alg].public_len
    if alg == CoseAlg.EDDSA:
        return 32
    return 2 * _EC[alg].size


def max_signature_len(alg: int) -> int:
    """The longest signature ``alg`` makes (DER ECDSA: two integers with a sign byte each)."""
    if alg in _MLDSA:
        return _MLDSA[alg].signature_len
    if alg == CoseAlg.EDDSA:
        return 64
    return 2 * (_EC[alg].size + 1) + 6


def generate_key(alg: int) -> tuple[bytes, PrivateKey]:
    """A fresh private key for ``alg``: raw bytes (to wrap) and the loaded key (to use now,
    saving a second scalar multiplication per makeCredential)."""
    if alg == CoseAlg.EDDSA:
        ed = ed25519.Ed25519PrivateKey.generate()
        return ed.private_bytes_raw(), ed
    if alg in _MLDSA:
        pq = _MLDSA[alg].key_class.generate()
        return pq.private_bytes_raw(), pq  # the seed form: 32 bytes
    spec = _EC[alg]
    key = ec.generate_private_key(spec.curve)
    return key.private_numbers().private_value.to_bytes(spec.size, "big"), key


def generate(alg: int) -> bytes:
    """A fresh private key for ``alg`` as raw bytes."""
    return generate_key(alg)[0]


def load_private(alg: int, raw: bytes | PrivateKey) -> PrivateKey:
    if not isinstance(raw, bytes):
        return raw
    if alg == CoseAlg.EDDSA:
        return ed25519.Ed25519PrivateKey.from_private_bytes(raw)
    if alg in _MLDSA:
        return _MLDSA[alg].key_class.from_seed_bytes(raw)
    return ec.derive_private_key(int.from_bytes(raw, "big"), _EC[alg].curve)


def from_private_key(key: Any) -> tuple[int, bytes]:
    """(alg, raw) for a cryptography private key object (used to import PEM keys)."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return CoseAlg.EDDSA, key.private_bytes_raw()
    for alg in MLDSA:
        if isinstance(key, _MLDSA[alg].key_class):
            return alg, key.private_bytes_raw()
    if isinstance(key, ec.EllipticCurvePrivateKey):
        for alg, spec in _EC.items():
            if isinstance(key.curve, type(spec.curve)):
                return alg, key.private_numbers().private_value.to_bytes(spec.size, "big")
    raise ValueError("unsupported private key type: use P-256, P-384 or Ed25519 (or ML-DSA)")


def sign(alg: int, raw: bytes | PrivateKey, message: bytes) -> bytes:
    key = load_private(alg, raw)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(message, ec.ECDSA(_EC[alg].hash))
    # Ed25519 (RFC 8032 PureEdDSA) and ML-DSA (FIPS 204 Algorithm 2, pure ML-DSA with an empty
    # context string, as COSE ML-DSA signatures are defined) sign the message itself.
    return key.sign(message)


def public_cose(alg: int, raw: bytes | PrivateKey) -> dict[int, Any]:
    """The COSE_Key map of the public key (kty, alg, crv, x[, y])."""
    key = load_private(alg, raw)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        x = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return {1: 1, 3: alg, -1: 6, -2: x}
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        return {1: COSE_KTY_AKP, 3: alg, -1: key.public_key().public_bytes_raw()}
    spec = _EC[alg]
    numbers = key.public_key().public_numbers()
    return {
        1: 2,
        3: alg,
        -1: spec.cose_crv,
        -2: numbers.x.to_bytes(spec.size, "big"),
        -3: numbers.y.to_bytes(spec.size, "big"),
    }


def private_key_valid(alg: int, raw: bytes) -> bool:
    if alg in _MLDSA:
        # Every 32-byte string is an ML-DSA seed xi (FIPS 204 Algorithm 6 expands any).
        return alg in MLDSA and len(raw) == MLDSA_SEED_LEN
    expected = 32 if alg == CoseAlg.EDDSA else _EC[alg].size if alg in _EC else -1
    if len(raw) != expected:
        return False
    if alg == CoseAlg.EDDSA:
        return True  # every 32-byte string is an Ed25519 seed (RFC 8032 §5.1.5)
    # A range check instead of loading the key: loading costs a scalar multiplication,
    # and getAssertion would pay it twice (unwrap, then sign).
    return 0 < int.from_bytes(raw, "big") < _EC[alg].order
