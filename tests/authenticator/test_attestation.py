"""Attestation: batch chain (default), self, none on request, enterprise; judged by
python-fido2's attestation verifiers and Fido2Server and by py_webauthn, with the exported
root CA as the only trust anchor."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fido2.attestation import AttestationVerifier, UntrustedAttestation
from fido2.client import DefaultClientDataCollector, Fido2Client
from fido2.ctap import CtapError
from fido2.ctap2 import AttestationResponse, Ctap2
from fido2.ctap2.base import args
from fido2.ctap2.config import Config
from fido2.server import Fido2Server
from fido2.webauthn import (
    AttestationConveyancePreference,
    PublicKeyCredentialRpEntity,
    PublicKeyCredentialUserEntity,
    UserVerificationRequirement,
)
from webauthn import verify_registration_response
from webauthn.helpers.exceptions import InvalidRegistrationResponse

from softkey.authenticator import Authenticator
from softkey.authenticator import attestation as att_mod
from softkey.authenticator.store import Store
from softkey.transports.inprocess import VirtualCtapDevice

ORIGIN = "https://example.com"
RP = PublicKeyCredentialRpEntity(id="example.com", name="Example")
ES256 = [{"type": "public-key", "alg": -7}]
ERR = CtapError.ERR


class TrustAnchor(AttestationVerifier):
    """python-fido2's verifier with one trusted root: what an RP test would configure."""

    def __init__(self, root_der: bytes) -> None:
        super().__init__()
        self.root_der = root_der

    def ca_lookup(self, attestation_result, auth_data) -> bytes:  # type: ignore[override]
        return self.root_der


def client(auth: Authenticator) -> Fido2Client:
    return Fido2Client(VirtualCtapDevice(auth), DefaultClientDataCollector(ORIGIN))


def register(auth: Authenticator, server: Fido2Server, user: bytes = b"user-1", **kw):
    options, state = server.register_begin(
        PublicKeyCredentialUserEntity(id=user, name="alice", display_name="Alice"),
        user_verification=UserVerificationRequirement.DISCOURAGED,
        **kw,
    )
    return options, state, client(auth).make_credential(options.public_key)


def root_der(auth: Authenticator) -> bytes:
    return auth.attestation.root_der()


def raw_make(ctap: Ctap2, *, prefs=None, enterprise=None, params=ES256) -> AttestationResponse:
    """makeCredential with members python-fido2 2.x cannot send (0x0B)."""
    request = args(
        os.urandom(32),
        {"id": "example.com"},
        {"id": b"u"},
        params,
        None,
        None,
        None,
        None,
        None,
        enterprise,
        prefs,
    )
    return AttestationResponse.from_dict(ctap.send_cbor(Ctap2.CMD.MAKE_CREDENTIAL, request))


# -- batch attestation (the default) -----------------------------------------------------------


@pytest.mark.parametrize("profile", ["ctap2.0", "ctap2.1-pre", "ctap2.1", "solokey"])
def test_batch_attestation_verifies_against_exported_root(profile: str) -> None:
    auth = Authenticator(profile)
    server = Fido2Server(RP, attestation="direct", verify_attestation=TrustAnchor(root_der(auth)))
    options, state, registration = register(auth, server)
    att_obj = registration.response.attestation_object
    assert att_obj.fmt == "packed"
    assert att_obj.att_stmt["x5c"] == [auth.attestation.batch().certificate]
    server.register_complete(state, registration)  # raises unless the chain verifies

    # py_webauthn, with the exported PEM as the packed trust anchor.
    verified = verify_registration_response(
        credential=dict(registration),
        expected_challenge=options.public_key.challenge,
        expected_rp_id="example.com",
        expected_origin=ORIGIN,
        pem_root_certs_bytes_by_fmt={"packed": [auth.attestation.root_pem()]},
    )
    assert verified.fmt == "packed"
    assert verified.aaguid.replace("-", "") == auth.profile.aaguid.hex()


def test_eddsa_and_es384_credentials_get_es256_batch_statements() -> None:
    auth = Authenticator()
    ctap = Ctap2(VirtualCtapDevice(auth))
    verifier = TrustAnchor(root_der(auth))
    for alg in (-8, -35):
        cdh = os.urandom(32)
        att = ctap.make_credential(
            cdh, {"id": "example.com"}, {"id": b"u"}, [{"type": "public-key", "alg": alg}]
        )
        assert att.auth_data.credential_data.public_key[3] == alg
        assert att.att_stmt["alg"] == -7  # the batch key is P-256 whatever the credential
        verifier.verify_attestation(_attestation_object(att), cdh)


def _attestation_object(att: AttestationResponse):
    from fido2.webauthn import AttestationObject

    return AttestationObject.create(att.fmt, att.auth_data, att.att_stmt)


def test_another_installations_root_is_not_trusted() -> None:
    auth, stranger = Authenticator(), Authenticator()
    assert root_der(auth) != root_der(stranger)
    server = Fido2Server(
        RP, attestation="direct", verify_attestation=TrustAnchor(root_der(stranger))
    )
    options, state, registration = register(auth, server)
    with pytest.raises(UntrustedAttestation):
        server.register_complete(state, registration)
    with pytest.raises(InvalidRegistrationResponse):
        verify_registration_response(
            credential=dict(registration),
            expected_challenge=options.public_key.challenge,
            expected_rp_id="example.com",
            expected_origin=ORIGIN,
            pem_root_certs_bytes_by_fmt={"packed": [stranger.attestation.root_pem()]},
        )


def test_certificates_meet_the_packed_requirements() -> None:
    auth = Authenticator("nitrokey-3")
    cert = x509.load_der_x509_certificate(auth.attestation.batch().certificate)
    root = auth.attestation.root_certificate()
    assert cert.version == x509.Version.v3
    subject = {a.oid: a.value for a in cert.subject}
    assert subject[NameOID.ORGANIZATIONAL_UNIT_NAME] == "Authenticator Attestation"
    assert subject[NameOID.COUNTRY_NAME] and subject[NameOID.ORGANIZATION_NAME]
    assert subject[NameOID.COMMON_NAME]
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.value.ca is False
    ext = cert.extensions.get_extension_for_oid(att_mod.OID_AAGUID)
    assert ext.critical is False
    assert ext.value.value == b"\x04\x10" + auth.profile.aaguid  # OCTET STRING(AAGUID)
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    # The root: self-signed CA that signed the leaf.
    assert root.subject == root.issuer == cert.issuer
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert root.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    cert.verify_directly_issued_by(root)
    root.verify_directly_issued_by(root)
    assert auth.attestation.root_pem().startswith(b"-----BEGIN CERTIFICATE-----")


def test_chain_survives_reopen_and_reset_but_not_a_new_state(tmp_path: Path) -> None:
    path = tmp_path / "key.db"
    with Authenticator("ctap2.1", path) as auth:
        root, batch = root_der(auth), auth.attestation.batch().certificate
        master = auth.store.get_meta("master_key")
        assert Ctap2(VirtualCtapDevice(auth)).reset() is None
        assert auth.store.get_meta("master_key") != master  # reset did happen
        assert root_der(auth) == root
        assert auth.attestation.batch().certificate == batch
    with Authenticator(state=path) as auth:
        assert root_der(auth) == root
        assert auth.attestation.batch().certificate == batch
    with Authenticator("ctap2.1", tmp_path / "other.db") as auth:
        assert root_der(auth) != root


def test_reset_keeps_exactly_what_a_real_key_keeps() -> None:
    assert set(att_mod.KEEP_ON_RESET) <= set(Store.KEEP_ON_RESET)
    # The enterprise switch is not kept (CTAP 2.1: reset disables enterprise attestation).
    assert att_mod.META_EP_ENABLED not in Store.KEEP_ON_RESET


def test_a_profile_with_another_aaguid_gets_a_matching_leaf_from_the_same_root() -> None:
    auth = Authenticator("ctap2.1")
    first = x509.load_der_x509_certificate(auth.attestation.batch().certificate)
    other = replace(auth.profile, aaguid=bytes(range(16)))
    second_auth = att_mod.Attestation(auth.store, other)
    second = x509.load_der_x509_certificate(second_auth.batch().certificate)
    assert att_mod._cert_aaguid(first) == auth.profile.aaguid
    assert att_mod._cert_aaguid(second) == bytes(range(16))
    assert first.issuer == second.issuer


# -- self attestation, "none" on request -------------------------------------------------------


def test_self_attestation_mode_verifies_everywhere() -> None:
    auth = Authenticator(attestation="self")
    server = Fido2Server(RP, attestation="direct")
    for alg in (-7, -8):
        server.allowed_algorithms = [a for a in Fido2Server(RP).allowed_algorithms if a.alg == alg]
        options, state, registration = register(auth, server, user=bytes([alg & 0xFF]))
        stmt = registration.response.attestation_object.att_stmt
        assert "x5c" not in stmt and stmt["alg"] == alg
        server.register_complete(state, registration)
        verified = verify_registration_response(
            credential=dict(registration),
            expected_challenge=options.public_key.challenge,
            expected_rp_id="example.com",
            expected_origin=ORIGIN,
        )
        assert verified.fmt == "packed"


def test_unknown_attestation_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="attestation mode"):
        Authenticator(attestation="basic")


@pytest.mark.parametrize(
    ("prefs", "fmt"),
    [
        (["none"], "none"),
        (["packed", "none"], "packed"),
        (["tpm", "none", "packed"], "none"),
        (["tpm", "apple"], "packed"),  # nothing we support: our default
        ([], "packed"),
        ([1, "none"], "none"),  # entries that are not text are skipped
    ],
)
def test_attestation_formats_preference(prefs: list, fmt: str) -> None:
    ctap = Ctap2(VirtualCtapDevice(Authenticator("ctap2.2")))  # a CTAP 2.2 member (§6.1)
    att = raw_make(ctap, prefs=prefs)
    assert att.fmt == fmt
    if fmt == "none":
        assert att.att_stmt == {}
        assert att.auth_data.credential_data is not None
    else:
        assert "x5c" in att.att_stmt


def test_attestation_formats_preference_must_be_a_list() -> None:
    ctap = Ctap2(VirtualCtapDevice(Authenticator("ctap2.2")))
    with pytest.raises(CtapError) as exc:
        raw_make(ctap, prefs="none")
    assert exc.value.code == ERR.CBOR_UNEXPECTED_TYPE


@pytest.mark.parametrize("profile", ["ctap2.0", "ctap2.1"])
def test_keys_before_2_2_ignore_attestation_formats_preference(profile: str) -> None:
    ctap = Ctap2(VirtualCtapDevice(Authenticator(profile)))
    assert raw_make(ctap, prefs=["none"]).fmt == "packed"


# -- enterprise attestation --------------------------------------------------------------------


def ep_key(**kw) -> tuple[Authenticator, Ctap2]:
    auth = Authenticator("ctap2.1", **kw)
    return auth, Ctap2(VirtualCtapDevice(auth))


def test_ep_option_tracks_capability_and_enablement() -> None:
    auth, ctap = ep_key()
    assert ctap.get_info().options["ep"] is False
    Config(ctap).enable_enterprise_attestation()  # python-fido2's authenticatorConfig
    assert ctap.get_info().options["ep"] is True
    # Reset disables it again.
    assert ctap.reset() is None
    assert ctap.get_info().options["ep"] is False
    for profile in ("ctap2.0", "ctap2.1-pre", "nitrokey-3"):
        assert "ep" not in Ctap2(VirtualCtapDevice(Authenticator(profile))).get_info().options


@pytest.mark.parametrize("profile", ["ctap2.0", "ctap2.1"])
def test_enterprise_request_while_not_available_is_invalid_parameter(profile: str) -> None:
    ctap = Ctap2(VirtualCtapDevice(Authenticator(profile)))
    with pytest.raises(CtapError) as exc:
        raw_make(ctap, enterprise=2)
    assert exc.value.code == ERR.INVALID_PARAMETER


def test_enterprise_value_other_than_1_or_2_is_invalid_option() -> None:
    auth, ctap = ep_key()
    auth.attestation.enable_enterprise()
    for value in (0, 3):
        with pytest.raises(CtapError) as exc:
            raw_make(ctap, enterprise=value)
        assert exc.value.code == ERR.INVALID_OPTION


def test_platform_managed_enterprise_attestation() -> None:
    auth, ctap = ep_key()
    Config(ctap).enable_enterprise_attestation()
    cdh = os.urandom(32)
    att = ctap.make_credential(
        cdh, {"id": "example.com"}, {"id": b"u"}, ES256, enterprise_attestation=2
    )
    assert att.ep_att is True
    cert = x509.load_der_x509_certificate(att.att_stmt["x5c"][0])
    serial = cert.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)
    assert serial  # uniquely identifying, unlike the batch certificate
    assert att.att_stmt["x5c"][0] != auth.attestation.batch().certificate
    TrustAnchor(root_der(auth)).verify_attestation(_attestation_object(att), cdh)
    # Without the request: the ordinary batch attestation.
    plain = ctap.make_credential(os.urandom(32), {"id": "example.com"}, {"id": b"v"}, ES256)
    assert plain.ep_att is None
    assert plain.att_stmt["x5c"][0] == auth.attestation.batch().certificate


def test_vendor_facilitated_only_for_preconfigured_rp_ids() -> None:
    auth, ctap = ep_key()
    auth.attestation.enable_enterprise()
    auth.attestation.set_enterprise_rp_ids(["corp.example"])
    att = raw_make(ctap, enterprise=1)  # rp example.com is not on the list
    assert att.ep_att is None
    assert att.att_stmt["x5c"][0] == auth.attestation.batch().certificate
    att = ctap.make_credential(
        os.urandom(32), {"id": "corp.example"}, {"id": b"u"}, ES256, enterprise_attestation=1
    )
    assert att.ep_att is True
    assert att.att_stmt["x5c"][0] == auth.attestation.enterprise().certificate


def test_enterprise_through_fido2_client_and_server() -> None:
    auth, ctap = ep_key()
    Config(ctap).enable_enterprise_attestation()
    c = client(auth)
    c._enterprise_rpid_list = ["example.com"]  # platform-managed policy for this RP
    server = Fido2Server(
        RP,
        attestation=AttestationConveyancePreference.ENTERPRISE,
        verify_attestation=TrustAnchor(root_der(auth)),
    )
    options, state = server.register_begin(
        PublicKeyCredentialUserEntity(id=b"emp", name="emp", display_name="Employee"),
        user_verification=UserVerificationRequirement.DISCOURAGED,
    )
    registration = c.make_credential(options.public_key)
    x5c = registration.response.attestation_object.att_stmt["x5c"]
    assert x5c == [auth.attestation.enterprise().certificate]
    server.register_complete(state, registration)
