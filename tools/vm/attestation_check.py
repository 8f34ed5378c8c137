"""What "attestation verified" means in the e2e table: a packed statement checked to a root.

The e2e rows that say so hand this verifier to python-fido2's Fido2Server
(``verify_attestation=``). It accepts a registration only if all of these hold:

1. the format is ``packed`` with an ``x5c`` chain (full/basic attestation, not self or none);
2. python-fido2's PackedAttestation accepts the statement: the signature over
   authenticatorData || clientDataHash verifies with the leaf certificate, and the leaf meets
   WebAuthn §8.2.1 (v3, OU "Authenticator Attestation", CA false, an AAGUID extension equal
   to the AAGUID in authenticatorData);
3. the chain ends in the root the test trusts (``softkey attestation export-ca`` of this key):
   each certificate is signed by the next (python-fido2's verify_x509_chain), the leaf's issuer
   is the root's subject, the root is a self-signed CA, and every certificate is valid now;
4. the AAGUID is the one the key's getInfo reports.

A wrong root, a wrong AAGUID, a self or none statement, or a bad signature raises
``AttestationRejected`` (a python-fido2 error otherwise), so Fido2Server rejects the
registration and the row fails. Used by the guest (tools/vm/guest_*.py) and unit-tested in
tests/tools/test_e2e_attestation.py; needs the project's venv (cryptography, fido2).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from fido2.attestation import (
    AttestationResult,
    AttestationType,
    AttestationVerifier,
    PackedAttestation,
)
from fido2.webauthn import AttestationObject, AuthenticatorData


class AttestationRejected(Exception):
    """The attestation does not chain to the trusted root, or says something else it should not."""


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _check_valid_now(cert: x509.Certificate, what: str) -> None:
    now = _now()
    if not (cert.not_valid_before_utc <= now <= cert.not_valid_after_utc):
        raise AttestationRejected(
            f"the {what} certificate is not valid now ({cert.not_valid_before_utc:%Y-%m-%d} .. "
            f"{cert.not_valid_after_utc:%Y-%m-%d})"
        )


def load_root(pem_or_der: bytes) -> x509.Certificate:
    """The trusted root, from `softkey attestation export-ca` (PEM) or DER bytes."""
    if pem_or_der.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_certificate(pem_or_der)
    return x509.load_der_x509_certificate(pem_or_der)


@dataclass
class ChainVerifier(AttestationVerifier):
    """python-fido2's AttestationVerifier, trusting exactly one root and one AAGUID."""

    root: x509.Certificate
    aaguid: bytes
    checked: list[str] = field(default_factory=list)  # what the last verification checked

    def __post_init__(self) -> None:
        # Only the packed format: softkey's batch attestation; anything else is a failure.
        super().__init__([PackedAttestation()])
        root = self.root
        if root.issuer != root.subject:
            raise AttestationRejected("the trusted root is not self-signed")
        try:
            constraints = root.extensions.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound as exc:
            raise AttestationRejected("the trusted root has no basicConstraints") from exc
        if not constraints.ca:
            raise AttestationRejected("the trusted root is not a CA (basicConstraints CA:false)")
        public = root.public_key()
        if not isinstance(public, ec.EllipticCurvePublicKey):
            raise AttestationRejected("the trusted root's key is not an EC key")
        assert root.signature_hash_algorithm is not None
        public.verify(root.signature, root.tbs_certificate_bytes,
                      ec.ECDSA(root.signature_hash_algorithm))  # fmt: skip

    def ca_lookup(self, result: AttestationResult, auth_data: AuthenticatorData) -> bytes | None:
        if result.attestation_type != AttestationType.BASIC or not result.trust_path:
            raise AttestationRejected(
                f"attestation type {result.attestation_type.name}, expected a basic x5c chain"
            )
        leaf = x509.load_der_x509_certificate(result.trust_path[0])
        _check_valid_now(leaf, "attestation")
        _check_valid_now(self.root, "root")
        if leaf.issuer != self.root.subject:
            raise AttestationRejected(
                f"the attestation certificate's issuer {leaf.issuer.rfc4514_string()!r} is not "
                f"the trusted root {self.root.subject.rfc4514_string()!r}"
            )
        data = auth_data.credential_data
        if data is None:
            raise AttestationRejected("authenticatorData carries no attested credential data")
        if bytes(data.aaguid) != self.aaguid:
            raise AttestationRejected(
                f"AAGUID {bytes(data.aaguid).hex()} is not getInfo's {self.aaguid.hex()}"
            )
        # verify_x509_chain (in the caller) checks the signatures leaf -> root.
        return self.root.public_bytes(Encoding.DER)

    def verify_attestation(
        self, attestation_object: AttestationObject, client_data_hash: bytes
    ) -> None:
        self.checked = []
        if attestation_object.fmt != "packed":
            raise AttestationRejected(f"format {attestation_object.fmt!r}, expected 'packed'")
        if "x5c" not in attestation_object.att_stmt:
            raise AttestationRejected("a packed statement without x5c (self attestation)")
        super().verify_attestation(attestation_object, client_data_hash)
        chain = len(attestation_object.att_stmt["x5c"])
        self.checked = [
            "packed signature (python-fido2)",
            f"x5c chain of {chain} + root {self.root.subject.rfc4514_string()}",
            f"AAGUID {self.aaguid.hex()} = getInfo",
        ]


def chain_verifier(root_pem: bytes, aaguid: bytes) -> ChainVerifier:
    """A verifier for ``Fido2Server(..., attestation="direct", verify_attestation=...)``."""
    return ChainVerifier(load_root(root_pem), bytes(aaguid))
