"""tools/vm/attestation_check.py: what the e2e rows mean by "attestation verified".

The verifier is handed to python-fido2's Fido2Server exactly as the VM rows do; here the key
is in-process, so a wrong root, a wrong AAGUID and a self attestation can be staged.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

import pytest
from fido2.server import Fido2Server
from fido2.webauthn import PublicKeyCredentialRpEntity, PublicKeyCredentialUserEntity

from softkey.transports.pytest_plugin import make_softkey

VM_DIR = Path(__file__).resolve().parents[2] / "tools" / "vm"
RP = PublicKeyCredentialRpEntity(id="example.com", name="Example")
USER = PublicKeyCredentialUserEntity(id=b"user-1", name="alice", display_name="Alice")


@pytest.fixture(scope="module")
def check() -> Any:
    sys.path.insert(0, str(VM_DIR))
    try:
        sys.modules.pop("attestation_check", None)
        return importlib.import_module("attestation_check")
    finally:
        sys.path.remove(str(VM_DIR))


def _register(key: Any, verifier: Any) -> Any:
    server = Fido2Server(RP, attestation="direct", verify_attestation=verifier)
    options, state = server.register_begin(USER, user_verification="discouraged")
    return server.register_complete(state, key.create(dict(options)))


def _aaguid(key: Any) -> bytes:
    return bytes(key.ctap2.get_info().aaguid)


def test_the_keys_own_root_verifies(check: Any) -> None:
    key = make_softkey(origin="https://example.com")
    verifier = check.chain_verifier(key.authenticator.attestation.root_pem(), _aaguid(key))
    auth_data = _register(key, verifier)
    assert auth_data.credential_data is not None
    assert any("x5c chain" in item for item in verifier.checked)
    assert any(_aaguid(key).hex() in item for item in verifier.checked)


def test_another_keys_root_is_rejected(check: Any) -> None:
    key = make_softkey(origin="https://example.com")
    other = make_softkey(origin="https://example.com")  # same profile, its own chain
    verifier = check.chain_verifier(other.authenticator.attestation.root_pem(), _aaguid(key))
    with pytest.raises(check.AttestationRejected, match="issuer"):
        _register(key, verifier)


def test_a_root_with_the_same_name_but_another_key_is_rejected(check: Any) -> None:
    """The issuer name alone proves nothing: the chain's signature must verify."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding
    from fido2.attestation import UntrustedAttestation

    key = make_softkey(origin="https://example.com")
    real = key.authenticator.attestation.root_certificate()
    impostor_key = ec.generate_private_key(ec.SECP256R1())
    impostor = (
        x509.CertificateBuilder()
        .subject_name(real.subject)
        .issuer_name(real.subject)
        .public_key(impostor_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(real.not_valid_before_utc)
        .not_valid_after(real.not_valid_after_utc)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(impostor_key, hashes.SHA256())
    )
    verifier = check.chain_verifier(impostor.public_bytes(Encoding.PEM), _aaguid(key))
    with pytest.raises(UntrustedAttestation):
        _register(key, verifier)


def test_an_aaguid_other_than_getinfos_is_rejected(check: Any) -> None:
    key = make_softkey(origin="https://example.com")
    root = key.authenticator.attestation.root_pem()
    with pytest.raises(check.AttestationRejected, match="AAGUID"):
        _register(key, check.chain_verifier(root, bytes(16)))


def test_self_attestation_is_not_a_chain(check: Any) -> None:
    key = make_softkey(origin="https://example.com")
    root = key.authenticator.attestation.root_pem()
    aaguid = _aaguid(key)
    key.authenticator.attestation.mode = "self"
    with pytest.raises(check.AttestationRejected, match="self attestation"):
        _register(key, check.chain_verifier(root, aaguid))


def test_a_leaf_certificate_is_not_a_trusted_root(check: Any) -> None:
    from cryptography.hazmat.primitives.serialization import Encoding

    key = make_softkey(origin="https://example.com")
    leaf = key.authenticator.attestation.batch().certificate
    from cryptography import x509

    pem = x509.load_der_x509_certificate(leaf).public_bytes(Encoding.PEM)
    with pytest.raises(check.AttestationRejected, match="self-signed"):
        check.chain_verifier(pem, _aaguid(key))
