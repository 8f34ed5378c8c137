"""Credential key pairs per COSE algorithm: generate, sign, COSE_Key public form (RFC 9053).

Private keys travel as raw bytes (P-256/P-384 scalar, Ed25519 seed) so they fit inside a
wrapped credential ID.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

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

SUPPORTED = frozenset({CoseAlg.ES256, CoseAlg.ES384, CoseAlg.EDDSA})


PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


def generate_key(alg: int) -> tuple[bytes, PrivateKey]:
    """A fresh private key for ``alg``: raw bytes (to wrap) and the loaded key (to use now,
    saving a second scalar multiplication per makeCredential)."""
    if alg == CoseAlg.EDDSA:
        ed = ed25519.Ed25519PrivateKey.generate()
        return ed.private_bytes_raw(), ed
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
    return ec.derive_private_key(int.from_bytes(raw, "big"), _EC[alg].curve)


def from_private_key(key: Any) -> tuple[int, bytes]:
    """(alg, raw) for a cryptography private key object (used to import PEM keys)."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return CoseAlg.EDDSA, key.private_bytes_raw()
    if isinstance(key, ec.EllipticCurvePrivateKey):
        for alg, spec in _EC.items():
            if isinstance(key.curve, type(spec.curve)):
                return alg, key.private_numbers().private_value.to_bytes(spec.size, "big")
    raise ValueError("unsupported private key type: use P-256, P-384 or Ed25519")


def sign(alg: int, raw: bytes | PrivateKey, message: bytes) -> bytes:
    key = load_private(alg, raw)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(message)
    return key.sign(message, ec.ECDSA(_EC[alg].hash))


def public_cose(alg: int, raw: bytes | PrivateKey) -> dict[int, Any]:
    """The COSE_Key map of the public key (kty, alg, crv, x[, y])."""
    key = load_private(alg, raw)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        x = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return {1: 1, 3: alg, -1: 6, -2: x}
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
    expected = 32 if alg == CoseAlg.EDDSA else _EC[alg].size if alg in _EC else -1
    if len(raw) != expected:
        return False
    if alg == CoseAlg.EDDSA:
        return True  # every 32-byte string is an Ed25519 seed (RFC 8032 §5.1.5)
    # A range check instead of loading the key: loading costs a scalar multiplication,
    # and getAssertion would pay it twice (unwrap, then sign).
    return 0 < int.from_bytes(raw, "big") < _EC[alg].order
