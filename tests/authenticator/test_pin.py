"""authenticatorClientPIN (CTAP 2.1 §6.5), judged by python-fido2's ClientPin.

Retries and lockout across power cycles, both PIN/UV auth protocols, PIN policy, token and
key-agreement lifetimes, permissions, storage of the PIN (hash only) and the admin API.
"""

from __future__ import annotations

import hashlib
import logging
import sys
from pathlib import Path

import pytest
from fido2.ctap2.pin import ClientPin
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from softkey.authenticator import Authenticator, CtapError, FakeClock, Status
from softkey.authenticator.pin import ClientPinCmd, ClientPinResponseKey, Permission

sys.path.insert(0, str(Path(__file__).parent))  # pinkit: shared helpers (importlib mode)
from pinkit import (  # noqa: E402
    ERR,
    PERM,
    PROTOCOLS,
    RP_ID,
    Key,
    make,
    new_key,
    raw,
    status_of,
    with_pin,
)

# (profile, PIN/UV auth protocol) pairs each CTAP version offers.
PROTOCOL_CASES = [("ctap2.0", 1), ("ctap2.1-pre", 1), ("ctap2.1", 1), ("ctap2.1", 2)]


def retries(key: Key) -> int:
    return key.client_pin().get_pin_retries()[0]


def test_enums_match_python_fido2() -> None:
    for member in ClientPin.CMD:
        assert ClientPinCmd[_our_cmd_name(member.name)] == member.value
    for member in ClientPin.RESULT:
        assert ClientPinResponseKey[member.name.replace("PIN_UV_TOKEN", "PIN_UV_AUTH_TOKEN")] == (
            member.value
        )
    assert {p.name: p.value for p in Permission} == {
        "MC": PERM.MAKE_CREDENTIAL,
        "GA": PERM.GET_ASSERTION,
        "CM": PERM.CREDENTIAL_MGMT,
        "BE": PERM.BIO_ENROLL,
        "LBW": PERM.LARGE_BLOB_WRITE,
        "ACFG": PERM.AUTHENTICATOR_CFG,
        "PCMR": PERM.PERSISTENT_CREDENTIAL_MGMT,  # CTAP 2.2
    }


def _our_cmd_name(fido2_name: str) -> str:
    return {
        "GET_TOKEN_USING_PIN_LEGACY": "GET_PIN_TOKEN",
        "GET_TOKEN_USING_UV": "GET_PIN_UV_AUTH_TOKEN_USING_UV_WITH_PERMISSIONS",
        "GET_TOKEN_USING_PIN": "GET_PIN_UV_AUTH_TOKEN_USING_PIN_WITH_PERMISSIONS",
    }.get(fido2_name, fido2_name)


# -- set / change / token, both protocols -----------------------------------------------------


@pytest.mark.parametrize(("profile", "version"), PROTOCOL_CASES)
def test_set_change_and_get_token(profile: str, version: int) -> None:
    key = new_key(profile)
    assert key.ctap.info.options["clientPin"] is False
    cp = key.client_pin(version)
    assert cp.get_pin_retries()[0] == 8
    cp.set_pin("1234")
    assert key.ctap.info.options["clientPin"] is True
    token = cp.get_pin_token("1234")
    assert len(token) == 32
    att = make(key, token, version)
    assert att.auth_data.is_user_verified()

    cp.change_pin("1234", "98765")
    # The old token died with the old PIN; the old PIN no longer works.
    assert status_of(make, key, token, version) == ERR.PIN_AUTH_INVALID
    assert status_of(cp.get_pin_token, "1234") == ERR.PIN_INVALID
    assert make(key, cp.get_pin_token("98765"), version).auth_data.is_user_verified()


def test_protocol_two_is_only_on_2_1() -> None:
    assert new_key("ctap2.1").ctap.info.pin_uv_protocols == [2, 1]
    for profile in ("ctap2.0", "ctap2.1-pre"):
        key = new_key(profile)
        assert key.ctap.info.pin_uv_protocols == [1]
        status = status_of(key.ctap.client_pin, 2, ClientPin.CMD.GET_KEY_AGREEMENT)
        assert status == ERR.INVALID_PARAMETER


def test_set_pin_twice_is_refused() -> None:
    key = with_pin()
    assert status_of(key.client_pin().set_pin, "5678") == ERR.PIN_AUTH_INVALID
    key.client_pin().get_pin_token("1234")  # the first PIN still stands


def test_change_pin_without_a_pin() -> None:
    assert status_of(new_key().client_pin().change_pin, "1234", "5678") == ERR.PIN_NOT_SET
    assert status_of(new_key().client_pin().get_pin_token, "1234") == ERR.PIN_NOT_SET


# -- retries and lockout ----------------------------------------------------------------------


@pytest.mark.parametrize(("profile", "version"), PROTOCOL_CASES)
def test_retries_and_lockout_across_power_cycles(profile: str, version: int) -> None:
    key = with_pin(profile)
    cp = key.client_pin(version)
    v21 = profile == "ctap2.1"

    # Two wrong PINs: PIN_INVALID, one retry spent each time.
    for left in (7, 6):
        assert status_of(cp.get_pin_token, "0000") == ERR.PIN_INVALID
        assert cp.get_pin_retries()[0] == left
    # The third in a row: PIN_AUTH_BLOCKED until the key is power cycled...
    assert status_of(cp.get_pin_token, "0000") == ERR.PIN_AUTH_BLOCKED
    assert cp.get_pin_retries() == (5, True if v21 else None)
    # ...even for the right PIN, and without spending retries.
    assert status_of(cp.get_pin_token, "1234") == ERR.PIN_AUTH_BLOCKED
    assert status_of(cp.change_pin, "1234", "5678") == ERR.PIN_AUTH_BLOCKED
    assert cp.get_pin_retries()[0] == 5

    key.power_cycle()
    assert cp.get_pin_retries() == (5, False if v21 else None)
    assert status_of(cp.get_pin_token, "0000") == ERR.PIN_INVALID
    # The right PIN restores all 8 retries and the consecutive count.
    cp.get_pin_token("1234")
    assert cp.get_pin_retries()[0] == 8

    # 8 wrong PINs in total (power cycling after each 3) block the PIN for good.
    outcomes = []
    for attempt in range(8):
        if attempt and attempt % 3 == 0:
            key.power_cycle()
        outcomes.append(status_of(cp.get_pin_token, "0000"))
    assert outcomes == [
        ERR.PIN_INVALID, ERR.PIN_INVALID, ERR.PIN_AUTH_BLOCKED,
        ERR.PIN_INVALID, ERR.PIN_INVALID, ERR.PIN_AUTH_BLOCKED,
        ERR.PIN_INVALID, ERR.PIN_BLOCKED,
    ]  # fmt: skip
    assert cp.get_pin_retries()[0] == 0
    key.power_cycle()
    assert status_of(cp.get_pin_token, "1234") == ERR.PIN_BLOCKED
    assert status_of(cp.change_pin, "1234", "5678") == ERR.PIN_BLOCKED
    assert cp.get_pin_retries()[0] == 0


def test_wrong_old_pin_in_change_pin_counts_too() -> None:
    key = with_pin()
    cp = key.client_pin()
    assert status_of(cp.change_pin, "0000", "5678") == ERR.PIN_INVALID
    assert cp.get_pin_retries()[0] == 7
    cp.change_pin("1234", "5678")
    assert cp.get_pin_retries()[0] == 8


def test_retries_persist_but_the_power_cycle_lock_does_not(tmp_path) -> None:
    state = tmp_path / "key.db"
    auth = Authenticator("ctap2.1", state=state)
    key = Key(auth, FakeClock())
    key.client_pin().set_pin("1234")
    cp = key.client_pin()
    for _ in range(3):
        status_of(cp.get_pin_token, "0000")
    assert status_of(cp.get_pin_token, "1234") == ERR.PIN_AUTH_BLOCKED
    auth.close()

    # A new process is a power-up: the lock is gone, the spent retries are not.
    key = Key(Authenticator(state=state), FakeClock())
    assert key.client_pin().get_pin_retries() == (5, False)
    key.client_pin().get_pin_token("1234")


def test_mismatch_regenerates_the_key_agreement_key() -> None:
    key = with_pin()
    cp = key.client_pin(2)
    platform_key, shared = cp._get_shared_secret()

    def get_token(pin: str) -> None:
        pin_hash_enc = cp.protocol.encrypt(shared, hashlib.sha256(pin.encode()).digest()[:16])
        key.ctap.client_pin(
            2, ClientPin.CMD.GET_TOKEN_USING_PIN_LEGACY,
            key_agreement=platform_key, pin_hash_enc=pin_hash_enc,
        )  # fmt: skip

    assert status_of(get_token, "0000") == ERR.PIN_INVALID
    # The same (now stale) shared secret no longer works, even with the right PIN: a
    # platform must fetch getKeyAgreement again after a wrong PIN.
    assert status_of(get_token, "1234") == ERR.PIN_INVALID
    assert cp.get_pin_retries()[0] == 6
    cp.get_pin_token("1234")


# -- PIN policy ---------------------------------------------------------------------------------


def _set_padded(key: Key, padded: bytes, version: int = 2, tamper: bool = False) -> None:
    proto = PROTOCOLS[version]()
    peer = key.ctap.client_pin(version, ClientPin.CMD.GET_KEY_AGREEMENT)[1]
    platform_key, shared = proto.encapsulate(peer)
    new_pin_enc = proto.encrypt(shared, padded)
    param = proto.authenticate(shared, new_pin_enc)
    if tamper:
        param = bytes([param[0] ^ 1]) + param[1:]
    key.ctap.client_pin(
        version, ClientPin.CMD.SET_PIN,
        key_agreement=platform_key, new_pin_enc=new_pin_enc, pin_uv_param=param,
    )  # fmt: skip


def pad(pin: bytes, length: int = 64) -> bytes:
    return pin + b"\x00" * (length - len(pin))


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize(
    ("pin", "status"),
    [
        (b"123", ERR.PIN_POLICY_VIOLATION),  # 3 code points
        ("€€€".encode(), ERR.PIN_POLICY_VIOLATION),  # 9 bytes but 3 code points
        ("€€€€".encode(), None),  # 4 code points
        (b"1234", None),
        (b"x" * 63, None),  # the longest: 63 bytes and one byte of padding
        (b"x" * 64, ERR.PIN_POLICY_VIOLATION),  # no room for padding: 64 bytes is too long
        (b"\xff\xfe\xfd\xfc", ERR.PIN_POLICY_VIOLATION),  # not UTF-8
    ],
)
def test_pin_policy(version: int, pin: bytes, status: int | None) -> None:
    key = new_key("ctap2.1")
    padded = pin if len(pin) == 64 else pad(pin)
    if status is None:
        _set_padded(key, padded, version)
        key.client_pin(version).get_pin_token(pin.decode())
    else:
        assert status_of(_set_padded, key, padded, version) == status
        assert key.ctap.info.options["clientPin"] is False


def test_new_pin_must_be_padded_to_64_bytes() -> None:
    key = new_key()
    assert status_of(_set_padded, key, pad(b"1234", 80)) == ERR.INVALID_PARAMETER
    assert status_of(_set_padded, key, pad(b"1234", 32)) == ERR.INVALID_PARAMETER
    assert status_of(_set_padded, key, pad(b"1234"), tamper=True) == ERR.PIN_AUTH_INVALID
    assert key.ctap.info.options["clientPin"] is False


def test_configured_minimum_applies_to_new_pins() -> None:
    key = new_key()
    key.auth.store.set_int("min_pin_length", 6)
    assert status_of(_set_padded, key, pad(b"12345")) == ERR.PIN_POLICY_VIOLATION
    _set_padded(key, pad(b"123456"))
    assert key.ctap.info.min_pin_length == 6


def test_bad_key_agreement_is_invalid_parameter() -> None:
    key = new_key()
    peer = key.ctap.client_pin(2, ClientPin.CMD.GET_KEY_AGREEMENT)[1]
    platform_key, shared = PROTOCOLS[2]().encapsulate(peer)
    bad_point = dict(platform_key)
    bad_point[-3] = bytes(32)  # (x, 0) is not on P-256
    wrong_curve = dict(platform_key)
    wrong_curve[-1] = 2
    for cose_key in (bad_point, wrong_curve, {1: 2}):
        enc = PROTOCOLS[2]().encrypt(shared, pad(b"1234"))
        status = status_of(
            key.ctap.client_pin, 2, ClientPin.CMD.SET_PIN,
            key_agreement=cose_key, new_pin_enc=enc,
            pin_uv_param=PROTOCOLS[2]().authenticate(shared, enc),
        )  # fmt: skip
        assert status == ERR.INVALID_PARAMETER


# -- tokens and permissions ---------------------------------------------------------------------


def test_token_is_regenerated_at_power_up() -> None:
    key = with_pin()
    token = key.client_pin().get_pin_token("1234", PERM.MAKE_CREDENTIAL, RP_ID)
    key.power_cycle()
    assert status_of(make, key, token) == ERR.PIN_AUTH_INVALID


def test_a_new_token_replaces_the_old_one() -> None:
    key = with_pin("ctap2.0")
    old = key.client_pin().get_pin_token("1234")
    new = key.client_pin().get_pin_token("1234")
    assert old != new
    assert status_of(make, key, old, 1) == ERR.PIN_AUTH_INVALID
    make(key, new, 1)


def test_token_is_bound_to_the_protocol_it_came_through() -> None:
    key = with_pin()
    token = key.client_pin(1).get_pin_token("1234", PERM.MAKE_CREDENTIAL, RP_ID)
    assert status_of(make, key, token, 2) == ERR.PIN_AUTH_INVALID
    assert make(key, token, 1).auth_data.is_user_verified()


def test_permission_requests() -> None:
    key = with_pin()
    cp = key.client_pin()
    assert status_of(cp.get_pin_token, "1234", PERM(0), RP_ID) == ERR.INVALID_PARAMETER
    assert status_of(cp.get_pin_token, "1234", PERM.BIO_ENROLL) == ERR.UNAUTHORIZED_PERMISSION
    assert status_of(cp.get_pin_token, "1234", PERM(0x80)) == ERR.UNAUTHORIZED_PERMISSION
    # mc and ga are about one RP: the request must name it.
    assert status_of(cp.get_pin_token, "1234", PERM.MAKE_CREDENTIAL) == ERR.MISSING_PARAMETER
    # None of these refusals spent a retry: the PIN was not even looked at.
    assert cp.get_pin_retries()[0] == 8
    cp.get_pin_token("1234", PERM.CREDENTIAL_MGMT | PERM.AUTHENTICATOR_CFG)


def test_get_pin_token_takes_no_permissions_on_2_1() -> None:
    key = with_pin()
    cp = key.client_pin()
    _, shared = cp._get_shared_secret()
    platform_key, shared = cp._get_shared_secret()
    status = status_of(
        key.ctap.client_pin, 2, ClientPin.CMD.GET_TOKEN_USING_PIN_LEGACY,
        key_agreement=platform_key,
        pin_hash_enc=cp.protocol.encrypt(shared, hashlib.sha256(b"1234").digest()[:16]),
        permissions=PERM.CREDENTIAL_MGMT,
    )  # fmt: skip
    assert status == ERR.INVALID_PARAMETER


@pytest.mark.parametrize(
    ("profile", "sub"),
    [
        ("ctap2.1", ClientPin.CMD.GET_TOKEN_USING_UV),  # no built-in UV on this key
        ("ctap2.1", ClientPin.CMD.GET_UV_RETRIES),
        ("ctap2.1", 0x08),
        ("ctap2.1-pre", ClientPin.CMD.GET_TOKEN_USING_PIN),  # permissions are 2.1
        ("ctap2.0", ClientPin.CMD.GET_TOKEN_USING_PIN),
        ("ctap2.0", 0x42),
    ],
)
def test_unsupported_subcommands(profile: str, sub: int) -> None:
    key = with_pin(profile)
    assert status_of(key.ctap.client_pin, 1, sub) == ERR.INVALID_SUBCOMMAND


def test_malformed_client_pin_requests() -> None:
    auth = new_key().auth
    assert raw(auth, 0x06, {1: 2}) == bytes([Status.MISSING_PARAMETER])  # no subCommand
    assert raw(auth, 0x06, {2: 2}) == bytes([Status.MISSING_PARAMETER])  # no protocol
    assert raw(auth, 0x06, {1: 3, 2: 2}) == bytes([Status.INVALID_PARAMETER])
    assert raw(auth, 0x06, {1: 2, 2: "x"}) == bytes([Status.CBOR_UNEXPECTED_TYPE])
    assert raw(auth, 0x06, {1: 2, 2: 3}) == bytes([Status.MISSING_PARAMETER])
    assert raw(auth, 0x06, {1: 2, 2: 3, 3: 1, 4: b"", 5: b""}) == bytes(
        [Status.CBOR_UNEXPECTED_TYPE]
    )
    assert raw(auth, 0x06, {1: 2, 2: 3, 3: {}, 4: b"", 5: b""}) == bytes([Status.INVALID_PARAMETER])


# -- how the PIN is kept -------------------------------------------------------------------------


def test_only_a_hash_of_the_pin_is_stored_and_nothing_is_logged(tmp_path, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    pin = "correct-horse-battery"
    state = tmp_path / "key.db"
    auth = Authenticator("ctap2.1", state=state)
    key = Key(auth, FakeClock())
    key.client_pin().set_pin(pin)
    key.client_pin().change_pin(pin, pin + "!")
    status_of(key.client_pin().get_pin_token, pin)
    assert auth.store.get_meta("pin_hash") == hashlib.sha256((pin + "!").encode()).digest()[:16]
    auth.close()
    on_disk = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert pin.encode() not in on_disk
    assert pin not in caplog.text


# -- admin API ------------------------------------------------------------------------------------


def test_admin_pin_api_follows_the_same_rules() -> None:
    key = new_key()
    auth = key.auth
    assert auth.pin_status() == {"set": False, "retries": 8, "force_change": False, "min_length": 4}
    with pytest.raises(CtapError) as exc:
        auth.set_pin("123")
    assert exc.value.status == Status.PIN_POLICY_VIOLATION
    auth.set_pin("1234")
    with pytest.raises(CtapError) as exc:
        auth.set_pin("5678")
    assert exc.value.status == Status.NOT_ALLOWED
    key.client_pin().get_pin_token("1234")  # a platform agrees on the PIN

    with pytest.raises(CtapError) as exc:
        auth.change_pin("0000", "5678")
    assert exc.value.status == Status.PIN_INVALID
    assert auth.pin_status()["retries"] == 7
    auth.change_pin("1234", "héllo")
    assert auth.pin_status() == {"set": True, "retries": 8, "force_change": False, "min_length": 4}
    key.client_pin().get_pin_token("héllo")


# -- garbage in, a status out ----------------------------------------------------------------------

_values = st.recursive(
    st.one_of(
        st.integers(-(2**63), 2**64 - 1),
        st.binary(max_size=80),
        st.text(max_size=20),
        st.booleans(),
        st.none(),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.integers(-4, 12), st.text(max_size=6)), inner, max_size=5),
    ),
    max_leaves=12,
)
_requests = st.dictionaries(st.integers(1, 11), _values, max_size=6)
_GARBAGE_KEY = with_pin("ctap2.1")
make(_GARBAGE_KEY, _GARBAGE_KEY.client_pin().get_pin_token("1234", PERM.MAKE_CREDENTIAL, RP_ID),
     rk=True)  # fmt: skip


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(command=st.sampled_from([0x06, 0x0A, 0x41, 0x0D]), params=_requests)
def test_structured_garbage_gets_a_spec_status(command: int, params: dict) -> None:
    auth = _GARBAGE_KEY.auth
    response = raw(auth, command, params)
    assert response[0] in {s.value for s in Status} and response[0] != Status.OTHER
    # Whatever was sent, the PIN and the credential are still there.
    assert auth.pin_status()["set"] and len(auth.credentials()) == 1
