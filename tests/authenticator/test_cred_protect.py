"""credProtect (CTAP 2.1 §12.1): each discoverability rule has a test that fails without it.

UV here is a pinUvAuthToken from python-fido2's ClientPin (the key has no built-in UV).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # pinkit: shared helpers (importlib mode)
from pinkit import (  # noqa: E402
    ERR,
    PERM,
    RP_ID,
    Key,
    assertion,
    cred_id,
    make,
    status_of,
    with_pin,
)


def uv(key: Key) -> bytes:
    return key.client_pin().get_pin_token("1234", PERM.MAKE_CREDENTIAL | PERM.GET_ASSERTION, RP_ID)


def protected(key: Key, level: int, *, rk: bool, user: bytes = b"user") -> bytes:
    att = make(key, uv(key), rk=rk, user=user, extensions={"credProtect": level})
    assert att.auth_data.extensions == {"credProtect": level}
    return cred_id(att)


@pytest.fixture
def key() -> Key:
    return with_pin("ctap2.1")


@pytest.mark.parametrize("level", [2, 3])
def test_discovery_without_uv_hides_levels_2_and_3(key: Key, level: int) -> None:
    protected(key, level, rk=True)
    assert status_of(assertion, key) == ERR.NO_CREDENTIALS
    got = assertion(key, uv(key))
    assert got.user["id"] == b"user"


def test_discovery_without_uv_still_finds_level_1(key: Key) -> None:
    protected(key, 1, rk=True)
    assert assertion(key).user == {"id": b"user"}


def test_discovery_counts_only_what_it_may_show(key: Key) -> None:
    protected(key, 1, rk=True, user=b"open")
    protected(key, 2, rk=True, user=b"listed")
    protected(key, 3, rk=True, user=b"secret")
    plain = assertion(key)
    assert plain.user["id"] == b"open" and plain.number_of_credentials in (None, 1)
    verified = assertion(key, uv(key))
    assert verified.number_of_credentials == 3


@pytest.mark.parametrize("rk", [False, True])
def test_level_2_works_with_its_id_without_uv(key: Key, rk: bool) -> None:
    cid = protected(key, 2, rk=rk)
    got = assertion(key, allow=[cid])
    assert got.credential["id"] == cid and not got.auth_data.is_user_verified()


@pytest.mark.parametrize("rk", [False, True])
def test_level_3_needs_uv_even_with_its_id(key: Key, rk: bool) -> None:
    cid = protected(key, 3, rk=rk)
    assert status_of(assertion, key, allow=[cid]) == ERR.NO_CREDENTIALS
    got = assertion(key, uv(key), allow=[cid])
    assert got.credential["id"] == cid and got.auth_data.is_user_verified()


@pytest.mark.parametrize("rk", [False, True])
def test_exclude_list_does_not_disclose_level_3_without_uv(key: Key, rk: bool) -> None:
    cid = protected(key, 3, rk=rk, user=b"first")
    exclude = [{"type": "public-key", "id": cid}]
    # Without UV the level-3 credential stays invisible: registration proceeds.
    att = make(key, user=b"second", exclude_list=exclude)
    assert cred_id(att) != cid
    # With UV the device admits it already holds a credential for this RP.
    status = status_of(make, key, uv(key), user=b"third", rk=rk, exclude_list=exclude)
    assert status == ERR.CREDENTIAL_EXCLUDED


def test_exclude_list_discloses_level_2_without_uv(key: Key) -> None:
    cid = protected(key, 2, rk=False)
    exclude = [{"type": "public-key", "id": cid}]
    assert status_of(make, key, user=b"second", exclude_list=exclude) == ERR.CREDENTIAL_EXCLUDED


def test_unknown_level_is_ignored(key: Key) -> None:
    att = make(key, uv(key), rk=True, extensions={"credProtect": 4})
    assert not att.auth_data.extensions
    assert assertion(key).user == {"id": b"user"}  # stored as level 1: discoverable


def test_level_survives_a_restart(tmp_path) -> None:
    from softkey.authenticator import Authenticator, FakeClock

    state = tmp_path / "key.db"
    key = Key(Authenticator("ctap2.1", state=state), FakeClock())
    key.client_pin().set_pin("1234")
    cid = protected(key, 3, rk=False)
    key.auth.close()
    key = Key(Authenticator(state=state), FakeClock())
    assert status_of(assertion, key, allow=[cid]) == ERR.NO_CREDENTIALS
    assert assertion(key, uv(key), allow=[cid]).credential["id"] == cid
