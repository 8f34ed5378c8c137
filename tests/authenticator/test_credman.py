"""Credential management: 0x41 preview (2.1-pre), 0x0A (2.1, also answering 0x41), none on 2.0.

Judged by python-fido2's CredentialManagement, which picks 0x0A or 0x41 from getInfo.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest
from fido2.cose import CoseKey
from fido2.ctap2.credman import CredentialManagement

from softkey.authenticator import Status
from softkey.authenticator.credman import (
    CredMgmtCmd,
    CredMgmtKey,
    CredMgmtParamKey,
    CredMgmtResponseKey,
)
from softkey.authenticator.ctap2 import rp_id_hash

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

R = CredentialManagement.RESULT
MANAGED = [("ctap2.1-pre", 0x41), ("ctap2.1", 0x0A)]


def test_enums_match_python_fido2() -> None:
    assert {m.value for m in CredMgmtCmd} == {m.value for m in CredentialManagement.CMD}
    assert [m.value for m in CredMgmtParamKey] == [m.value for m in CredentialManagement.PARAM]
    ours = {m.value for m in CredMgmtResponseKey}
    assert ours == {m.value for m in R}  # thirdPartyPayment (0x0C) since CTAP 2.2
    assert [m.value for m in CredMgmtKey] == [1, 2, 3, 4]


def manager(key: Key, pin: str = "1234", **token_kw) -> CredentialManagement:
    cp = key.client_pin()
    token = cp.get_pin_token(pin, token_kw.pop("permissions", PERM.CREDENTIAL_MGMT), **token_kw)
    return CredentialManagement(key.ctap, cp.protocol, token)


def resident(key: Key, rp: str, user: bytes, token_pin: str = "1234"):
    cp = key.client_pin()
    token = cp.get_pin_token(token_pin, PERM.MAKE_CREDENTIAL, rp)
    return make(key, token, cp.protocol.VERSION, rp=rp, user=user, rk=True)


@pytest.mark.parametrize(("profile", "command"), MANAGED)
def test_python_fido2_manages_credentials(profile: str, command: int) -> None:
    key = with_pin(profile)
    made = {
        (rp, user): resident(key, rp, user)
        for rp, user in [("a.example", b"alice"), ("a.example", b"bob"), ("b.example", b"carol")]
    }
    assert CredentialManagement.is_supported(key.ctap.info)
    cm = manager(key)
    key.commands.clear()
    assert cm.get_metadata() == {1: 3, 2: 22}
    assert set(key.commands) == {command}  # the client picked the command from getInfo

    rps = cm.enumerate_rps()
    assert {(r[R.RP]["id"], r[R.RP]["name"]) for r in rps} == {
        ("a.example", "A.EXAMPLE"),
        ("b.example", "B.EXAMPLE"),
    }
    assert all(r[R.RP_ID_HASH] == rp_id_hash(r[R.RP]["id"]) for r in rps)
    assert rps[0][R.TOTAL_RPS] == 2

    creds = cm.enumerate_creds(rp_id_hash("a.example"))
    assert creds[0][R.TOTAL_CREDENTIALS] == 2
    assert {c[R.USER]["name"] for c in creds} == {"alice", "bob"}
    for entry in creds:
        att = made[("a.example", entry[R.USER]["id"])]
        assert entry[R.CREDENTIAL_ID] == {"id": cred_id(att), "type": "public-key"}
        # The public key derived from the wrapped secret is the one that was attested.
        assert entry[R.PUBLIC_KEY] == dict(att.auth_data.credential_data.public_key)
        assert entry[R.CRED_PROTECT] == 1
        assert entry[R.USER]["displayName"] == entry[R.USER]["name"].title()

    cm.delete_cred(creds[0][R.CREDENTIAL_ID])
    assert cm.get_metadata() == {1: 2, 2: 23}
    assert len(cm.enumerate_creds(rp_id_hash("a.example"))) == 1
    # The deleted credential is gone for getAssertion too.
    deleted = creds[0][R.CREDENTIAL_ID]["id"]
    assert status_of(assertion, key, rp="a.example", allow=[deleted]) == ERR.NO_CREDENTIALS
    other = 0x41 if command == 0x0A else 0x0A
    assert command in key.commands and other not in key.commands


def test_2_0_has_no_credential_management() -> None:
    key = with_pin("ctap2.0")
    resident(key, RP_ID, b"alice")
    assert not CredentialManagement.is_supported(key.ctap.info)
    cp = key.client_pin()
    with pytest.raises(ValueError):
        CredentialManagement(key.ctap, cp.protocol, cp.get_pin_token("1234"))
    for command in (0x0A, 0x41):
        assert raw(key.auth, command, {1: 1}) == bytes([Status.INVALID_COMMAND])
    assert len(key.auth.credentials()) == 1


def test_2_1_answers_the_preview_command_too() -> None:
    key = with_pin("ctap2.1")
    info = key.ctap.info
    assert info.options["credMgmt"] is True and info.options["credentialMgmtPreview"] is True
    resident(key, RP_ID, b"alice")
    cp = key.client_pin()
    token = cp.get_pin_token("1234", PERM.CREDENTIAL_MGMT)
    param = cp.protocol.authenticate(token, bytes([CredMgmtCmd.GET_CREDS_METADATA]))
    request = {1: 1, 3: cp.protocol.VERSION, 4: param}
    assert raw(key.auth, 0x41, request) == raw(key.auth, 0x0A, request)
    assert raw(key.auth, 0x41, request)[0] == 0


def test_deleting_frees_the_slot_when_full() -> None:
    key = with_pin("nitrokey-3")  # 2.1, 10 slots
    for i in range(10):
        resident(key, RP_ID, f"user{i}".encode())
    assert key.ctap.info.remaining_disc_creds == 0
    assert status_of(resident, key, RP_ID, b"one-too-many") == ERR.KEY_STORE_FULL
    cm = manager(key)
    victim = cm.enumerate_creds(rp_id_hash(RP_ID))[-1][R.CREDENTIAL_ID]
    cm.delete_cred(victim)
    # getInfo and getCredsMetadata agree about the freed slot.
    assert key.ctap.info.remaining_disc_creds == 1
    assert cm.get_metadata() == {1: 9, 2: 1}
    resident(key, RP_ID, b"one-too-many")
    # (Getting the mc token replaced the cm token: one token at a time.)
    assert status_of(cm.get_metadata) == ERR.PIN_AUTH_INVALID
    assert manager(key).get_metadata() == {1: 10, 2: 0}


def test_update_user_information() -> None:
    key = with_pin("ctap2.1")
    resident(key, RP_ID, b"alice")
    cm = manager(key)
    assert CredentialManagement.is_update_supported(key.ctap.info)
    entry = cm.enumerate_creds(rp_id_hash(RP_ID))[0]
    cm.update_user_info(entry[R.CREDENTIAL_ID], {"id": b"alice", "name": "alice@new"})
    updated = cm.enumerate_creds(rp_id_hash(RP_ID))[0][R.USER]
    # Members left out (displayName) are removed.
    assert updated == {"id": b"alice", "name": "alice@new"}
    status = status_of(cm.update_user_info, entry[R.CREDENTIAL_ID], {"id": b"mallory", "name": "x"})
    assert status == ERR.INVALID_PARAMETER
    token = key.client_pin().get_pin_token("1234", PERM.GET_ASSERTION, RP_ID)
    got = assertion(key, token)
    assert got.user == {"id": b"alice", "name": "alice@new"}


def test_preview_has_no_update_user_information() -> None:
    key = with_pin("ctap2.1-pre")
    resident(key, RP_ID, b"alice")
    cm = manager(key)
    assert not CredentialManagement.is_update_supported(key.ctap.info)
    entry = cm.enumerate_creds(rp_id_hash(RP_ID))[0]
    with pytest.raises(ValueError):
        cm.update_user_info(entry[R.CREDENTIAL_ID], {"id": b"alice", "name": "x"})
    # Sent anyway, the preview command does not know the subcommand.
    cp = cm.pin_uv
    params = {2: entry[R.CREDENTIAL_ID], 3: {"id": b"alice", "name": "x"}}
    from softkey.authenticator.cbor import encode

    param = cp.protocol.authenticate(cp.token, b"\x07" + encode(params))
    response = raw(key.auth, 0x41, {1: 7, 2: params, 3: 1, 4: param})
    assert response == bytes([Status.INVALID_SUBCOMMAND])


# -- cursors ------------------------------------------------------------------------


def test_enumeration_cursors_and_other_commands() -> None:
    key = with_pin("ctap2.1")
    for rp in ("a.example", "b.example", "c.example"):
        resident(key, rp, b"u1")
        resident(key, rp, b"u2")
    cm = manager(key)
    first = cm.enumerate_rps_begin()
    assert first[R.TOTAL_RPS] == 3
    second = cm.enumerate_rps_next()
    key.ctap.get_info()  # any other command ends the enumeration
    assert status_of(cm.enumerate_rps_next) == ERR.NOT_ALLOWED
    # ...including another credential-management subcommand.
    cm.enumerate_rps_begin()
    cm.get_metadata()
    assert status_of(cm.enumerate_rps_next) == ERR.NOT_ALLOWED
    # A fresh enumeration walks every RP exactly once, then stops.
    seen = [cm.enumerate_rps_begin()[R.RP]["id"]]
    seen += [cm.enumerate_rps_next()[R.RP]["id"] for _ in range(2)]
    assert sorted(seen) == ["a.example", "b.example", "c.example"]
    assert {first[R.RP]["id"], second[R.RP]["id"]} < set(seen)
    assert status_of(cm.enumerate_rps_next) == ERR.NOT_ALLOWED

    begin = cm.enumerate_creds_begin(rp_id_hash("b.example"))
    assert begin[R.TOTAL_CREDENTIALS] == 2
    # RP and credential cursors are different things.
    assert status_of(cm.enumerate_rps_next) == ERR.NOT_ALLOWED
    assert status_of(cm.enumerate_creds_next) == ERR.NOT_ALLOWED
    cm.enumerate_creds_begin(rp_id_hash("b.example"))
    nxt = cm.enumerate_creds_next()
    assert {begin[R.USER]["id"], nxt[R.USER]["id"]} == {b"u1", b"u2"}
    assert status_of(cm.enumerate_creds_next) == ERR.NOT_ALLOWED


def test_credential_management_ends_a_pending_get_next_assertion() -> None:
    key = with_pin("ctap2.1")
    resident(key, RP_ID, b"u1")
    resident(key, RP_ID, b"u2")
    token = key.client_pin().get_pin_token("1234", PERM.GET_ASSERTION, RP_ID)
    first = assertion(key, token)
    assert first.number_of_credentials == 2
    manager(key).get_metadata()
    assert status_of(key.ctap.get_next_assertion) == ERR.NOT_ALLOWED


def test_empty_key() -> None:
    key = with_pin("ctap2.1")
    cm = manager(key)
    assert status_of(cm.enumerate_rps_begin) == ERR.NO_CREDENTIALS
    assert cm.enumerate_rps() == []
    assert status_of(cm.enumerate_creds_begin, rp_id_hash(RP_ID)) == ERR.NO_CREDENTIALS
    assert status_of(cm.delete_cred, {"id": b"\x01" * 40, "type": "public-key"}) == (
        ERR.NO_CREDENTIALS
    )
    assert cm.get_metadata() == {1: 0, 2: 25}


def test_unlimited_profile_reports_a_number() -> None:
    key = with_pin("unlimited-rk")
    assert manager(key).get_metadata() == {1: 0, 2: 0xFFFF}


# -- authorization ------------------------------------------------------------------------


def test_pin_uv_auth_param_is_required_and_checked() -> None:
    key = with_pin("ctap2.1")
    resident(key, RP_ID, b"alice")
    auth = key.auth
    assert raw(auth, 0x0A, {1: 1}) == bytes([Status.PUAT_REQUIRED])
    assert raw(auth, 0x0A, {1: 1, 4: b"\x00" * 32}) == bytes([Status.MISSING_PARAMETER])
    assert raw(auth, 0x0A, {1: 1, 3: 9, 4: b"\x00" * 32}) == bytes([Status.INVALID_PARAMETER])
    assert raw(auth, 0x0A, {1: 1, 3: 2, 4: b"\x00" * 32}) == bytes([Status.PIN_AUTH_INVALID])
    assert raw(auth, 0x0A, {1: 0x10}) == bytes([Status.INVALID_SUBCOMMAND])
    assert raw(auth, 0x0A, {}) == bytes([Status.MISSING_PARAMETER])
    # A token without cm.
    cm = manager(key, permissions=PERM.MAKE_CREDENTIAL, permissions_rpid=RP_ID)
    assert status_of(cm.get_metadata) == ERR.PIN_AUTH_INVALID
    # The MAC covers the parameters: a MAC for one RP's hash does not enumerate another.
    cm = manager(key)
    cp = cm.pin_uv
    from softkey.authenticator.cbor import encode

    mac = cp.protocol.authenticate(cp.token, b"\x04" + encode({1: rp_id_hash("x.example")}))
    response = raw(auth, 0x0A, {1: 4, 2: {1: rp_id_hash(RP_ID)}, 3: 2, 4: mac})
    assert response == bytes([Status.PIN_AUTH_INVALID])


def test_no_pin_no_management() -> None:
    key = new_key("ctap2.1")
    assert raw(key.auth, 0x0A, {1: 1}) == bytes([Status.PUAT_REQUIRED])
    assert raw(key.auth, 0x0A, {1: 1, 3: 2, 4: b"\x00" * 32}) == bytes([Status.PIN_NOT_SET])


def test_rp_bound_token_sees_only_its_rp() -> None:
    key = with_pin("ctap2.1")
    mine = resident(key, "a.example", b"alice")
    theirs = resident(key, "b.example", b"bob")
    cm = manager(key, permissions=PERM.CREDENTIAL_MGMT, permissions_rpid="a.example")
    assert status_of(cm.get_metadata) == ERR.PIN_AUTH_INVALID
    assert status_of(cm.enumerate_rps_begin) == ERR.PIN_AUTH_INVALID
    assert len(cm.enumerate_creds(rp_id_hash("a.example"))) == 1
    assert status_of(cm.enumerate_creds_begin, rp_id_hash("b.example")) == ERR.PIN_AUTH_INVALID
    descriptor = {"id": cred_id(theirs), "type": "public-key"}
    assert status_of(cm.delete_cred, descriptor) == ERR.PIN_AUTH_INVALID
    cm.delete_cred({"id": cred_id(mine), "type": "public-key"})
    assert [c.rp_id for c in key.auth.credentials()] == ["b.example"]


def test_cred_protect_public_key_and_large_blob_key_are_reported() -> None:
    key = with_pin("ctap2.1")
    cp = key.client_pin()
    for level in (1, 2, 3):
        token = cp.get_pin_token("1234", PERM.MAKE_CREDENTIAL, RP_ID)
        make(key, token, rk=True, user=f"u{level}".encode(), extensions={"credProtect": level})
    # A large-blob key recorded with a credential is reported with it.
    stored = key.auth.store.find_resident(rp_id_hash(RP_ID), b"u1")
    key.auth.store.put_resident(replace(stored, large_blob_key=b"\x42" * 32))

    creds = manager(key).enumerate_creds(rp_id_hash(RP_ID))
    assert {c[R.USER]["id"]: c[R.CRED_PROTECT] for c in creds} == {b"u1": 1, b"u2": 2, b"u3": 3}
    assert {c[R.USER]["id"]: c.get(R.LARGE_BLOB_KEY) for c in creds} == {
        b"u1": b"\x42" * 32,
        b"u2": None,
        b"u3": None,
    }
    # Each reported public key verifies its credential's signatures.
    for entry in creds:
        token = cp.get_pin_token("1234", PERM.GET_ASSERTION, RP_ID)
        cdh = bytes(32)
        got = assertion(key, token, allow=[entry[R.CREDENTIAL_ID]["id"]], cdh=cdh)
        public = CoseKey.parse(entry[R.PUBLIC_KEY])
        public.verify(bytes(got.auth_data) + cdh, got.signature)


def test_rp_bound_token_cannot_update_another_rps_user() -> None:
    # CTAP 2.1 §6.8.6 updateUserInformation: a token with a permissions RP ID may only touch
    # that RP's credentials (PIN_AUTH_INVALID otherwise), like delete and enumerate.
    key = with_pin("ctap2.1")
    mine = resident(key, "a.example", b"alice")
    theirs = resident(key, "b.example", b"bob")
    cm = manager(key, permissions=PERM.CREDENTIAL_MGMT, permissions_rpid="a.example")
    descriptor = {"id": cred_id(theirs), "type": "public-key"}
    status = status_of(cm.update_user_info, descriptor, {"id": b"bob", "name": "hijacked"})
    assert status == ERR.PIN_AUTH_INVALID
    cm.update_user_info({"id": cred_id(mine), "type": "public-key"}, {"id": b"alice", "name": "a"})
    names = {c.rp_id: c.user_name for c in key.auth.credentials()}
    assert names["a.example"] == "a" and names["b.example"] != "hijacked"


def test_2_1_pre_has_only_the_preview_command() -> None:
    key = with_pin("ctap2.1-pre")
    assert raw(key.auth, 0x0A, {1: 1}) == bytes([Status.INVALID_COMMAND])
    options = key.ctap.get_info().options
    assert options.get("credentialMgmtPreview") is True and "credMgmt" not in options


@pytest.mark.parametrize("smaller", [True, False])
def test_update_refuses_any_other_user_id(smaller: bool) -> None:
    # Not just one that sorts after the stored id: any other id is INVALID_PARAMETER.
    key = with_pin("ctap2.1")
    resident(key, RP_ID, b"mallory")
    cm = manager(key)
    entry = cm.enumerate_creds(rp_id_hash(RP_ID))[0]
    other = b"aaron" if smaller else b"zoe"
    status = status_of(cm.update_user_info, entry[R.CREDENTIAL_ID], {"id": other, "name": "x"})
    assert status == ERR.INVALID_PARAMETER


@pytest.mark.parametrize(
    ("bound", "target"), [("a.example", "b.example"), ("b.example", "a.example")]
)
def test_rp_bound_token_is_refused_for_the_other_rp_either_way(bound: str, target: str) -> None:
    # Whichever of the two RP ID hashes sorts first, the other RP's credential is off limits.
    key = with_pin("ctap2.1")
    creds = {rp: resident(key, rp, b"user") for rp in ("a.example", "b.example")}
    cm = manager(key, permissions=PERM.CREDENTIAL_MGMT, permissions_rpid=bound)
    descriptor = {"id": cred_id(creds[target]), "type": "public-key"}
    assert status_of(cm.delete_cred, descriptor) == ERR.PIN_AUTH_INVALID
    assert status_of(cm.enumerate_creds_begin, rp_id_hash(target)) == ERR.PIN_AUTH_INVALID
    assert len(key.auth.credentials()) == 2
