"""`fill` (tools/admin.py) on a key that already holds credentials: it neither lists nor
unwraps them, so its cost per credential does not grow with the key (issue 15). Its user
numbering still continues after the highest existing PREFIX-N."""

from __future__ import annotations

import pytest

from softkey.authenticator import Authenticator
from softkey.authenticator.keywrap import KeyWrapper
from softkey.authenticator.store import Store
from softkey.tools import admin

RP = "fill.softkey.test"


def _watch(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Count unwraps and full listings of the slot table."""
    seen = {"unwrap": 0, "list": 0}
    unwrap, list_resident = KeyWrapper.unwrap, Store.list_resident

    def counting_unwrap(self, credential_id, rp_id_hash):  # type: ignore[no-untyped-def]
        seen["unwrap"] += 1
        return unwrap(self, credential_id, rp_id_hash)

    def counting_list(self, rp_id_hash=None):  # type: ignore[no-untyped-def]
        seen["list"] += 1
        return list_resident(self, rp_id_hash)

    monkeypatch.setattr(KeyWrapper, "unwrap", counting_unwrap)
    monkeypatch.setattr(Store, "list_resident", counting_list)
    return seen


def test_fill_touches_no_existing_credential(monkeypatch: pytest.MonkeyPatch) -> None:
    auth = Authenticator("unlimited-rk")
    assert admin.fill(auth, count=150)["created"] == 150
    seen = _watch(monkeypatch)
    result = admin.fill(auth, count=3)
    assert result["users"] == ["user-0151", "user-0152", "user-0153"]
    assert seen == {"unwrap": 0, "list": 0}
    assert admin.dispatch(auth, "slots") == {
        "ok": True,
        "result": {"used": 153, "capacity": None, "free": None},
    }
    assert seen == {"unwrap": 0, "list": 0}


def test_numbering_continues_after_the_highest_matching_name() -> None:
    auth = Authenticator("unlimited-rk")
    admin.fill(auth, count=2, user_prefix="bob")
    admin.fill(auth, count=1, user_prefix="bob", start=41)  # a gap: bob-0041
    admin.fill(auth, count=1, user_prefix="bob-x")  # bob-x-0001: another prefix
    admin.fill(auth, count=1, user_prefix="b", start=900)  # b-0900: a shorter prefix
    admin.fill(auth, count=1, user_prefix="bob", rp="other.example", start=500)  # other RP
    assert admin.fill(auth, count=1, user_prefix="bob")["users"] == ["bob-0042"]
    assert admin.fill(auth, count=1, user_prefix="bob-x")["users"] == ["bob-x-0002"]
    assert admin.fill(auth, count=1, user_prefix="b")["users"] == ["b-0901"]
    assert admin.fill(auth, count=1, user_prefix="carol")["users"] == ["carol-0001"]
    names = {c.user_name for c in auth.credentials(RP)}
    assert {"bob-0001", "bob-0002", "bob-0041", "bob-0042", "bob-x-0001", "b-0900"} <= names
