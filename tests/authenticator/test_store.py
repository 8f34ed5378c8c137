"""SQLite state: persistence, file modes, crash safety, profile binding."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from fido2.ctap import CtapError
from fido2.ctap2 import Ctap2

from softkey.authenticator import Authenticator, StateError
from softkey.transports.inprocess import VirtualCtapDevice

PARAMS = [{"type": "public-key", "alg": -7}]


def test_state_survives_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "key.sqlite3"
    auth = Authenticator("yubikey-5", path)
    ctap = Ctap2(VirtualCtapDevice(auth))
    nr = ctap.make_credential(os.urandom(32), {"id": "a.example"}, {"id": b"1"}, PARAMS)
    ctap.make_credential(
        os.urandom(32), {"id": "a.example"}, {"id": b"2"}, PARAMS, options={"rk": True}
    )
    nr_id = nr.auth_data.credential_data.credential_id
    ctap.get_assertion("a.example", os.urandom(32), [{"type": "public-key", "id": nr_id}])
    auth.close()

    again = Authenticator(state=path)  # profile comes from the state
    assert again.profile.name == "yubikey-5"
    ctap = Ctap2(VirtualCtapDevice(again))
    got = ctap.get_assertion("a.example", os.urandom(32), [{"type": "public-key", "id": nr_id}])
    assert got.auth_data.counter == 2  # the counter persisted too
    assert ctap.get_assertion("a.example", os.urandom(32)).user == {"id": b"2"}
    assert len(again.credentials()) == 1


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o277])
def test_state_files_are_0600(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        path = tmp_path / "key.sqlite3"
        auth = Authenticator(state=path)
        Ctap2(VirtualCtapDevice(auth)).make_credential(
            os.urandom(32), {"id": "a.example"}, {"id": b"1"}, PARAMS, options={"rk": True}
        )
        for f in path.parent.iterdir():
            assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
        auth.close()
    finally:
        os.umask(old)


def test_profile_mismatch_is_refused_with_guidance(tmp_path: Path) -> None:
    path = tmp_path / "key.sqlite3"
    Authenticator("ctap2.0", path).close()
    with pytest.raises(StateError, match="ctap2.0"):
        Authenticator("ctap2.1", path)


def test_garbage_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "key.sqlite3"
    path.write_bytes(b"this is not sqlite" * 100)
    path.chmod(0o600)
    with pytest.raises(StateError, match="not a softkey state file"):
        Authenticator(state=path)


def test_reset_makes_a_new_master_key(tmp_path: Path) -> None:
    auth = Authenticator(state=tmp_path / "k.sqlite3")
    ctap = Ctap2(VirtualCtapDevice(auth))
    nr = ctap.make_credential(os.urandom(32), {"id": "a.example"}, {"id": b"1"}, PARAMS)
    ctap.reset()
    with pytest.raises(CtapError) as exc:
        ctap.get_assertion(
            "a.example",
            os.urandom(32),
            [{"type": "public-key", "id": nr.auth_data.credential_data.credential_id}],
        )
    assert exc.value.code == CtapError.ERR.NO_CREDENTIALS


CHILD = textwrap.dedent(
    """
    import os, sys
    from softkey.authenticator import Authenticator
    from softkey.authenticator.cbor import encode
    auth = Authenticator("unlimited-rk", sys.argv[1])
    for i in range(100000):
        req = b"\\x01" + encode({1: b"\\0" * 32, 2: {"id": "crash.example"},
                                 3: {"id": b"user%d" % i}, 4: [{"type": "public-key", "alg": -7}],
                                 7: {"rk": True}})
        resp = auth.handle_cbor(req)
        assert resp[0] == 0, resp
        print(i, flush=True)
    """
)


def test_sigkill_never_loses_a_reported_credential(tmp_path: Path) -> None:
    path = tmp_path / "crash.sqlite3"
    reported: set[bytes] = set()
    for round_ in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None
        # Let it write some credentials, then kill it mid-flight without warning.
        lines = []
        deadline = time.monotonic() + 30
        while len(lines) < 5 + 7 * round_ and time.monotonic() < deadline:
            lines.append(proc.stdout.readline())
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        reported |= {f"user{line.split()[0]}".encode() for line in lines if line.strip()}

        auth = Authenticator(state=path)
        users = {c.user_id for c in auth.credentials()}
        assert reported <= users  # every credential reported as created is there
        ctap = Ctap2(VirtualCtapDevice(auth))
        # ... and every stored one is whole: it asserts.
        first = ctap.get_assertion("crash.example", os.urandom(32))
        assert first.number_of_credentials == len(users)
        for _ in range(len(users) - 1):
            ctap.get_next_assertion()
        auth.close()
