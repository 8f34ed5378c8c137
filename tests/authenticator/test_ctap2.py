"""makeCredential / getAssertion / getNextAssertion / selection, driven by python-fido2's Ctap2."""

from __future__ import annotations

import hashlib
import os

import pytest
from fido2.cose import CoseKey
from fido2.ctap import CtapError
from fido2.ctap2 import Ctap2

from softkey.authenticator import Authenticator, FakeClock, FixedPresence, ScriptedPresence, Verdict
from softkey.transports.inprocess import VirtualCtapDevice

ES256 = [{"type": "public-key", "alg": -7}]
ERR = CtapError.ERR


def make(ctap: Ctap2, rp: str = "example.com", user: bytes = b"u1", rk: bool = False, **kw):
    return ctap.make_credential(
        os.urandom(32),
        {"id": rp, "name": rp},
        {"id": user, "name": user.decode(errors="replace"), "displayName": "User"},
        kw.pop("params", ES256),
        options={"rk": rk} if rk else None,
        **kw,
    )


def cred_id(att) -> bytes:
    return att.auth_data.credential_data.credential_id


def allow(*ids: bytes) -> list[dict]:
    return [{"type": "public-key", "id": i} for i in ids]


def verify(assertion, client_data_hash: bytes, public_key: dict) -> None:
    CoseKey.for_alg(public_key[3])(public_key).verify(
        bytes(assertion.auth_data) + client_data_hash, assertion.signature
    )


def new_ctap(profile: str = "ctap2.1", **kw) -> tuple[Authenticator, Ctap2]:
    auth = Authenticator(profile, **kw)
    return auth, Ctap2(VirtualCtapDevice(auth))


# -- resident slots ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("profile", "capacity"),
    [("nitrokey-fido2", 8), ("nitrokey-3", 10), ("yubikey-5", 25), ("solokey", 50)],
)
def test_capacity_n_succeed_then_key_store_full(profile: str, capacity: int) -> None:
    auth, ctap = new_ctap(profile)
    for i in range(capacity):
        make(ctap, user=f"user{i}".encode(), rk=True)
    assert len(auth.credentials()) == capacity
    with pytest.raises(CtapError) as exc:
        make(ctap, user=b"one-too-many", rk=True)
    assert exc.value.code == ERR.KEY_STORE_FULL
    assert len(auth.credentials()) == capacity
    # Non-resident credentials are unlimited: they live in the ID, not in a slot.
    for i in range(3):
        make(ctap, user=f"nr{i}".encode())


def test_same_rp_and_user_overwrites_in_place(ctap: Ctap2, auth: Authenticator) -> None:
    first = make(ctap, user=b"alice", rk=True)
    assert ctap.get_info().remaining_disc_creds == 24
    second = make(ctap, user=b"alice", rk=True)
    assert len(auth.credentials()) == 1
    assert ctap.get_info().remaining_disc_creds == 24
    # The overwritten credential is gone; the new one answers.
    with pytest.raises(CtapError) as exc:
        ctap.get_assertion("example.com", os.urandom(32), allow(cred_id(first)))
    assert exc.value.code == ERR.NO_CREDENTIALS
    assertion = ctap.get_assertion("example.com", os.urandom(32), allow(cred_id(second)))
    assert assertion.credential["id"] == cred_id(second)


def test_overwrite_when_full_does_not_need_a_free_slot() -> None:
    auth, ctap = new_ctap("nitrokey-fido2")
    for i in range(8):
        make(ctap, user=f"user{i}".encode(), rk=True)
    make(ctap, user=b"user3", rk=True)
    assert len(auth.credentials()) == 8


def test_usernameless_login_walks_most_recent_first(ctap: Ctap2) -> None:
    made = [make(ctap, user=f"user{i}".encode(), rk=True) for i in range(3)]
    make(ctap, rp="other.example", user=b"elsewhere", rk=True)
    make(ctap, user=b"non-resident")  # must not appear in discovery
    cdh = os.urandom(32)
    first = ctap.get_assertion("example.com", cdh)
    assert first.number_of_credentials == 3
    rest = [ctap.get_next_assertion() for _ in range(2)]
    got = [a.credential["id"] for a in [first, *rest]]
    assert got == [cred_id(a) for a in reversed(made)]
    assert [a.user["id"] for a in [first, *rest]] == [b"user2", b"user1", b"user0"]
    for assertion, att in zip([first, *rest], reversed(made), strict=True):
        verify(assertion, cdh, att.auth_data.credential_data.public_key)
        # Without user verification no identifying user information (CTAP 2.1 §6.2.2).
        assert set(assertion.user) == {"id"}
    with pytest.raises(CtapError) as exc:
        ctap.get_next_assertion()
    assert exc.value.code == ERR.NOT_ALLOWED


def test_get_next_assertion_state_is_cleared_by_other_commands(ctap: Ctap2) -> None:
    for i in range(2):
        make(ctap, user=f"user{i}".encode(), rk=True)
    ctap.get_assertion("example.com", os.urandom(32))
    ctap.get_info()
    with pytest.raises(CtapError) as exc:
        ctap.get_next_assertion()
    assert exc.value.code == ERR.NOT_ALLOWED


def test_get_next_assertion_expires_after_30_seconds(clock: FakeClock) -> None:
    auth, ctap = new_ctap(clock=clock)
    for i in range(3):
        make(ctap, user=f"user{i}".encode(), rk=True)
    ctap.get_assertion("example.com", os.urandom(32))
    clock.advance(29)
    ctap.get_next_assertion()
    clock.advance(2)
    with pytest.raises(CtapError) as exc:
        ctap.get_next_assertion()
    assert exc.value.code == ERR.NOT_ALLOWED


def test_get_next_assertion_without_get_assertion(ctap: Ctap2) -> None:
    with pytest.raises(CtapError) as exc:
        ctap.get_next_assertion()
    assert exc.value.code == ERR.NOT_ALLOWED


# -- non-resident credentials ---------------------------------------------------------------


def test_allow_list_with_foreign_ids_picks_ours(ctap: Ctap2) -> None:
    att = make(ctap)
    others = []
    for _ in range(5):
        _, other_ctap = new_ctap()
        others.append(cred_id(make(other_ctap)))
    cdh = os.urandom(32)
    assertion = ctap.get_assertion(
        "example.com", cdh, allow(*others[:3], cred_id(att), *others[3:])
    )
    assert assertion.credential["id"] == cred_id(att)
    assert assertion.number_of_credentials is None
    verify(assertion, cdh, att.auth_data.credential_data.public_key)


def test_flipped_bit_anywhere_is_not_recognised(ctap: Ctap2) -> None:
    good = cred_id(make(ctap))
    for i in range(len(good) * 8):
        bad = bytearray(good)
        bad[i // 8] ^= 1 << (i % 8)
        with pytest.raises(CtapError) as exc:
            ctap.get_assertion(
                "example.com", os.urandom(32), allow(bytes(bad)), options={"up": False}
            )
        assert exc.value.code == ERR.NO_CREDENTIALS, f"bit {i} flip accepted"
    ctap.get_assertion("example.com", os.urandom(32), allow(good))


def test_id_under_another_rp_is_not_recognised(ctap: Ctap2) -> None:
    good = cred_id(make(ctap, rp="a.example"))
    with pytest.raises(CtapError) as exc:
        ctap.get_assertion("b.example", os.urandom(32), allow(good))
    assert exc.value.code == ERR.NO_CREDENTIALS


def test_empty_allow_list_with_only_non_resident_credentials(ctap: Ctap2, auth) -> None:
    make(ctap)
    make(ctap, user=b"u2")
    with pytest.raises(CtapError) as exc:
        ctap.get_assertion("example.com", os.urandom(32))
    assert exc.value.code == ERR.NO_CREDENTIALS
    # The trace reason tells the RP developer what to do (seed 002).
    assert "allowCredentials" in auth.last_outcome.reason


def test_resident_credential_deleted_stops_working(ctap: Ctap2, auth: Authenticator) -> None:
    att = make(ctap, rk=True)
    assert auth.delete_credential(cred_id(att))
    with pytest.raises(CtapError) as exc:
        ctap.get_assertion("example.com", os.urandom(32), allow(cred_id(att)))
    assert exc.value.code == ERR.NO_CREDENTIALS


def test_signature_counter_is_per_credential(ctap: Ctap2) -> None:
    a, b = cred_id(make(ctap)), cred_id(make(ctap, user=b"u2"))
    counts_a = [
        ctap.get_assertion("example.com", os.urandom(32), allow(a)).auth_data.counter
        for _ in range(3)
    ]
    count_b = ctap.get_assertion("example.com", os.urandom(32), allow(b)).auth_data.counter
    assert counts_a == [1, 2, 3]
    assert count_b == 1


# -- makeCredential parameters ----------------------------------------------------------------


def test_exclude_list_hit_is_credential_excluded(ctap: Ctap2) -> None:
    existing = cred_id(make(ctap))
    _, other = new_ctap()
    foreign = cred_id(make(other))
    with pytest.raises(CtapError) as exc:
        make(ctap, user=b"u2", exclude_list=allow(foreign, existing))
    assert exc.value.code == ERR.CREDENTIAL_EXCLUDED
    make(ctap, user=b"u3", exclude_list=allow(foreign))


def test_algorithm_negotiation_respects_platform_order() -> None:
    # Self attestation, so the statement's alg is the negotiated one too.
    _, ctap = new_ctap(attestation="self")
    params = [
        {"type": "public-key", "alg": -257},
        {"type": "public-key", "alg": -8},
        {"type": "public-key", "alg": -7},
    ]
    att = make(ctap, params=params)
    assert att.auth_data.credential_data.public_key[3] == -8
    assert att.att_stmt["alg"] == -8


def test_unsupported_algorithms_only(ctap: Ctap2) -> None:
    with pytest.raises(CtapError) as exc:
        make(ctap, params=[{"type": "public-key", "alg": -257}])
    assert exc.value.code == ERR.UNSUPPORTED_ALGORITHM
    with pytest.raises(CtapError) as exc:
        make(ctap, params=[{"type": "not-public-key", "alg": -7}])
    assert exc.value.code == ERR.UNSUPPORTED_ALGORITHM


def test_packed_self_attestation_signature() -> None:
    _, ctap = new_ctap(attestation="self")  # the default is batch (test_attestation.py)
    cdh = os.urandom(32)
    att = ctap.make_credential(cdh, {"id": "example.com"}, {"id": b"x"}, ES256)
    assert att.fmt == "packed"
    assert "x5c" not in att.att_stmt
    key = att.auth_data.credential_data.public_key
    CoseKey.for_alg(-7)(key).verify(bytes(att.auth_data) + cdh, att.att_stmt["sig"])
    assert att.auth_data.rp_id_hash == hashlib.sha256(b"example.com").digest()


def test_up_false_in_make_credential_is_invalid_option(ctap: Ctap2) -> None:
    with pytest.raises(CtapError) as exc:
        ctap.make_credential(
            os.urandom(32), {"id": "example.com"}, {"id": b"x"}, ES256, options={"up": False}
        )
    assert exc.value.code == ERR.INVALID_OPTION


def test_silent_assertion_has_no_up_flag(ctap: Ctap2) -> None:
    cid = cred_id(make(ctap))
    assertion = ctap.get_assertion("example.com", os.urandom(32), allow(cid), options={"up": False})
    assert not assertion.auth_data.is_user_present()


def test_rk_option_in_get_assertion_is_unsupported(ctap: Ctap2) -> None:
    with pytest.raises(CtapError) as exc:
        ctap.get_assertion("example.com", os.urandom(32), options={"rk": True})
    assert exc.value.code == ERR.UNSUPPORTED_OPTION


# -- user presence -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("verdict", "code"),
    [
        (Verdict.DENIED, ERR.OPERATION_DENIED),
        (Verdict.TIMEOUT, ERR.USER_ACTION_TIMEOUT),
        (Verdict.CANCELLED, ERR.KEEPALIVE_CANCEL),
    ],
)
def test_presence_refused(verdict: Verdict, code: int) -> None:
    auth, ctap = new_ctap(presence=FixedPresence(verdict))
    with pytest.raises(CtapError) as exc:
        make(ctap, rk=True)
    assert exc.value.code == code
    assert auth.credentials() == []  # nothing stored without presence


def test_presence_requests_name_the_rp() -> None:
    presence = ScriptedPresence()
    _, ctap = new_ctap(presence=presence)
    cid = cred_id(make(ctap, rp="shop.example"))
    ctap.get_assertion("shop.example", os.urandom(32), allow(cid))
    assert [(r.purpose, r.rp_id) for r in presence.requests] == [
        ("makeCredential", "shop.example"),
        ("getAssertion", "shop.example"),
    ]


def test_selection_needs_presence() -> None:
    _, ctap = new_ctap(presence=ScriptedPresence([Verdict.DENIED]))
    with pytest.raises(CtapError) as exc:
        ctap.selection()
    assert exc.value.code == ERR.OPERATION_DENIED
    ctap.selection()


def test_selection_absent_on_ctap_2_0() -> None:
    _, ctap = new_ctap("ctap2.0")
    with pytest.raises(CtapError) as exc:
        ctap.selection()
    assert exc.value.code == ERR.INVALID_COMMAND


def test_uv_option_refused_without_built_in_uv() -> None:
    _, ctap21 = new_ctap("ctap2.1")
    _, ctap20 = new_ctap("ctap2.0")
    for ctap, code in ((ctap21, ERR.INVALID_OPTION), (ctap20, ERR.UNSUPPORTED_OPTION)):
        with pytest.raises(CtapError) as exc:
            ctap.make_credential(
                os.urandom(32), {"id": "example.com"}, {"id": b"x"}, ES256, options={"uv": True}
            )
        assert exc.value.code == code
