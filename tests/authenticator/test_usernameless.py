"""getAssertion with an empty allowList (CTAP 2.1 §6.2.2) walks the RP's discoverable
credentials lazily: the same credentials, in the same order, as the old all-at-once scan, but
only the credential each response names is unwrapped.

The reference below is the scan softkey used to do (every resident credential of the RP
located and unwrapped, credProtect levels 2 and 3 dropped without UV, §12.1, most recent
first); python-fido2 is the platform that walks the device.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fido2.cose import ES256, CoseKey
from fido2.ctap import CtapError
from fido2.ctap2.pin import PinProtocolV2

from softkey.authenticator import Authenticator
from softkey.authenticator.imported import add_credential
from softkey.authenticator.keywrap import KeyWrapper

sys.path.insert(0, str(Path(__file__).parent))  # pinkit: shared helpers (importlib mode)
from pinkit import PERM, RP_ID, Key, cred_id, make, with_pin  # noqa: E402

OTHER_RP = "other.example"


def _uv(key: Key, rp: str = RP_ID) -> bytes:
    return key.client_pin().get_pin_token("1234", PERM.MAKE_CREDENTIAL | PERM.GET_ASSERTION, rp)


def _reference(auth: Authenticator, rp: str, uv: bool) -> list[bytes]:
    """The pre-change semantics: scan, unwrap and filter every resident credential."""
    rp_hash = hashlib.sha256(rp.encode()).digest()
    found = []
    for resident in auth.store.list_resident(rp_hash):
        cand = auth.locate(resident.credential_id, rp_hash)
        if cand is None:
            continue
        if cand.secrets.cred_protect >= 2 and not uv:
            continue
        found.append(cand.credential_id)
    return found


def _walk(key: Key, rp: str, uv: bool) -> tuple[list[bytes], list, bytes]:
    """Every credential a platform gets: getAssertion, then getNextAssertion until done."""
    cdh = os.urandom(32)
    extra = {}
    if uv:
        extra = {
            "pin_uv_param": PinProtocolV2().authenticate(_uv(key, rp), cdh),
            "pin_uv_protocol": 2,
        }
    ctap = key.ctap  # one platform session: a new one would send getInfo, ending the walk
    first = ctap.get_assertion(rp, cdh, **extra)
    got = [first]
    for _ in range((first.number_of_credentials or 1) - 1):
        got.append(ctap.get_next_assertion())
    with pytest.raises(CtapError) as exc:  # and not one more
        ctap.get_next_assertion()
    assert exc.value.code == CtapError.ERR.NOT_ALLOWED
    return [a.credential["id"] for a in got], got, cdh


def _mixed_key() -> tuple[Key, dict[bytes, CoseKey]]:
    """Resident credentials of two RPs with every credProtect level, an overwritten one, a
    deleted one, an imported one and a non-resident one, in a scrambled order."""
    key = with_pin("ctap2.1")
    public: dict[bytes, CoseKey] = {}
    levels = [1, 3, 2, 1, 1, 2, 3, 3, 1, 2, 1, 1]
    for i, level in enumerate(levels):
        for rp in (RP_ID, OTHER_RP) if i % 2 == 0 else (RP_ID,):
            att = make(
                key,
                _uv(key, rp),
                rp=rp,
                rk=True,
                user=f"user{i}".encode(),
                extensions={"credProtect": level},
            )
            public[cred_id(att)] = att.auth_data.credential_data.public_key
    # The same user again: it replaces user3 and becomes the most recent.
    att = make(key, _uv(key), rk=True, user=b"user3", extensions={"credProtect": 1})
    public[cred_id(att)] = att.auth_data.credential_data.public_key
    # A deleted one, a non-resident one: neither is discoverable.
    gone = cred_id(make(key, _uv(key), rk=True, user=b"gone"))
    assert key.auth.delete_credential(gone)
    make(key, _uv(key), user=b"not-resident")
    # An imported resident credential (imported.py) is discoverable like any other.
    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    imported = os.urandom(24)
    add_credential(
        key.auth, imported, RP_ID, pem, user_handle=b"imported", cred_protect=2, resident=True
    )
    public[imported] = ES256.from_cryptography_key(private.public_key())
    make(key, _uv(key), rk=True, user=b"newest", extensions={"credProtect": 1})
    att = make(key, _uv(key), rk=True, user=b"newest")
    public[cred_id(att)] = att.auth_data.credential_data.public_key
    return key, public


@pytest.mark.parametrize("uv", [False, True])
@pytest.mark.parametrize("rp", [RP_ID, OTHER_RP])
def test_same_credentials_in_the_same_order_as_the_full_scan(uv: bool, rp: str) -> None:
    key, public = _mixed_key()
    expected = _reference(key.auth, rp, uv)
    assert len(expected) >= 3  # the walk has something to prove
    ids, got, cdh = _walk(key, rp, uv)
    assert ids == expected
    assert got[0].number_of_credentials == len(expected)
    assert all(a.number_of_credentials is None for a in got[1:])
    users = {c.credential_id: c.user_id for c in key.auth.credentials(rp)}
    for response in got:
        cid = response.credential["id"]
        assert response.user["id"] == users[cid]
        response.verify(cdh, public[cid])  # signed by that very credential
        assert bool(response.auth_data.flags & 0x04) == uv


def test_protected_ones_are_neither_counted_nor_walked_without_uv() -> None:
    key, _ = _mixed_key()
    without = _reference(key.auth, RP_ID, False)
    with_uv = _reference(key.auth, RP_ID, True)
    assert len(without) < len(with_uv)  # levels 2 and 3 exist and are hidden
    assert _walk(key, RP_ID, False)[0] == without


def test_only_the_returned_credential_is_unwrapped(monkeypatch: pytest.MonkeyPatch) -> None:
    key = with_pin("ctap2.1")
    for i in range(20):  # the ctap2.1 profile's 25 slots
        make(key, _uv(key), rk=True, user=b"u%d" % i)
    calls: list[bytes] = []
    real = KeyWrapper.unwrap

    def counting(self: KeyWrapper, credential_id: bytes, rp_id_hash: bytes):  # type: ignore[no-untyped-def]
        calls.append(credential_id)
        return real(self, credential_id, rp_id_hash)

    monkeypatch.setattr(KeyWrapper, "unwrap", counting)
    ctap = key.ctap
    first = ctap.get_assertion(RP_ID, os.urandom(32))
    assert first.number_of_credentials == 20
    assert calls == [first.credential["id"]]  # one unwrap, of the credential answered
    for n in range(2, 21):
        nxt = ctap.get_next_assertion()
        assert len(calls) == n and calls[-1] == nxt.credential["id"]
