"""The ctap2.2 profile (CTAP 2.2) judged by python-fido2 2.x: getInfo members, the persistent
read-only credential-management token (pcmr), encIdentifier, thirdPartyPayment,
hmac-secret-mc, attestationFormatsPreference and the PIN complexity policy; and that CTAP 2.1
profiles have none of it."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
from fido2.client import DefaultClientDataCollector, Fido2Client, UserInteraction
from fido2.ctap2 import Ctap2, Info
from fido2.ctap2.base import AttestationResponse, args
from fido2.ctap2.config import Config
from fido2.ctap2.credman import CredentialManagement
from fido2.ctap2.extensions import HmacSecretExtension, ThirdPartyPaymentExtension
from fido2.payment import PaymentClientDataCollector
from fido2.webauthn import (
    AuthenticatorAttachment,
    AuthenticatorSelectionCriteria,
    PublicKeyCredentialCreationOptions,
    PublicKeyCredentialParameters,
    PublicKeyCredentialRequestOptions,
    PublicKeyCredentialRpEntity,
    PublicKeyCredentialType,
    PublicKeyCredentialUserEntity,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from softkey.authenticator import Authenticator, FakeClock
from softkey.authenticator.cbor import decode
from softkey.authenticator.ctap import Cmd, InfoKey
from softkey.transports.inprocess import VirtualCtapDevice

sys.path.insert(0, str(Path(__file__).parent))  # pinkit: shared helpers (importlib mode)
from pinkit import (  # noqa: E402
    ERR,
    PERM,
    RP_ID,
    Key,
    assertion,
    cred_id,
    make,
    new_key,
    raw,
    status_of,
    with_pin,
)

CM = CredentialManagement.RESULT
PCMR = PERM.PERSISTENT_CREDENTIAL_MGMT
ORIGIN = "https://example.com"
PROFILES_2_1 = ["ctap2.1", "nitrokey-3", "unlimited-rk"]
NEW_MEMBERS = range(0x16, 0x20)  # every getInfo key after vendorPrototypeConfigCommands


def raw_info(key: Key) -> dict[int, Any]:
    """getInfo as the device encodes it (python-fido2's Info fills in defaults)."""
    response = raw(key.auth, Cmd.GET_INFO)
    assert response[0] == 0
    return decode(response[1:])


def rp_hash(rp_id: str) -> bytes:
    return hashlib.sha256(rp_id.encode()).digest()


def mc_token(key: Key, rp_id: str = RP_ID, version: int | None = None) -> bytes:
    return key.client_pin(version).get_pin_token("1234", PERM.MAKE_CREDENTIAL, rp_id)


def resident(key: Key, rp_id: str, user: bytes, **kw: Any) -> bytes:
    return cred_id(make(key, mc_token(key, rp_id), rk=True, rp=rp_id, user=user, **kw))


def pcmr_manager(key: Key, version: int | None = None) -> tuple[CredentialManagement, bytes]:
    cp = key.client_pin(version)
    token = cp.get_pin_token("1234", PCMR)
    return CredentialManagement(key.ctap, cp.protocol, token), token


# -- getInfo -----------------------------------------------------------------------------------


def test_info_keys_are_python_fido2s() -> None:
    theirs = {f.name: i + 1 for i, f in enumerate(fields(Info))}
    ours = {
        "attestation_formats": InfoKey.ATTESTATION_FORMATS,
        "uv_count_since_pin": InfoKey.UV_COUNT_SINCE_LAST_PIN_ENTRY,
        "long_touch_for_reset": InfoKey.LONG_TOUCH_FOR_RESET,
        "enc_identifier": InfoKey.ENC_IDENTIFIER,
        "transports_for_reset": InfoKey.TRANSPORTS_FOR_RESET,
        "pin_complexity_policy": InfoKey.PIN_COMPLEXITY_POLICY,
        "pin_complexity_policy_url": InfoKey.PIN_COMPLEXITY_POLICY_URL,
        "max_pin_length": InfoKey.MAX_PIN_LENGTH,
    }
    for name, key in ours.items():
        assert theirs[name] == key, name


def test_get_info_of_a_2_2_key() -> None:
    key = new_key("ctap2.2")
    info = key.ctap.info
    assert info.versions == ["U2F_V2", "FIDO_2_0", "FIDO_2_1_PRE", "FIDO_2_1", "FIDO_2_2"]
    assert info.options["perCredMgmtRO"] is True
    assert CredentialManagement.is_readonly_supported(info)
    assert "thirdPartyPayment" in info.extensions and "hmac-secret-mc" in info.extensions
    assert info.attestation_formats == ["packed", "none"]
    assert info.transports_for_reset == ["usb"]
    assert info.pin_complexity_policy is False  # a policy exists, switched off
    assert info.max_pin_length == 63
    assert info.enc_identifier is None  # no persistent token before the first PIN
    members = raw_info(key)
    # Present with their values, not python-fido2's defaults for absent members.
    assert members[InfoKey.LONG_TOUCH_FOR_RESET] is False
    assert members[InfoKey.MAX_PIN_LENGTH] == 63
    # No built-in UV, no policy URL; no 2.3 members (encCredStoreState, configCommands).
    absent = {0x17, 0x19, 0x1C, 0x1E, 0x1F}
    assert not absent & set(members)
    key.client_pin().set_pin("1234")
    assert len(key.ctap.info.enc_identifier or b"") == 32  # IV + one AES block


@pytest.mark.parametrize("profile", PROFILES_2_1)
def test_2_1_keys_have_no_2_2_members(profile: str) -> None:
    key = with_pin(profile)
    members = raw_info(key)
    assert not set(NEW_MEMBERS) & set(members)
    assert "FIDO_2_2" not in members[InfoKey.VERSIONS]
    assert "perCredMgmtRO" not in members[InfoKey.OPTIONS]
    assert not {"thirdPartyPayment", "hmac-secret-mc"} & set(members[InfoKey.EXTENSIONS])
    assert not CredentialManagement.is_readonly_supported(key.ctap.info)
    # The permission does not exist there: python-fido2 asks, the key refuses.
    assert status_of(key.client_pin().get_pin_token, "1234", PCMR) == ERR.UNAUTHORIZED_PERMISSION


# -- the persistent token (pcmr) ---------------------------------------------------------------


@pytest.mark.parametrize("version", [1, 2])
def test_pcmr_token_reads_after_a_power_cycle_and_cannot_change(version: int) -> None:
    key = with_pin("ctap2.2")
    first = resident(key, RP_ID, b"alice", extensions={"thirdPartyPayment": True})
    resident(key, "other.example", b"bob")
    cm, _ = pcmr_manager(key, version)
    cp = key.client_pin(version)
    per_boot = CredentialManagement(
        key.ctap, cp.protocol, cp.get_pin_token("1234", PERM.CREDENTIAL_MGMT)
    )

    key.power_cycle()  # what `softkey replug` does to the device

    # The per-boot token died with the power cycle; the persistent one did not.
    assert status_of(per_boot.get_metadata) == ERR.PIN_AUTH_INVALID
    assert cm.get_metadata()[CM.EXISTING_CRED_COUNT] == 2
    rps = cm.enumerate_rps()
    assert {rp[CM.RP]["id"] for rp in rps} == {RP_ID, "other.example"}
    creds = cm.enumerate_creds(rp_hash(RP_ID))
    assert [c[CM.CREDENTIAL_ID]["id"] for c in creds] == [first]
    assert creds[0][CM.THIRD_PARTY_PAYMENT] is True
    assert cm.enumerate_creds(rp_hash("other.example"))[0][CM.THIRD_PARTY_PAYMENT] is False

    descriptor = {"id": first, "type": "public-key"}
    assert status_of(cm.delete_cred, descriptor) == ERR.PIN_AUTH_INVALID
    user = {"id": b"alice", "name": "mallory"}
    assert status_of(cm.update_user_info, descriptor, user) == ERR.PIN_AUTH_INVALID
    assert key.auth.store.get_resident(first).user_name == "alice"  # type: ignore[union-attr]
    assert key.auth.store.resident_count() == 2


def test_pcmr_token_survives_reopening_the_state(tmp_path: Path) -> None:
    state = tmp_path / "key.sqlite3"
    clock = FakeClock()
    key = Key(Authenticator("ctap2.2", state, clock=clock), clock)
    key.client_pin().set_pin("1234")
    cred = resident(key, RP_ID, b"alice")
    _, token = pcmr_manager(key)
    key.auth.close()

    again = Key(Authenticator(None, state, clock=clock), clock)  # a new process, same state
    cm = CredentialManagement(again.ctap, again.client_pin().protocol, token)
    assert [c[CM.CREDENTIAL_ID]["id"] for c in cm.enumerate_creds(rp_hash(RP_ID))] == [cred]
    again.auth.close()


def test_export_and_import_keep_the_persistent_token_and_the_payment_flag(tmp_path: Path) -> None:
    from softkey.tools.state_export import export_state, import_state

    clock = FakeClock()
    key = Key(Authenticator("ctap2.2", tmp_path / "a.sqlite3", clock=clock), clock)
    key.client_pin().set_pin("1234")
    cred = resident(key, RP_ID, b"alice", extensions={"thirdPartyPayment": True})
    _, token = pcmr_manager(key)
    key.auth.close()
    export_state(tmp_path / "a.sqlite3", tmp_path / "export.json")
    import_state(tmp_path / "export.json", tmp_path / "b.sqlite3")

    copy = Key(Authenticator(None, tmp_path / "b.sqlite3", clock=clock), clock)
    cm = CredentialManagement(copy.ctap, copy.client_pin().protocol, token)
    (entry,) = cm.enumerate_creds(rp_hash(RP_ID))
    assert entry[CM.CREDENTIAL_ID]["id"] == cred
    assert entry[CM.THIRD_PARTY_PAYMENT] is True
    copy.auth.close()


def test_pcmr_token_ends_with_a_pin_change_and_with_reset() -> None:
    key = with_pin("ctap2.2")
    resident(key, RP_ID, b"alice")
    cm, token = pcmr_manager(key)
    again, same = pcmr_manager(key)
    assert same == token  # one persistent token, not one per request
    assert cm.get_metadata()[CM.EXISTING_CRED_COUNT] == 1

    key.client_pin().change_pin("1234", "5678")
    assert status_of(cm.get_metadata) == ERR.PIN_AUTH_INVALID
    cp = key.client_pin()
    fresh = cp.get_pin_token("5678", PCMR)
    assert fresh != token
    assert (
        CredentialManagement(key.ctap, cp.protocol, fresh).get_metadata()[CM.EXISTING_CRED_COUNT]
        == 1
    )

    key.power_cycle()  # reopens the reset window
    key.ctap.reset()
    key.client_pin().set_pin("1234")
    after_reset = CredentialManagement(key.ctap, cp.protocol, fresh)
    assert status_of(after_reset.get_metadata) == ERR.PIN_AUTH_INVALID


def test_pcmr_is_requested_alone() -> None:
    key = with_pin("ctap2.2")
    status = status_of(key.client_pin().get_pin_token, "1234", PCMR | PERM.CREDENTIAL_MGMT)
    assert status == ERR.INVALID_PARAMETER
    status = status_of(key.client_pin().get_pin_token, "1234", PCMR | PERM.GET_ASSERTION, RP_ID)
    assert status == ERR.INVALID_PARAMETER
    # An rpId sent along is ignored: the token still sees every RP.
    resident(key, "other.example", b"bob")
    cp = key.client_pin()
    token = cp.get_pin_token("1234", PCMR, RP_ID)
    rps = CredentialManagement(key.ctap, cp.protocol, token).enumerate_rps()
    assert [rp[CM.RP]["id"] for rp in rps] == ["other.example"]


def test_pcmr_token_is_no_per_boot_token() -> None:
    key = with_pin("ctap2.2")
    _, token = pcmr_manager(key)
    # It authorises nothing but reading credential management: not makeCredential...
    assert status_of(make, key, token, rk=True) == ERR.PIN_AUTH_INVALID
    # ...and asking for it leaves the per-boot token alone.
    cp = key.client_pin()
    cm_token = cp.get_pin_token("1234", PERM.CREDENTIAL_MGMT)
    pcmr_manager(key)
    assert CredentialManagement(key.ctap, cp.protocol, cm_token).get_metadata()
    # A per-boot token with cm may still delete.
    cred = resident(key, RP_ID, b"alice")
    cm = CredentialManagement(key.ctap, cp.protocol, cp.get_pin_token("1234", PERM.CREDENTIAL_MGMT))
    cm.delete_cred({"id": cred, "type": "public-key"})
    assert key.auth.store.resident_count() == 0


def test_enc_identifier_decrypts_with_the_persistent_token() -> None:
    key = with_pin("ctap2.2")
    _, token = pcmr_manager(key)
    first, second = key.ctap.get_info(), key.ctap.get_info()
    assert first.enc_identifier != second.enc_identifier  # a fresh IV each time
    identifier = first.get_identifier(token)
    assert identifier is not None and len(identifier) == 16
    assert second.get_identifier(token) == identifier
    key.power_cycle()
    assert key.ctap.get_info().get_identifier(token) == identifier  # stable across boots
    per_boot = key.client_pin().get_pin_token("1234", PERM.CREDENTIAL_MGMT)
    assert key.ctap.get_info().get_identifier(per_boot) != identifier

    key.ctap.reset()  # a reset key is a new device
    key.client_pin().set_pin("1234")
    _, token = pcmr_manager(key)
    assert key.ctap.get_info().get_identifier(token) != identifier


# -- thirdPartyPayment -------------------------------------------------------------------------


class PinEntry(UserInteraction):
    def request_pin(self, permissions: Any, rd_id: Any) -> str:
        return "1234"


PAYMENT = {
    "isPayment": True,
    "rpId": RP_ID,
    "topOrigin": "https://merchant.example",
    "payeeName": "Merchant",
    "total": {"currency": "EUR", "value": "1.00"},
    "instrument": {"displayName": "Card", "icon": "https://example.com/card.png"},
}


def payment_client(key: Key) -> Fido2Client:
    return Fido2Client(
        VirtualCtapDevice(key.auth),
        PaymentClientDataCollector(ORIGIN),
        user_interaction=PinEntry(),
        extensions=[ThirdPartyPaymentExtension()],
    )


def payment_registration(key: Key, user: bytes, payment: bool) -> bytes:
    options = PublicKeyCredentialCreationOptions(
        rp=PublicKeyCredentialRpEntity(id=RP_ID, name="Bank"),
        user=PublicKeyCredentialUserEntity(id=user, name=user.decode()),
        challenge=os.urandom(32),
        pub_key_cred_params=[
            PublicKeyCredentialParameters(type=PublicKeyCredentialType.PUBLIC_KEY, alg=-7)
        ],
        authenticator_selection=AuthenticatorSelectionCriteria(
            authenticator_attachment=AuthenticatorAttachment.CROSS_PLATFORM,
            resident_key=ResidentKeyRequirement.REQUIRED,
            user_verification=UserVerificationRequirement.REQUIRED,
        ),
        extensions={"payment": {"isPayment": True}} if payment else None,
    )
    registration = payment_client(key).make_credential(options)
    auth_data = registration.response.attestation_object.auth_data
    assert not (auth_data.extensions or {}).get("thirdPartyPayment")  # no output at creation
    return bytes(registration.raw_id)


def payment_assertion(key: Key, credential: bytes) -> dict[str, Any]:
    options = PublicKeyCredentialRequestOptions(
        challenge=os.urandom(32),
        rp_id=RP_ID,
        allow_credentials=[{"type": "public-key", "id": credential}],  # type: ignore[list-item]
        user_verification=UserVerificationRequirement.REQUIRED,
        extensions={"payment": PAYMENT},
    )
    response = payment_client(key).get_assertion(options).get_response(0)
    client_data = response.response.client_data
    assert client_data.type == "payment.get"  # the client did its SPC part
    return dict(response.response.authenticator_data.extensions or {})


def test_third_party_payment_through_fido2_client() -> None:
    key = with_pin("ctap2.2")
    paying = payment_registration(key, b"alice", payment=True)
    plain = payment_registration(key, b"bob", payment=False)
    assert payment_assertion(key, paying) == {"thirdPartyPayment": True}
    assert payment_assertion(key, plain) == {"thirdPartyPayment": False}
    cp = key.client_pin()
    cm = CredentialManagement(key.ctap, cp.protocol, cp.get_pin_token("1234", PERM.CREDENTIAL_MGMT))
    listed = {
        c[CM.CREDENTIAL_ID]["id"]: c[CM.THIRD_PARTY_PAYMENT]
        for c in cm.enumerate_creds(rp_hash(RP_ID))
    }
    assert listed == {paying: True, plain: False}


def test_third_party_payment_on_non_discoverable_credentials_and_get_next_assertion() -> None:
    key = new_key("ctap2.2")
    paying = cred_id(make(key, extensions={"thirdPartyPayment": True}))
    plain = cred_id(make(key, extensions={"thirdPartyPayment": False}))
    ext = {"thirdPartyPayment": True}
    assert assertion(key, allow=[paying], extensions=ext).auth_data.extensions == ext
    got = assertion(key, allow=[plain], extensions=ext).auth_data.extensions
    assert got == {"thirdPartyPayment": False}
    assert not assertion(key, allow=[paying]).auth_data.extensions  # only when asked
    for user in (b"a", b"b"):
        make(key, rk=True, user=user, extensions={"thirdPartyPayment": user == b"b"})
    ctap = key.ctap
    first = ctap.get_assertion(RP_ID, os.urandom(32), extensions=ext)
    second = ctap.get_next_assertion()
    outputs = {
        a.user["id"]: a.auth_data.extensions["thirdPartyPayment"]  # type: ignore[index]
        for a in (first, second)
    }
    assert outputs == {b"a": False, b"b": True}
    status = status_of(make, key, extensions={"thirdPartyPayment": "yes"})
    assert status == ERR.CBOR_UNEXPECTED_TYPE


def test_2_1_keys_ignore_third_party_payment() -> None:
    key = new_key("ctap2.1")
    cred = cred_id(make(key, extensions={"thirdPartyPayment": True}))
    got = assertion(key, allow=[cred], extensions={"thirdPartyPayment": True})
    assert not got.auth_data.extensions


# -- hmac-secret-mc, attestationFormatsPreference ----------------------------------------------


@pytest.mark.parametrize(("profile", "at_registration"), [("ctap2.2", True), ("ctap2.1", False)])
def test_prf_at_registration_needs_2_2(profile: str, at_registration: bool) -> None:
    key = new_key(profile)
    fido2_client = Fido2Client(
        VirtualCtapDevice(key.auth),
        DefaultClientDataCollector(ORIGIN),
        user_interaction=PinEntry(),
        extensions=[HmacSecretExtension(allow_hmac_secret=True)],
    )
    options = PublicKeyCredentialCreationOptions(
        rp=PublicKeyCredentialRpEntity(id=RP_ID, name="Example"),
        user=PublicKeyCredentialUserEntity(id=b"alice", name="alice"),
        challenge=os.urandom(32),
        pub_key_cred_params=[
            PublicKeyCredentialParameters(type=PublicKeyCredentialType.PUBLIC_KEY, alg=-7)
        ],
        authenticator_selection=AuthenticatorSelectionCriteria(
            user_verification=UserVerificationRequirement.DISCOURAGED
        ),
        extensions={"prf": {"eval": {"first": os.urandom(32)}}},
    )
    results = fido2_client.make_credential(options).client_extension_results
    assert results["prf"]["enabled"] is True
    assert ("results" in results["prf"]) is at_registration
    auth_data = fido2_client.make_credential(options).response.attestation_object.auth_data
    assert ("hmac-secret-mc" in (auth_data.extensions or {})) is at_registration


def raw_make(key: Key, prefs: list[Any]) -> AttestationResponse:
    """makeCredential with attestationFormatsPreference (0x0B): python-fido2 cannot send it."""
    request = args(
        os.urandom(32), {"id": RP_ID}, {"id": b"u"}, [{"type": "public-key", "alg": -7}],
        None, None, None, None, None, None, prefs,
    )  # fmt: skip
    return AttestationResponse.from_dict(key.ctap.send_cbor(Ctap2.CMD.MAKE_CREDENTIAL, request))


def test_attestation_formats_preference_picks_the_first_supported() -> None:
    key = new_key("ctap2.2")
    for fmt in key.ctap.info.attestation_formats:  # each format getInfo lists is produced
        assert raw_make(key, [fmt]).fmt == fmt
    assert raw_make(key, ["tpm", "none", "packed"]).fmt == "none"
    assert raw_make(key, ["android-key"]).fmt == "packed"  # nothing supported: the default
    assert raw_make(new_key("ctap2.1"), ["none"]).fmt == "packed"  # 2.1: an unknown member


# -- PIN complexity, reset ---------------------------------------------------------------------


def test_pin_complexity_policy_switched_on_by_set_min_pin_length() -> None:
    key = with_pin("ctap2.2")
    cp = key.client_pin()
    cp.change_pin("1234", "1111")  # trivial PINs are fine while the policy is off
    cp.change_pin("1111", "2580")
    token = cp.get_pin_token("2580", PERM.AUTHENTICATOR_CFG)
    Config(key.ctap, cp.protocol, token).set_min_pin_length(pin_complexity_policy=True)
    assert key.ctap.info.pin_complexity_policy is True
    for trivial in ("0000", "1234", "98765", "abcd"):
        assert status_of(cp.change_pin, "2580", trivial) == ERR.PIN_POLICY_VIOLATION
    cp.change_pin("2580", "1357")
    # It only gets stricter: false changes nothing; reset switches it off.
    token = cp.get_pin_token("1357", PERM.AUTHENTICATOR_CFG)
    Config(key.ctap, cp.protocol, token).set_min_pin_length(min_pin_length=4)
    assert key.ctap.info.pin_complexity_policy is True
    key.power_cycle()
    key.ctap.reset()
    assert key.ctap.info.pin_complexity_policy is False
    key.client_pin().set_pin("1111")


def test_2_1_keys_offer_no_pin_complexity_policy() -> None:
    key = with_pin("ctap2.1")
    cp = key.client_pin()
    config = Config(key.ctap, cp.protocol, cp.get_pin_token("1234", PERM.AUTHENTICATOR_CFG))
    with pytest.raises(ValueError, match="complexity"):  # python-fido2 checks getInfo first
        config.set_min_pin_length(pin_complexity_policy=True)


def test_reset_takes_an_ordinary_touch_on_usb() -> None:
    key = with_pin("ctap2.2")
    info = key.ctap.info
    assert info.long_touch_for_reset is False and "usb" in info.transports_for_reset
    key.ctap.reset()  # within the window after power-up, one touch (auto presence)
    assert key.ctap.info.options["clientPin"] is False


def test_a_python_fido2_platform_drives_a_2_2_key_end_to_end() -> None:
    """The issue's acceptance in one flow: python-fido2's Fido2Client registers an ML-DSA-65
    discoverable payment credential on a ctap2.2 key (its Fido2Server verifies the packed
    attestation and the assertion), then after a power cycle a persistent pcmr token lists it,
    payment flag and ML-DSA public key included, and cannot delete it."""
    from fido2.server import Fido2Server

    key = with_pin("ctap2.2")
    assert {"type": "public-key", "alg": -49} in (key.ctap.info.algorithms or [])
    server = Fido2Server(PublicKeyCredentialRpEntity(id=RP_ID, name="Bank"))
    server.allowed_algorithms = [
        PublicKeyCredentialParameters(type=PublicKeyCredentialType.PUBLIC_KEY, alg=-49)
    ]
    options, state = server.register_begin(
        PublicKeyCredentialUserEntity(id=b"carol", name="carol"),
        resident_key_requirement=ResidentKeyRequirement.REQUIRED,
        user_verification=UserVerificationRequirement.REQUIRED,
        authenticator_attachment=AuthenticatorAttachment.CROSS_PLATFORM,  # payment needs it
    )
    creation = dataclasses.replace(options.public_key, extensions={"payment": {"isPayment": True}})
    registration = payment_client(key).make_credential(creation)
    credential = server.register_complete(state, registration).credential_data
    assert credential is not None and credential.public_key[3] == -49

    request, state = server.authenticate_begin(
        [credential], user_verification=UserVerificationRequirement.REQUIRED
    )
    response = payment_client(key).get_assertion(request.public_key).get_response(0)
    server.authenticate_complete(state, [credential], response)

    key.power_cycle()
    cm, _ = pcmr_manager(key)
    [listed] = cm.enumerate_creds(rp_hash(RP_ID))
    assert listed[CM.CREDENTIAL_ID]["id"] == credential.credential_id
    assert listed[CM.THIRD_PARTY_PAYMENT] is True
    assert listed[CM.PUBLIC_KEY][3] == -49
    descriptor = {"id": credential.credential_id, "type": "public-key"}
    assert status_of(cm.delete_cred, descriptor) == ERR.PIN_AUTH_INVALID
