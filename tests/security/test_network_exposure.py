"""`softkey run --host` beyond loopback with `--presence auto` is a key anyone on the network can
use: it says so, loudly (issue: local trust boundary, Low)."""

from __future__ import annotations

from pathlib import Path

import pytest

from softkey.tools.run import is_loopback


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.10", False),
        ("example.com", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_auto_presence_on_a_network_address_warns(key_process, tmp_path: Path) -> None:
    exposed = key_process(tmp_path / "a", "--presence", "auto", "--host", "0.0.0.0")
    assert "WARNING" in exposed.stderr.read_text()
    assert "anyone who can reach" in exposed.stderr.read_text()
    local = key_process(tmp_path / "b", "--presence", "auto")
    assert "WARNING" not in local.stderr.read_text()
