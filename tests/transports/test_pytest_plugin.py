"""The pytest plugin as a relying-party test suite uses it.

The first tests are written exactly like an RP's own tests: only the ``softkey`` fixture and
python-fido2's ``Fido2Server`` (the RP under test), nothing from softkey's internals. The
pytester tests check the command-line/ini/marker configuration in a separate pytest run.
"""

from __future__ import annotations

import hashlib

import pytest
from fido2.client import ClientError
from fido2.ctap import CtapError
from fido2.server import Fido2Server
from fido2.webauthn import (
    PublicKeyCredentialRpEntity,
    PublicKeyCredentialUserEntity,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

pytest_plugins = ["pytester"]

# python-fido2's client insists on a PIN when UV is "preferred" and the key supports
# clientPin, so tests without a PIN say "discouraged" (see test_uv_required_with_a_pin).
DISCOURAGED = UserVerificationRequirement.DISCOURAGED
RP = PublicKeyCredentialRpEntity(id="example.com", name="Example")
ALICE = PublicKeyCredentialUserEntity(id=b"alice-id", name="alice", display_name="Alice")


def _register(softkey, server: Fido2Server, user=ALICE, resident: bool = False):
    options, state = server.register_begin(
        user,
        resident_key_requirement=(
            ResidentKeyRequirement.REQUIRED if resident else ResidentKeyRequirement.DISCOURAGED
        ),
        user_verification=DISCOURAGED,
    )
    response = softkey.client.make_credential(options.public_key)
    return server.register_complete(state, response).credential_data


def _log_in(softkey, server: Fido2Server, credential) -> None:
    """A login with ``credential`` that the RP (Fido2Server) verifies; raises if it does not."""
    request, state = server.authenticate_begin([credential], user_verification=DISCOURAGED)
    response = softkey.client.get_assertion(request.public_key).get_response(0)
    result = server.authenticate_complete(state, [credential], response)
    assert result.credential_id == credential.credential_id


# -- the sample RP test (docs/ci.md shows the same) --------------------------------------------


def test_rp_registers_and_logs_in_with_the_fixture(softkey) -> None:
    server = Fido2Server(RP)
    credential = _register(softkey, server)

    request, state = server.authenticate_begin([credential], user_verification=DISCOURAGED)
    selection = softkey.client.get_assertion(request.public_key)
    result = server.authenticate_complete(state, [credential], selection.get_response(0))
    assert result.credential_id == credential.credential_id
    assert [r.purpose for r in softkey.presence_requests] == ["makeCredential", "getAssertion"]


def test_usernameless_login_needs_a_resident_credential(softkey) -> None:
    server = Fido2Server(RP)
    credential = _register(softkey, server, resident=True)
    assert [c.user_name for c in softkey.credentials("example.com")] == ["alice"]

    request, state = server.authenticate_begin(None, user_verification=DISCOURAGED)
    response = softkey.client.get_assertion(request.public_key).get_response(0)
    server.authenticate_complete(state, [credential], response)
    assert response.response.user_handle == ALICE.id


def test_signature_counter_grows_across_logins(softkey) -> None:
    server = Fido2Server(RP)
    credential = _register(softkey, server)
    counters = []
    for _ in range(3):
        request, state = server.authenticate_begin([credential], user_verification=DISCOURAGED)
        response = softkey.client.get_assertion(request.public_key).get_response(0)
        server.authenticate_complete(state, [credential], response)
        counters.append(response.response.authenticator_data.counter)
    assert counters == sorted(counters) and len(set(counters)) == 3


# -- presence control ----------------------------------------------------------------------------


def test_denied_touch_fails_registration(softkey) -> None:
    server = Fido2Server(RP)
    softkey.deny()
    options, _ = server.register_begin(ALICE, user_verification=DISCOURAGED)
    with pytest.raises(ClientError) as excinfo:
        softkey.client.make_credential(options.public_key)
    assert isinstance(excinfo.value.cause, CtapError)
    assert excinfo.value.cause.code == CtapError.ERR.OPERATION_DENIED
    assert softkey.credentials() == []

    softkey.approve()
    _log_in(softkey, server, _register(softkey, server))


def test_scripted_verdicts_then_default(softkey) -> None:
    server = Fido2Server(RP)
    credential = _register(softkey, server)
    softkey.next_verdicts("timeout")
    request, _ = server.authenticate_begin([credential], user_verification=DISCOURAGED)
    with pytest.raises(ClientError) as excinfo:
        softkey.client.get_assertion(request.public_key)
    assert excinfo.value.cause.code == CtapError.ERR.USER_ACTION_TIMEOUT
    # The script is used up: the next login is approved again.
    request, state = server.authenticate_begin([credential], user_verification=DISCOURAGED)
    response = softkey.client.get_assertion(request.public_key).get_response(0)
    server.authenticate_complete(state, [credential], response)


def test_denying_block_restores_previous_policy(softkey) -> None:
    server = Fido2Server(RP)
    with softkey.denying():
        options, _ = server.register_begin(ALICE, user_verification=DISCOURAGED)
        with pytest.raises(ClientError) as excinfo:
            softkey.client.make_credential(options.public_key)
        assert excinfo.value.cause.code == CtapError.ERR.OPERATION_DENIED
    _log_in(softkey, server, _register(softkey, server))


@pytest.mark.softkey(presence="deny")
def test_marker_sets_presence(softkey) -> None:
    options, _ = Fido2Server(RP).register_begin(ALICE, user_verification=DISCOURAGED)
    with pytest.raises(ClientError) as excinfo:
        softkey.client.make_credential(options.public_key)
    assert excinfo.value.cause.code == CtapError.ERR.OPERATION_DENIED
    assert [r.purpose for r in softkey.presence_requests] == ["makeCredential"]


# -- profiles: marker and indirect parametrization ---------------------------------------------


@pytest.mark.softkey(profile="yubikey-5")
def test_marker_picks_the_profile(softkey) -> None:
    info = softkey.ctap2.info
    assert softkey.profile == "yubikey-5"
    assert "FIDO_2_1_PRE" in info.versions and "FIDO_2_1" not in info.versions


@pytest.mark.parametrize(
    ("softkey", "capacity"),
    [("nitrokey-fido2", 8), ({"profile": "nitrokey-3"}, 10)],
    indirect=["softkey"],
)
def test_indirect_parametrization_fills_to_the_preset_capacity(softkey, capacity: int) -> None:
    server = Fido2Server(RP)
    for i in range(capacity):
        user = PublicKeyCredentialUserEntity(id=b"u%d" % i, name=f"u{i}", display_name="U")
        _register(softkey, server, user=user, resident=True)
    overflow = PublicKeyCredentialUserEntity(id=b"one-more", name="x", display_name="X")
    options, _ = server.register_begin(
        overflow,
        resident_key_requirement=ResidentKeyRequirement.REQUIRED,
        user_verification=DISCOURAGED,
    )
    with pytest.raises(ClientError) as excinfo:
        softkey.client.make_credential(options.public_key)
    assert excinfo.value.cause.code == CtapError.ERR.KEY_STORE_FULL
    assert len(softkey.credentials()) == capacity


# -- several keys, reset, origins --------------------------------------------------------------


def test_factory_gives_independent_keys(softkey_factory) -> None:
    work = softkey_factory(profile="yubikey-5")
    home = softkey_factory(profile="solokey")
    server = Fido2Server(RP)
    credential = _register(work, server)

    request, _ = server.authenticate_begin([credential], user_verification=DISCOURAGED)
    with pytest.raises(ClientError) as excinfo:
        home.client.get_assertion(request.public_key)
    assert excinfo.value.cause.code == CtapError.ERR.NO_CREDENTIALS
    request, state = server.authenticate_begin([credential], user_verification=DISCOURAGED)
    server.authenticate_complete(
        state, [credential], work.client.get_assertion(request.public_key).get_response(0)
    )


def test_reset_revokes_non_resident_credentials(softkey) -> None:
    server = Fido2Server(RP)
    credential = _register(softkey, server)
    softkey.reset()
    request, _ = server.authenticate_begin([credential], user_verification=DISCOURAGED)
    with pytest.raises(ClientError) as excinfo:
        softkey.client.get_assertion(request.public_key)
    assert excinfo.value.cause.code == CtapError.ERR.NO_CREDENTIALS


def test_client_refuses_an_rp_id_foreign_to_its_origin(softkey) -> None:
    other = Fido2Server(PublicKeyCredentialRpEntity(id="other.test", name="Other"))
    options, state = other.register_begin(ALICE, user_verification=DISCOURAGED)
    with pytest.raises(ClientError) as excinfo:
        softkey.client.make_credential(options.public_key)
    assert excinfo.value.code == ClientError.ERR.BAD_REQUEST
    assert softkey.presence_requests == []  # refused by the client: the key was never asked
    # The same key used from the right origin works, and the RP verifies the result.
    client = softkey.client_for("https://login.other.test")
    registration = client.make_credential(options.public_key)
    auth_data = other.register_complete(state, registration)
    assert auth_data.rp_id_hash == hashlib.sha256(b"other.test").digest()


def test_template_state_is_copied_not_changed(softkey_factory, tmp_path) -> None:
    from softkey.authenticator import Authenticator

    template = tmp_path / "known.sqlite3"
    with Authenticator("solokey", template):
        pass
    key = softkey_factory(template=template)
    assert key.profile == "solokey"
    _register(key, Fido2Server(RP), resident=True)
    assert len(key.credentials()) == 1
    with Authenticator(state=template) as original:
        assert original.credentials() == []


def test_factory_rejects_unknown_arguments(softkey_factory) -> None:
    with pytest.raises(TypeError, match="colour"):
        softkey_factory(colour="blue")


# -- configuration through a separate pytest run ----------------------------------------------

_PROBE = """
import pytest

def test_probe(softkey):
    print("ORIGIN", softkey.origin, "PROFILE", softkey.profile)

@pytest.mark.softkey(origin="https://marker.test", profile="ctap2.0")
def test_marker_wins(softkey):
    print("ORIGIN", softkey.origin, "PROFILE", softkey.profile)
"""


def test_origin_and_profile_from_command_line(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_probe=_PROBE)
    result = pytester.runpytest_inprocess(
        "-s",
        "--softkey-origin",
        "https://cli.test",
        "--softkey-profile",
        "nitrokey-3",
    )
    result.assert_outcomes(passed=2)
    # One line each, in whatever order the inner run took (pytest-randomly may shuffle it).
    result.stdout.fnmatch_lines(["*ORIGIN https://cli.test PROFILE nitrokey-3*"])
    result.stdout.fnmatch_lines(["*ORIGIN https://marker.test PROFILE ctap2.0*"])


def test_origin_from_ini(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nsoftkey_origin = https://ini.test\nsoftkey_profile = solokey\n")
    pytester.makepyfile(test_probe=_PROBE)
    result = pytester.runpytest_inprocess("-s")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*ORIGIN https://ini.test PROFILE solokey*"])


def test_unknown_profile_is_a_clear_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_bad="""
import pytest

@pytest.mark.softkey(profile="yubikey-9")
def test_bad(softkey):
    pass
"""
    )
    result = pytester.runpytest_inprocess()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*unknown profile 'yubikey-9'*"])


@pytest.mark.softkey(pin="123456")
def test_uv_required_with_a_pin(softkey) -> None:
    required = UserVerificationRequirement.REQUIRED
    server = Fido2Server(RP)
    options, state = server.register_begin(ALICE, user_verification=required)
    registration = softkey.client.make_credential(options.public_key)
    auth_data = server.register_complete(state, registration)
    assert auth_data.is_user_verified()
    credential = auth_data.credential_data

    # "preferred" (WebAuthn's default) works too once the key has a PIN.
    request, state = server.authenticate_begin([credential])
    response = softkey.client.get_assertion(request.public_key).get_response(0)
    assert server.authenticate_complete(state, [credential], response)
    assert response.response.authenticator_data.is_user_verified()


def test_wrong_pin_from_the_client_is_refused(softkey) -> None:
    softkey.set_pin("123456")
    softkey.pin = "654321"  # the person types the wrong PIN
    options, _ = Fido2Server(RP).register_begin(
        ALICE, user_verification=UserVerificationRequirement.REQUIRED
    )
    with pytest.raises(ClientError) as excinfo:
        softkey.client.make_credential(options.public_key)
    assert excinfo.value.cause.code == CtapError.ERR.PIN_INVALID
    assert softkey.authenticator.pin_status()["retries"] == 7


_PIN_PROBE = """
def test_pin(softkey):
    print("PIN", softkey.pin, "SET", softkey.authenticator.pin_status()["set"])
"""


@pytest.mark.parametrize(
    ("how", "expected"),
    [("cli", "PIN 2468 SET True"), ("ini", "PIN 1357 SET True"), ("none", "PIN None SET False")],
)
def test_pin_from_command_line_or_ini(pytester: pytest.Pytester, how: str, expected: str) -> None:
    pytester.makepyfile(test_pin=_PIN_PROBE)
    args = ["-s"]
    if how == "cli":
        args += ["--softkey-pin", "2468"]
    elif how == "ini":
        pytester.makeini("[pytest]\nsoftkey_pin = 1357\n")
    result = pytester.runpytest_inprocess(*args)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"*{expected}*"])


def test_pin_for_a_template_that_already_has_it(softkey_factory, tmp_path) -> None:
    from softkey.authenticator import Authenticator

    template = tmp_path / "with-pin.sqlite3"
    with Authenticator("ctap2.1", template) as auth:
        auth.set_pin("2468")
    key = softkey_factory(template=template, pin="2468")
    options, state = Fido2Server(RP).register_begin(
        ALICE, user_verification=UserVerificationRequirement.REQUIRED
    )
    auth_data = Fido2Server(RP).register_complete(
        state, key.client.make_credential(options.public_key)
    )
    assert auth_data.is_user_verified()
    assert key.authenticator.pin_status()["retries"] == 8  # the right PIN, first time
