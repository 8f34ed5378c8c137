"""The desktop e2e row's logic on this host: a real dunst on Xvfb answers `--presence desktop`.

tools/vm/guest_desktop.py runs in the VM over UHID with libfido2; here the same
DesktopSession (Xvfb, a private session bus, Debian's dunst with a scripted action menu)
serves a `softkey run --transport udp --presence desktop`, and python-fido2 registers:
Approve chosen in dunst's menu makes the credential, Deny refuses it and stores nothing.
Skipped only when those programs are not installed (apt install xvfb dunst dbus-x11).
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fido2.ctap import CtapError
from fido2.ctap2 import Ctap2

from softkey.transports.udp import open_udp_device

REPO = Path(__file__).resolve().parents[2]
VM_DIR = REPO / "tools" / "vm"
RP = {"id": "desktop.example", "name": "Desktop"}


@pytest.fixture
def guest_desktop(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.syspath_prepend(str(VM_DIR))
    for name in ("guest_desktop", "rows"):
        sys.modules.pop(name, None)
    return importlib.import_module("guest_desktop")


@pytest.fixture
def session(guest_desktop: Any, tmp_path: Path) -> Iterator[Any]:
    desktop = guest_desktop.DesktopSession(tmp_path / "desktop", tmp_path / "logs")
    try:
        desktop.start()
    except guest_desktop.DesktopUnavailable as exc:
        desktop.stop()
        if "is not installed" in str(exc):
            pytest.skip(f"{exc} (apt install xvfb dunst dbus-x11)")
        raise
    yield desktop
    desktop.stop()


class Register:
    """python-fido2's makeCredential, blocking on the key's presence check, in a thread."""

    def __init__(self, port: int, name: str) -> None:
        self.result: Any = None
        self.error: BaseException | None = None

        def target() -> None:
            try:
                ctap = Ctap2(open_udp_device("127.0.0.1", port, timeout=60))
                self.result = ctap.make_credential(
                    os.urandom(32), RP, {"id": name.encode(), "name": name},
                    [{"type": "public-key", "alg": -7}], options={"rk": True},
                )  # fmt: skip
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                self.error = exc

        self.thread = threading.Thread(target=target)
        self.thread.start()

    def finish(self) -> None:
        self.thread.join(60)
        assert not self.thread.is_alive()


def test_approve_and_deny_in_dunsts_menu(session: Any, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOFTKEY_")}
    env.update(session.env, XDG_DATA_HOME=str(tmp_path / "data"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "softkey.tools.cli", "run", "--key", "d", "--transport", "udp",
         "--port", "0", "--presence", "desktop", "--ready-json"],
        cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip

    def used() -> int:
        res = subprocess.run(
            [sys.executable, "-m", "softkey.tools.cli", "info", "--key", "d", "--json"],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        return int(json.loads(res.stdout)["resident_credentials"]["used"])

    try:
        assert proc.stdout is not None
        port = json.loads(proc.stdout.readline())["address"]["port"]
        approved = Register(port, "alice")
        assert session.wait_for_prompt(60, approved.thread.is_alive), "no prompt appeared"
        menu = session.choose("approve")
        assert any(line.startswith("#Approve (Security key: register") for line in menu), menu
        assert any(line.startswith("#Deny (") for line in menu), menu
        approved.finish()
        assert approved.error is None, approved.error
        assert approved.result.auth_data.is_user_present()
        assert used() == 1
        shown = next(n for n in session.history() if n["appname"] == "softkey")
        assert "Site: desktop.example" in shown["body"] and "User: alice" in shown["body"]

        denied = Register(port, "mallory")
        assert session.wait_for_prompt(60, denied.thread.is_alive), "no prompt appeared"
        session.choose("deny")
        denied.finish()
        assert isinstance(denied.error, CtapError), denied.error
        assert denied.error.code == CtapError.ERR.OPERATION_DENIED
        assert used() == 1  # Deny stored nothing
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "asking on the desktop" in err and "softkey: approved" in err
    assert "softkey: denied" in err
    assert "no desktop prompt" not in err
