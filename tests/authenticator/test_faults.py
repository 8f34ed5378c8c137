"""Injected faults (authenticator/faults.py) as a relying party's negative tests meet them.

Each test drives the key through python-fido2's ``Fido2Client`` (the ``softkey`` fixture) and
lets a real RP verify the answer: python-fido2's ``Fido2Server`` or py_webauthn. A fault must
make exactly that RP check fail, be used up by requests that reach the user only (never by
the client's silent up=false pre-flight), and leave the next request normal and the stored
state (credentials, counters) untouched.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from fido2 import cbor
from fido2.attestation import InvalidData, PackedAttestation
from fido2.client import ClientError
from fido2.cose import CoseKey
from fido2.ctap import CtapError
from fido2.server import Fido2Server
from fido2.webauthn import AttestationConveyancePreference as Fido2Attestation
from fido2.webauthn import (
    PublicKeyCredentialRpEntity,
    PublicKeyCredentialUserEntity,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)
from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers.exceptions import (
    InvalidAuthenticationResponse,
    InvalidRegistrationResponse,
)
from webauthn.helpers.structs import (
    AttestationConveyancePreference,
    AttestationFormat,
    AuthenticatorSelectionCriteria,
    PublicKeyCredentialDescriptor,
)
from webauthn.helpers.structs import UserVerificationRequirement as WebauthnUv

from softkey.authenticator import Authenticator
from softkey.authenticator.events import b64url
from softkey.authenticator.faults import KINDS, FaultError, NoAnswerError
from softkey.tools.admin import dispatch
from softkey.tools.trace import install_trace

RP_ID, ORIGIN = "example.com", "https://example.com"
RP = PublicKeyCredentialRpEntity(id=RP_ID, name="Example")
ALICE = PublicKeyCredentialUserEntity(id=b"alice-id", name="alice", display_name="Alice")
DISCOURAGED = UserVerificationRequirement.DISCOURAGED


# -- two relying parties ---------------------------------------------------------------------


def _fido2_register(softkey, server: Fido2Server, resident: bool = False):
    options, state = server.register_begin(
        ALICE,
        resident_key_requirement=(
            ResidentKeyRequirement.REQUIRED if resident else ResidentKeyRequirement.DISCOURAGED
        ),
        user_verification=DISCOURAGED,
    )
    return server.register_complete(state, softkey.create(options)).credential_data


def _fido2_login(softkey, server: Fido2Server, credential) -> None:
    request, state = server.authenticate_begin([credential], user_verification=DISCOURAGED)
    server.authenticate_complete(state, [credential], softkey.get(request))


class WebauthnRp:
    """py_webauthn as an RP that stores and checks the signature counter."""

    def __init__(self, softkey, uv: bool = False) -> None:
        self.softkey = softkey
        self.uv = uv
        self.registration = None
        self.sign_count = 0

    def register(self, attestation=AttestationConveyancePreference.NONE, roots=None):
        uv = WebauthnUv.REQUIRED if self.uv else WebauthnUv.DISCOURAGED
        options = generate_registration_options(
            rp_id=RP_ID,
            rp_name="Example",
            user_name="alice",
            attestation=attestation,
            authenticator_selection=AuthenticatorSelectionCriteria(user_verification=uv),
        )
        self.registration = verify_registration_response(
            credential=self.softkey.create(options_to_json(options)),
            expected_challenge=options.challenge,
            expected_rp_id=RP_ID,
            expected_origin=ORIGIN,
            require_user_verification=self.uv,
            pem_root_certs_bytes_by_fmt=roots,
        )
        self.sign_count = self.registration.sign_count
        return self.registration

    def login(self):
        assert self.registration is not None
        options = generate_authentication_options(
            rp_id=RP_ID,
            allow_credentials=[PublicKeyCredentialDescriptor(id=self.registration.credential_id)],
            user_verification=WebauthnUv.REQUIRED if self.uv else WebauthnUv.DISCOURAGED,
        )
        verified = verify_authentication_response(
            credential=self.softkey.get(options_to_json(options)),
            expected_challenge=options.challenge,
            expected_rp_id=RP_ID,
            expected_origin=ORIGIN,
            credential_public_key=self.registration.credential_public_key,
            credential_current_sign_count=self.sign_count,
            require_user_verification=self.uv,
        )
        self.sign_count = verified.new_sign_count
        return verified


# -- the faults, one RP check each --------------------------------------------------------------


def test_a_bad_signature_fails_the_rp_once_then_the_key_is_normal_again(softkey) -> None:
    server = Fido2Server(RP)
    credential = _fido2_register(softkey, server)
    softkey.inject_fault("bad_signature")

    with pytest.raises(ValueError, match="[Ss]ignature"):
        _fido2_login(softkey, server, credential)
    assert softkey.faults == []  # used up by that one login
    _fido2_login(softkey, server, credential)  # the next request is normal again


def test_a_bad_signature_fails_py_webauthn_too_and_count_two_lasts_two_logins(softkey) -> None:
    rp = WebauthnRp(softkey)
    rp.register()
    softkey.inject_fault("bad_signature", count=2)
    for remaining in (1, 0):
        with pytest.raises(InvalidAuthenticationResponse, match="signature"):
            rp.login()
        assert [f["left"] for f in softkey.faults] == ([remaining] if remaining else [])
    rp.login()


def test_the_silent_preflight_does_not_consume_a_fault(softkey) -> None:
    server = Fido2Server(RP)
    credential = _fido2_register(softkey, server)
    softkey.inject_fault("bad_signature")
    # A silent up=false getAssertion, as python-fido2 sends before every login with an
    # allowList: answered normally (its signature verifies), and the fault stays.
    ctap = softkey.ctap2
    assertion = ctap.get_assertion(
        RP_ID,
        b"\x01" * 32,
        [{"type": "public-key", "id": credential.credential_id}],
        options={"up": False},
    )
    assert not assertion.auth_data.is_user_present()
    assertion.verify(b"\x01" * 32, credential.public_key)
    assert [f["left"] for f in softkey.faults] == [1]
    # The login through the client sends such a pre-flight too, then the real request: only
    # the real one is broken (the RP fails), and only it used the fault up.
    with pytest.raises(ValueError):
        _fido2_login(softkey, server, credential)
    assert softkey.faults == []
    ups = [e["up"] for e in softkey.events if e["type"] == "credentialAsserted"]
    assert ups == [False, False, True]


def test_a_counter_regression_is_caught_by_an_rp_checking_sign_counts(softkey) -> None:
    rp = WebauthnRp(softkey)
    registration = rp.register()
    first = rp.login()
    assert first.new_sign_count > 0
    credential_id = registration.credential_id
    real_before = softkey.authenticator.counter(credential_id)

    softkey.inject_fault("counter_regression")
    with pytest.raises(InvalidAuthenticationResponse, match="[Cc]ount"):
        rp.login()
    # The key's own counter went on counting: the fault only changed what the RP was told.
    assert softkey.authenticator.counter(credential_id) > real_before
    later = rp.login()
    assert later.new_sign_count > first.new_sign_count


def test_a_fixed_counter_value(softkey) -> None:
    rp = WebauthnRp(softkey)
    rp.register()
    softkey.inject_fault("counter", value=1000, on="getAssertion")
    assert rp.login().new_sign_count == 1000
    with pytest.raises(InvalidAuthenticationResponse):
        rp.login()  # the real counter (a handful) is now "behind" what the RP stored


@pytest.mark.softkey(pin="1234")
def test_uv_forced_off_fails_an_rp_that_requires_user_verification(softkey) -> None:
    rp = WebauthnRp(softkey, uv=True)
    rp.register()
    assert rp.login().user_verified
    softkey.inject_fault("uv_flag", value="off")
    with pytest.raises(InvalidAuthenticationResponse, match="[Vv]erif"):
        rp.login()
    assert rp.login().user_verified


def test_uv_forced_on_and_up_forced_off(softkey) -> None:
    rp = WebauthnRp(softkey)
    rp.register()
    softkey.inject_fault("uv_flag", value=True)
    assert rp.login().user_verified  # a key claiming UV it never did: the RP cannot tell
    softkey.inject_fault("up_flag", value="off")
    with pytest.raises(InvalidAuthenticationResponse, match="present"):
        rp.login()


def test_a_wrong_rp_id_hash_is_rejected_by_both_rps(softkey) -> None:
    server = Fido2Server(RP)
    credential = _fido2_register(softkey, server)
    softkey.inject_fault("rp_id_hash")
    with pytest.raises(ValueError, match="[Hh]ash"):
        _fido2_login(softkey, server, credential)

    rp = WebauthnRp(softkey)
    rp.register()
    softkey.inject_fault("rp_id_hash", value="evil.example")
    with pytest.raises(InvalidAuthenticationResponse, match="RP ID hash"):
        rp.login()
    rp.login()
    softkey.inject_fault("rp_id_hash", on="makeCredential")
    with pytest.raises(InvalidRegistrationResponse, match="RP ID hash"):
        rp.register()


def test_only_the_injected_defect_is_in_the_answer(softkey) -> None:
    """A changed authenticatorData is signed again: the signature over it verifies."""
    server = Fido2Server(RP)
    credential = _fido2_register(softkey, server)
    softkey.inject_fault("rp_id_hash", value="evil.example")
    assertion = softkey.ctap2.get_assertion(
        RP_ID, b"\x02" * 32, [{"type": "public-key", "id": credential.credential_id}]
    )
    assert assertion.auth_data.rp_id_hash == hashlib.sha256(b"evil.example").digest()
    assertion.verify(b"\x02" * 32, credential.public_key)  # raises if it did not verify


def test_a_different_aaguid_is_in_the_attested_credential_data(softkey) -> None:
    rp = WebauthnRp(softkey)
    genuine = rp.register(attestation=AttestationConveyancePreference.DIRECT)
    assert uuid.UUID(genuine.aaguid).bytes == softkey.authenticator.profile.aaguid
    other = uuid.uuid4()
    softkey.inject_fault("aaguid", value=str(other))
    # The batch certificate names the genuine AAGUID: a checking RP sees the mismatch
    # (python-fido2's packed verifier compares them; py_webauthn does not).
    softkey.inject_fault("aaguid", value=str(other))
    server = Fido2Server(RP, attestation=Fido2Attestation.DIRECT)
    options, _state = server.register_begin(ALICE, user_verification=DISCOURAGED)
    response = softkey.client.make_credential(options.public_key).response
    attestation = response.attestation_object
    assert attestation.auth_data.credential_data.aaguid == other.bytes
    with pytest.raises(InvalidData, match="AAGUID"):
        PackedAttestation().verify(
            attestation.att_stmt, attestation.auth_data, response.client_data.hash
        )
    # Without attestation nothing contradicts it: the RP reads the injected AAGUID.
    softkey.inject_fault("aaguid", value=str(other))
    assert uuid.UUID(rp.register().aaguid) == other
    assert uuid.UUID(rp.register().aaguid).bytes == softkey.authenticator.profile.aaguid


def test_a_self_signed_attestation_certificate_fails_an_rp_that_trusts_the_root(softkey) -> None:
    rp = WebauthnRp(softkey)
    roots = {AttestationFormat.PACKED: [softkey.authenticator.attestation.root_pem()]}
    direct = AttestationConveyancePreference.DIRECT
    rp.register(attestation=direct, roots=roots)
    softkey.inject_fault("attestation_cert")
    assert softkey.faults[0]["on"] == "any"
    with pytest.raises(InvalidRegistrationResponse):
        rp.register(attestation=direct, roots=roots)
    rp.register(attestation=direct, roots=roots)
    # An RP that trusts any certificate sees a valid, self-consistent statement.
    softkey.inject_fault("attestation_cert")
    rp.register(attestation=direct)


def test_an_error_code_surfaces_to_the_client(softkey) -> None:
    server = Fido2Server(RP)
    credential = _fido2_register(softkey, server)
    softkey.inject_fault("error", value="OPERATION_DENIED")
    request, _state = server.authenticate_begin([credential], user_verification=DISCOURAGED)
    with pytest.raises(ClientError) as raised:
        softkey.get(request)
    assert raised.value.cause.code == CtapError.ERR.OPERATION_DENIED
    assert "injected fault" in str(raised.value)
    _fido2_login(softkey, server, credential)

    softkey.inject_fault("error", value=0x28, on="makeCredential")
    with pytest.raises(ClientError) as raised:
        _fido2_register(softkey, server)
    assert raised.value.cause.code == CtapError.ERR.KEY_STORE_FULL
    with pytest.raises(CtapError) as direct:
        softkey.inject_fault("error", value="0xf3")
        softkey.ctap2.get_assertion(
            RP_ID, b"\x00" * 32, [{"type": "public-key", "id": credential.credential_id}]
        )
    assert int(direct.value.code) == 0xF3


def test_an_error_or_no_answer_stores_nothing(softkey) -> None:
    server = Fido2Server(RP)
    softkey.inject_fault("error", value="OTHER")
    with pytest.raises(ClientError):
        _fido2_register(softkey, server, resident=True)
    softkey.inject_fault("no_answer")
    with pytest.raises(NoAnswerError):
        _fido2_register(softkey, server, resident=True)
    assert softkey.credentials() == []
    assert not [e for e in softkey.events if e["type"] == "credentialAdded"]
    _fido2_register(softkey, server, resident=True)
    assert len(softkey.credentials()) == 1


def test_no_answer_in_process_is_a_timeout_and_the_next_request_is_answered(softkey) -> None:
    server = Fido2Server(RP)
    credential = _fido2_register(softkey, server)
    softkey.inject_fault("no_answer", on="getAssertion")
    with pytest.raises(TimeoutError):
        _fido2_login(softkey, server, credential)
    _fido2_login(softkey, server, credential)


def test_a_delay_moves_the_fake_clock_instead_of_sleeping(softkey) -> None:
    server = Fido2Server(RP)
    credential = _fido2_register(softkey, server)
    softkey.inject_fault("delay", value=12.5)
    before = softkey.clock.monotonic()
    _fido2_login(softkey, server, credential)  # answered, only later
    assert softkey.clock.monotonic() - before == pytest.approx(12.5)


def test_a_fault_waits_while_the_request_fails_on_its_own(softkey) -> None:
    server = Fido2Server(RP)
    credential = _fido2_register(softkey, server)
    softkey.inject_fault("bad_signature", on="getAssertion")
    with softkey.denying(), pytest.raises(ClientError):
        _fido2_login(softkey, server, credential)
    assert [f["left"] for f in softkey.faults] == [1]  # the user never answered
    with pytest.raises(ValueError):
        _fido2_login(softkey, server, credential)


def test_on_spares_the_other_command(softkey) -> None:
    server = Fido2Server(RP)
    softkey.inject_fault("bad_signature", on="getAssertion")
    credential = _fido2_register(softkey, server)  # registration untouched
    assert softkey.faults[0]["left"] == 1
    with pytest.raises(ValueError):
        _fido2_login(softkey, server, credential)


def test_faults_never_touch_stored_credentials_or_counters(softkey) -> None:
    server = Fido2Server(RP)
    credential = _fido2_register(softkey, server, resident=True)
    stored = softkey.credentials()
    counter = softkey.authenticator.counter(credential.credential_id)
    faults = [("counter", 7), ("counter_regression", 3), ("rp_id_hash", None), ("uv_flag", "on")]
    for kind, value in [*faults, ("bad_signature", None), ("error", "OTHER")]:
        softkey.inject_fault(kind, value=value)
        try:
            softkey.ctap2.get_assertion(
                RP_ID, b"\x03" * 32, [{"type": "public-key", "id": credential.credential_id}]
            )
        except CtapError:
            assert kind == "error"
    assert softkey.faults == []
    assert softkey.credentials() == stored
    # Five assertions were made (the error stopped the sixth before the device): the real
    # counter counted exactly those, whatever the answers claimed.
    assert softkey.authenticator.counter(credential.credential_id) == counter + 5


def test_the_operator_fill_never_meets_a_fault() -> None:
    auth = Authenticator("ctap2.1")
    auth.faults.add("error", 3, "OTHER")
    result = dispatch(auth, "fill", {"count": 2, "rp": "fill.example"})
    assert result["ok"], result
    assert result["result"]["created"] == 2
    assert [f["left"] for f in auth.faults.records()] == [3]


def test_the_trace_marks_an_overridden_answer(softkey) -> None:
    lines: list[str] = []
    install_trace(softkey.authenticator, lines.append)
    server = Fido2Server(RP)
    credential = _fido2_register(softkey, server)
    softkey.inject_fault("bad_signature")
    with pytest.raises(ValueError):
        _fido2_login(softkey, server, credential)
    softkey.inject_fault("error", value=0x27)
    with pytest.raises(ClientError):
        _fido2_login(softkey, server, credential)
    softkey.inject_fault("no_answer")
    with pytest.raises(TimeoutError):
        _fido2_login(softkey, server, credential)
    marked = [line for line in lines if "[fault:" in line]
    assert len(marked) == 3, lines
    assert marked[0].startswith("getAssertion") and "CTAP2_OK" in marked[0]
    assert marked[0].endswith("[fault: bad_signature]")
    assert "CTAP2_ERR_OPERATION_DENIED" in marked[1]
    assert marked[1].endswith("[fault: error=OPERATION_DENIED(0x27)]")
    assert marked[2].endswith("-> <no answer> [fault: no_answer]")
    # The silent pre-flights are traced unmarked.
    assert any("options={up=false}" in line and "[fault" not in line for line in lines)


def test_fixed_kinds_and_values(softkey) -> None:
    assert set(KINDS) == {
        "bad_signature",
        "up_flag",
        "uv_flag",
        "counter",
        "counter_regression",
        "rp_id_hash",
        "aaguid",
        "attestation_cert",
        "error",
        "delay",
        "no_answer",
    }
    added = softkey.inject_fault("error", count=3, value="CTAP2_ERR_PIN_INVALID")
    assert added == {
        "id": 1,
        "kind": "error",
        "value": 0x31,
        "count": 3,
        "left": 3,
        "on": "any",
        "label": "error=PIN_INVALID(0x31)",
    }
    assert softkey.inject_fault("delay", value="1.5s")["value"] == 1.5
    assert softkey.inject_fault("counter_regression")["value"] == 1
    assert softkey.inject_fault("uv_flag", value="OFF")["label"] == "uv_flag=off"
    assert softkey.clear_faults("delay") == 1
    assert softkey.clear_faults() == 3
    assert softkey.faults == []


@pytest.mark.parametrize(
    ("kind", "kwargs", "message"),
    [
        ("nonsense", {}, "unknown fault"),
        ("bad_signature", {"value": "x"}, "takes no value"),
        ("uv_flag", {}, "needs a value"),
        ("uv_flag", {"value": "maybe"}, "on or off"),
        ("counter", {"value": -1}, "whole number"),
        ("counter", {"value": True}, "whole number"),
        ("error", {"value": 0}, "CTAP status"),
        ("error", {"value": "NO_SUCH_ERROR"}, "CTAP status"),
        ("delay", {"value": 0}, "more than 0"),
        ("delay", {"value": 301}, "at most"),
        ("aaguid", {"value": "not-a-uuid"}, "UUID"),
        ("rp_id_hash", {"value": "evil example"}, "spaces"),
        ("aaguid", {"on": "getAssertion"}, "only applies to makeCredential"),
        ("counter_regression", {"on": "makeCredential"}, "only applies to getAssertion"),
        ("bad_signature", {"on": "getInfo"}, "on must be"),
        ("bad_signature", {"count": 0}, "count"),
    ],
)
def test_bad_faults_are_refused_with_a_reason(softkey, kind, kwargs, message) -> None:
    with pytest.raises(FaultError, match=message):
        softkey.inject_fault(kind, **kwargs)
    assert softkey.faults == []


def test_faults_are_runtime_state_only(tmp_path) -> None:
    state = tmp_path / "k.sqlite3"
    with Authenticator("ctap2.1", state) as auth:
        auth.faults.add("no_answer", 5)
        auth.power_cycle()  # a replug keeps the operator's faults
        assert len(auth.faults.records()) == 1
    with Authenticator(None, state) as again:
        assert again.faults.records() == []
        assert not again.faults.active


def test_a_bad_signature_on_registration_breaks_the_attestation_statement(softkey) -> None:
    rp = WebauthnRp(softkey)
    softkey.inject_fault("bad_signature", on="makeCredential")
    with pytest.raises(InvalidRegistrationResponse, match="signature"):
        rp.register(attestation=AttestationConveyancePreference.DIRECT)
    rp.register(attestation=AttestationConveyancePreference.DIRECT)


def test_an_imported_credential_is_signed_again_with_its_own_key(softkey) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    softkey.add_credential(b"imported-1", RP_ID, key)
    softkey.inject_fault("counter", value=77)
    assertion = softkey.ctap2.get_assertion(
        RP_ID, b"\x04" * 32, [{"type": "public-key", "id": b"imported-1"}]
    )
    assert assertion.auth_data.counter == 77
    key.public_key().verify(
        assertion.signature, bytes(assertion.auth_data) + b"\x04" * 32, ec.ECDSA(hashes.SHA256())
    )


def _auth_data(response: dict) -> bytes:
    data = response["response"]["authenticatorData"]
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


def test_the_event_stream_tells_the_whole_story_in_order(softkey) -> None:
    """Issue 17's acceptance in one RP session: an imported credential with a chosen ID logs
    in, a bogus signature fails the RP once, a counter regression is caught, BE/BS appear as
    set, the credential is removed; the fixture's event list shows each step in order and never
    a secret."""
    from fido2.webauthn import AttestedCredentialData

    softkey.clear_events()
    private = ec.generate_private_key(ec.SECP256R1())
    chosen = b"rp-fixture-credential-0001"
    softkey.add_credential(chosen, RP_ID, private, sign_count=41)
    softkey.set_credential_properties(chosen, backup_eligible=True, backup_state=True)
    server = Fido2Server(RP)
    stored = softkey.get_credentials()[0]
    credential = AttestedCredentialData.create(
        bytes(16), chosen, CoseKey.parse(cbor.decode(stored.public_key))
    )

    request, state = server.authenticate_begin([credential], user_verification=DISCOURAGED)
    response = softkey.get(request)
    server.authenticate_complete(state, [credential], response)
    auth_data = _auth_data(response)
    assert auth_data[32] & 0x08 and auth_data[32] & 0x10  # BE and BS, exactly as set
    counted = int.from_bytes(auth_data[33:37], "big")
    assert counted > 41  # continues from the imported sign count (the pre-flight counts too)

    softkey.inject_fault("bad_signature")
    with pytest.raises(ValueError, match="[Ss]ignature"):
        _fido2_login(softkey, server, credential)
    last_signed = softkey.get_credentials()[0].sign_count
    softkey.inject_fault("counter_regression")
    request, state = server.authenticate_begin([credential], user_verification=DISCOURAGED)
    regressed = int.from_bytes(_auth_data(softkey.get(request))[33:37], "big")
    # Not above what the key signed before: an RP that checks counters sees a clone.
    assert regressed <= last_signed
    softkey.remove_credential(chosen)

    events = [e for e in softkey.events if not e["type"].startswith("presence")]
    mine = [e for e in events if e["credential_id"] in (None, b64url(chosen))]
    assert [e["type"] for e in mine] == [
        "credentialAdded",
        *(["credentialAsserted"] * len([e for e in mine if e["type"] == "credentialAsserted"])),
        "credentialDeleted",
    ]
    asserted = [e for e in mine if e["type"] == "credentialAsserted" and e["up"]]
    assert len(asserted) == 3  # the login, the bogus-signature one, the regressed one
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
    text = json.dumps(softkey.events)
    secret = private.private_numbers().private_value.to_bytes(32, "big")
    assert secret.hex() not in text and b64url(secret) not in text
