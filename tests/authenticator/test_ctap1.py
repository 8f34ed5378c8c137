"""CTAP1/U2F over CTAPHID_MSG, judged by python-fido2's Ctap1, Fido2Client and py_webauthn.

Key handles are credential IDs: a U2F registration must work over CTAP2 getAssertion with
rpId = appid, a CTAP2 ES256 credential over U2F AUTHENTICATE, and both share counters.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from fido2.client import DefaultClientDataCollector, Fido2Client
from fido2.cose import ES256
from fido2.ctap import CtapError
from fido2.ctap1 import ApduError, Ctap1, RegistrationData, SignatureData
from fido2.ctap2 import Ctap2
from fido2.hid import CAPABILITY
from fido2.server import Fido2Server
from fido2.utils import websafe_encode
from fido2.webauthn import (
    PublicKeyCredentialRpEntity,
    PublicKeyCredentialUserEntity,
    UserVerificationRequirement,
)
from webauthn import verify_authentication_response, verify_registration_response

from softkey.authenticator import Authenticator, FakeClock, ScriptedPresence, Verdict
from softkey.authenticator import ctap1 as u2f
from softkey.transports.inprocess import VirtualCtapDevice

APPID = "https://example.com/u2f/appid.json"
APP = hashlib.sha256(APPID.encode()).digest()
SW_OK = 0x9000


def key(auth: Authenticator) -> Ctap1:
    return Ctap1(VirtualCtapDevice(auth))


def raw(auth: Authenticator, apdu: bytes) -> tuple[bytes, int]:
    response = auth.handle_u2f(apdu)
    return response[:-2], struct.unpack(">H", response[-2:])[0]


def ext_apdu(ins: int, p1: int, data: bytes, cla: int = 0) -> bytes:
    """Extended encoding with Le, as python-fido2 and browsers send."""
    return struct.pack(">BBBBBH", cla, ins, p1, 0, 0, len(data)) + data + b"\x00\x00"


def auth_data(challenge: bytes, app: bytes, handle: bytes) -> bytes:
    return challenge + app + bytes([len(handle)]) + handle


# -- VERSION, REGISTER, AUTHENTICATE -----------------------------------------------------------


def test_version_is_u2f_v2() -> None:
    assert key(Authenticator("ctap2.0")).get_version() == "U2F_V2"


@pytest.mark.parametrize("profile", ["ctap2.0", "ctap2.1-pre", "ctap2.1"])
def test_register_then_authenticate_verify(profile: str) -> None:
    auth = Authenticator(profile)
    ctap1 = key(auth)
    challenge = os.urandom(32)
    reg = ctap1.register(challenge, APP)
    reg.verify(APP, challenge)  # python-fido2 checks the fido-u2f attestation signature
    assert len(reg.key_handle) <= 255
    # The attestation certificate is the batch certificate under the exported root.
    cert = x509.load_der_x509_certificate(reg.certificate)
    assert reg.certificate == auth.attestation.batch().certificate
    root = auth.attestation.root_certificate()
    assert cert.issuer == root.subject
    root_key = root.public_key()
    assert isinstance(root_key, ec.EllipticCurvePublicKey)
    root_key.verify(
        cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm)
    )

    previous = 0
    for _ in range(3):
        challenge = os.urandom(32)
        sig = ctap1.authenticate(challenge, APP, reg.key_handle)
        sig.verify(APP, challenge, reg.public_key)
        assert sig.user_presence == 1
        assert sig.counter > previous
        previous = sig.counter


def test_register_in_self_attestation_mode_uses_the_credential_key() -> None:
    auth = Authenticator("ctap2.1", attestation="self")
    challenge = os.urandom(32)
    reg = key(auth).register(challenge, APP)
    reg.verify(APP, challenge)
    cert = x509.load_der_x509_certificate(reg.certificate)
    # Self attestation: the certificate holds the credential's own public key.
    assert ES256.from_cryptography_key(cert.public_key()) == ES256.from_ctap1(reg.public_key)
    assert reg.certificate != auth.attestation.batch().certificate


def test_short_apdu_encoding_is_accepted() -> None:
    auth = Authenticator()
    challenge = os.urandom(32)
    for le in (b"", b"\x00"):
        data, sw = raw(auth, bytes([0, 1, 0, 0, 64]) + challenge + APP + le)
        assert sw == SW_OK
        reg = RegistrationData(data)
        reg.verify(APP, challenge)
        body = auth_data(challenge, APP, reg.key_handle)
        data, sw = raw(auth, bytes([0, 2, 3, 0, len(body)]) + body + le)
        assert sw == SW_OK
        SignatureData(data).verify(APP, challenge, reg.public_key)
    # VERSION as case 1 (header only) and case 2S (Le only).
    assert raw(auth, b"\x00\x03\x00\x00") == (b"U2F_V2", SW_OK)
    assert raw(auth, b"\x00\x03\x00\x00\x00") == (b"U2F_V2", SW_OK)


def test_check_only_tells_ours_from_foreign() -> None:
    auth = Authenticator()
    ctap1 = key(auth)
    handle = ctap1.register(os.urandom(32), APP).key_handle
    with pytest.raises(ApduError) as exc:
        ctap1.authenticate(os.urandom(32), APP, handle, check_only=True)
    assert exc.value.code == 0x6985  # ours: "test of user presence required"
    foreign = key(Authenticator()).register(os.urandom(32), APP).key_handle
    with pytest.raises(ApduError) as exc:
        ctap1.authenticate(os.urandom(32), APP, foreign, check_only=True)
    assert exc.value.code == 0x6A80
    # Check-only never asks the person and never advances the counter.
    assert auth.counter(handle) == 0


def test_dont_enforce_user_presence_signs_without_asking() -> None:
    presence = ScriptedPresence(default=Verdict.DENIED)
    auth = Authenticator(presence=presence)
    ctap1 = key(auth)
    presence.verdicts = [Verdict.APPROVED]
    reg = ctap1.register(os.urandom(32), APP)
    challenge = os.urandom(32)
    data, sw = raw(auth, ext_apdu(2, 0x08, auth_data(challenge, APP, reg.key_handle)))
    assert sw == SW_OK
    sig = SignatureData(data)
    sig.verify(APP, challenge, reg.public_key)
    assert sig.user_presence == 0
    assert len(presence.requests) == 1  # only the registration asked


@pytest.mark.parametrize("verdict", [Verdict.DENIED, Verdict.TIMEOUT, Verdict.CANCELLED])
def test_no_presence_is_conditions_not_satisfied_then_polling_succeeds(verdict: Verdict) -> None:
    presence = ScriptedPresence([verdict, Verdict.APPROVED, verdict, Verdict.APPROVED])
    auth = Authenticator(presence=presence)
    ctap1 = key(auth)
    challenge = os.urandom(32)
    with pytest.raises(ApduError) as exc:
        ctap1.register(challenge, APP)
    assert exc.value.code == 0x6985
    reg = ctap1.register(challenge, APP)  # the client polls; this time the user touched
    with pytest.raises(ApduError) as exc:
        ctap1.authenticate(challenge, APP, reg.key_handle)
    assert exc.value.code == 0x6985
    assert auth.counter(reg.key_handle) == 0  # nothing was signed
    ctap1.authenticate(challenge, APP, reg.key_handle).verify(APP, challenge, reg.public_key)
    assert [r.purpose for r in presence.requests] == [
        "register (U2F)",
        "register (U2F)",
        "authenticate (U2F)",
        "authenticate (U2F)",
    ]


def test_foreign_tampered_other_app_and_pre_reset_handles_are_wrong_data() -> None:
    clock = FakeClock()
    auth = Authenticator(clock=clock)
    ctap1 = key(auth)
    handle = ctap1.register(os.urandom(32), APP).key_handle
    foreign = key(Authenticator()).register(os.urandom(32), APP).key_handle
    tampered = bytes([handle[0]]) + bytes([handle[1] ^ 1]) + handle[2:]
    other_app = hashlib.sha256(b"https://evil.example").digest()
    cases = [
        (foreign, APP),
        (tampered, APP),
        (handle, other_app),
        (os.urandom(64), APP),
        (b"", APP),
    ]
    for kh, app in cases:
        with pytest.raises(ApduError) as exc:
            ctap1.authenticate(os.urandom(32), app, kh)
        assert exc.value.code == 0x6A80
    # After authenticatorReset (new master key) the handle is not recognised either.
    assert Ctap2(VirtualCtapDevice(auth)).reset() is None
    with pytest.raises(ApduError) as exc:
        ctap1.authenticate(os.urandom(32), APP, handle)
    assert exc.value.code == 0x6A80


def test_wrong_lengths() -> None:
    auth = Authenticator()
    handle = key(auth).register(os.urandom(32), APP).key_handle
    body = auth_data(os.urandom(32), APP, handle)
    cases = [
        b"",  # no header
        b"\x00\x01\x00",  # truncated header
        ext_apdu(1, 0, os.urandom(63)),  # REGISTER needs exactly 64 bytes
        ext_apdu(1, 0, os.urandom(65)),
        ext_apdu(2, 3, body[:-1]),  # key handle shorter than its length byte says
        ext_apdu(2, 3, body + b"\x00"),  # longer
        ext_apdu(2, 3, os.urandom(64)),  # no length byte at all
        ext_apdu(3, 0, b"x"),  # VERSION takes no data
        bytes([0, 1, 0, 0, 64]) + os.urandom(10),  # short Lc says 64, 10 follow
        bytes([0, 1, 0, 0, 0, 0]),  # truncated extended length
        bytes([0, 1, 0, 0, 0, 0, 64]) + os.urandom(10),  # extended Lc says 64
    ]
    for apdu in cases:
        assert raw(auth, apdu) == (b"", 0x6700), apdu.hex()


def test_unknown_instruction_and_class() -> None:
    auth = Authenticator()
    assert raw(auth, ext_apdu(0x04, 0, b"")) == (b"", 0x6D00)
    assert raw(auth, ext_apdu(0x40, 0, b"")) == (b"", 0x6D00)
    assert raw(auth, ext_apdu(0x03, 0, b"", cla=0x80)) == (b"", 0x6E00)
    with pytest.raises(ApduError) as exc:
        key(auth).send_apdu(cla=0x01, ins=0x03)
    assert exc.value.code == 0x6E00


def test_unknown_control_byte_is_wrong_data() -> None:
    auth = Authenticator()
    handle = key(auth).register(os.urandom(32), APP).key_handle
    assert raw(auth, ext_apdu(2, 0x01, auth_data(os.urandom(32), APP, handle))) == (b"", 0x6A80)


def test_internal_error_is_sw_unknown_not_a_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    auth = Authenticator()

    def broken(*args: object) -> bytes:
        raise RuntimeError("bug")

    monkeypatch.setattr(u2f, "register", broken)
    assert raw(auth, ext_apdu(1, 0, os.urandom(64))) == (b"", 0x6F00)
    assert raw(auth, ext_apdu(3, 0, b"")) == (b"U2F_V2", SW_OK)  # still alive


def test_u2f_message_clears_pending_get_next_assertion() -> None:
    auth = Authenticator()
    ctap = Ctap2(VirtualCtapDevice(auth))
    for user in (b"a", b"b"):
        ctap.make_credential(
            os.urandom(32),
            {"id": "example.com"},
            {"id": user},
            [{"type": "public-key", "alg": -7}],
            options={"rk": True},
        )
    assert ctap.get_assertion("example.com", os.urandom(32)).number_of_credentials == 2
    key(auth).get_version()
    with pytest.raises(CtapError) as exc:
        ctap.get_next_assertion()
    assert exc.value.code == CtapError.ERR.NOT_ALLOWED


# -- one master key, one credential format, shared counters ----------------------------------


def test_u2f_registration_works_over_ctap2_with_appid() -> None:
    """WebAuthn's appid extension: the platform sends rpId = appid; same key handle."""
    auth = Authenticator()
    ctap1 = key(auth)
    reg = ctap1.register(os.urandom(32), APP)
    challenge = os.urandom(32)
    ctap1.authenticate(challenge, APP, reg.key_handle).verify(APP, challenge, reg.public_key)
    before = auth.counter(reg.key_handle)

    ctap2 = Ctap2(VirtualCtapDevice(auth))
    origin = "https://example.com"
    client_data = json.dumps(
        {"type": "webauthn.get", "challenge": websafe_encode(challenge), "origin": origin}
    ).encode()
    assertion = ctap2.get_assertion(
        APPID,
        hashlib.sha256(client_data).digest(),
        [{"type": "public-key", "id": reg.key_handle}],
    )
    assert assertion.auth_data.rp_id_hash == APP
    assert assertion.auth_data.counter == before + 1  # the counter is shared
    # An independent RP library verifies it, with the appid as the RP ID being hashed.
    cose_key = ES256.from_ctap1(reg.public_key)
    verified = verify_authentication_response(
        credential={
            "id": websafe_encode(reg.key_handle),
            "rawId": websafe_encode(reg.key_handle),
            "type": "public-key",
            "response": {
                "authenticatorData": websafe_encode(bytes(assertion.auth_data)),
                "clientDataJSON": websafe_encode(client_data),
                "signature": websafe_encode(assertion.signature),
            },
        },
        expected_challenge=challenge,
        expected_rp_id=APPID,
        expected_origin=origin,
        credential_public_key=_cose_bytes(cose_key),
        credential_current_sign_count=before,
    )
    assert verified.new_sign_count == before + 1
    # And U2F keeps counting from there.
    sig = ctap1.authenticate(challenge, APP, reg.key_handle)
    assert sig.counter == before + 2


def _cose_bytes(cose_key: dict) -> bytes:
    from fido2 import cbor

    return cbor.encode(dict(cose_key))


def test_ctap2_es256_credential_works_over_u2f_authenticate() -> None:
    auth = Authenticator()
    ctap2 = Ctap2(VirtualCtapDevice(auth))
    att = ctap2.make_credential(
        os.urandom(32), {"id": "example.com"}, {"id": b"u"}, [{"type": "public-key", "alg": -7}]
    )
    cred = att.auth_data.credential_data
    app = hashlib.sha256(b"example.com").digest()
    challenge = os.urandom(32)
    sig = key(auth).authenticate(challenge, app, cred.credential_id)
    # Verify with the COSE key the CTAP2 registration returned.
    ES256(cred.public_key).verify(app + sig[:5] + challenge, sig.signature)
    assert sig.counter == 1
    assert (
        ctap2.get_assertion(
            "example.com", os.urandom(32), [{"type": "public-key", "id": cred.credential_id}]
        ).auth_data.counter
        == 2
    )


@pytest.mark.parametrize(
    ("params", "extensions"),
    [
        ([{"type": "public-key", "alg": -8}], None),  # U2F can only do P-256
        ([{"type": "public-key", "alg": -7}], {"credProtect": 3}),  # needs UV; U2F has none
    ],
)
def test_ctap2_credentials_u2f_cannot_use_are_wrong_data(params: list, extensions: dict) -> None:
    auth = Authenticator()
    att = Ctap2(VirtualCtapDevice(auth)).make_credential(
        os.urandom(32), {"id": "example.com"}, {"id": b"u"}, params, extensions=extensions
    )
    with pytest.raises(ApduError) as exc:
        key(auth).authenticate(
            os.urandom(32),
            hashlib.sha256(b"example.com").digest(),
            att.auth_data.credential_data.credential_id,
        )
    assert exc.value.code == 0x6A80


# -- a U2F-only view: python-fido2's Fido2Client falls back to CTAP1 ----------------------


class U2fOnlyDevice(VirtualCtapDevice):
    @property
    def capabilities(self) -> int:
        return CAPABILITY.WINK  # no CBOR: clients must speak CTAP1


def test_fido2_client_over_u2f_only_verifies_with_fido2_server_and_py_webauthn() -> None:
    auth = Authenticator()
    origin = "https://example.com"
    client = Fido2Client(U2fOnlyDevice(auth), DefaultClientDataCollector(origin))
    rp = PublicKeyCredentialRpEntity(id="example.com", name="Example")
    server = Fido2Server(rp, attestation="direct")
    options, state = server.register_begin(
        PublicKeyCredentialUserEntity(id=b"user-u2f", name="dora", display_name="Dora"),
        user_verification=UserVerificationRequirement.DISCOURAGED,
    )
    registration = client.make_credential(options.public_key)
    assert registration.response.attestation_object.fmt == "fido-u2f"
    auth_data = server.register_complete(state, registration)
    root_pem = auth.attestation.root_pem()
    verified_reg = verify_registration_response(
        credential=dict(registration),
        expected_challenge=options.public_key.challenge,
        expected_rp_id="example.com",
        expected_origin=origin,
        pem_root_certs_bytes_by_fmt={"fido-u2f": [root_pem]},
    )
    assert verified_reg.fmt == "fido-u2f"

    credential = auth_data.credential_data
    assert credential is not None
    request, state = server.authenticate_begin(
        [credential], user_verification=UserVerificationRequirement.DISCOURAGED
    )
    response = client.get_assertion(request.public_key).get_response(0)
    server.authenticate_complete(state, [credential], response)
    verified = verify_authentication_response(
        credential=dict(response),
        expected_challenge=request.public_key.challenge,
        expected_rp_id="example.com",
        expected_origin=origin,
        credential_public_key=verified_reg.credential_public_key,
        credential_current_sign_count=0,
    )
    assert verified.new_sign_count >= 1


def test_u2f_over_the_real_ctaphid_framing() -> None:
    """CTAPHID_MSG through transports/ctaphid.py: INIT, fragmented responses, status words."""
    from softkey.transports.inprocess import InProcessHid

    with InProcessHid(Authenticator()) as port:
        device = port.open_device()
        ctap1 = Ctap1(device)
        assert ctap1.get_version() == "U2F_V2"
        challenge = os.urandom(32)
        reg = ctap1.register(challenge, APP)  # ~700 bytes: many continuation packets
        reg.verify(APP, challenge)
        ctap1.authenticate(challenge, APP, reg.key_handle).verify(APP, challenge, reg.public_key)
        with pytest.raises(ApduError) as exc:
            ctap1.authenticate(challenge, APP, reg.key_handle, check_only=True)
        assert exc.value.code == 0x6985
        device.close()


def test_always_uv_switches_u2f_off_and_back_on() -> None:
    """U2F cannot verify the user: with alwaysUv on, every APDU is refused and getInfo stops
    announcing U2F_V2 (CTAP 2.1 alwaysUv)."""
    from fido2.ctap2.config import Config

    auth = Authenticator("ctap2.1")
    ctap2 = Ctap2(VirtualCtapDevice(auth))
    ctap1 = key(auth)
    handle = ctap1.register(os.urandom(32), APP).key_handle
    Config(ctap2).toggle_always_uv()  # no PIN yet: no token needed
    assert "U2F_V2" not in Ctap2(VirtualCtapDevice(auth)).get_info().versions
    for call in (ctap1.get_version, lambda: ctap1.authenticate(os.urandom(32), APP, handle)):
        with pytest.raises(ApduError) as exc:
            call()
        assert exc.value.code == 0x6986
    Config(ctap2).toggle_always_uv()
    assert "U2F_V2" in Ctap2(VirtualCtapDevice(auth)).get_info().versions
    assert ctap1.get_version() == "U2F_V2"
