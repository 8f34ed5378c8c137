"""`softkey demo` tells the seeds' story with real numbers from the device."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from softkey.tools.cli import cli


@pytest.mark.parametrize(("profile", "capacity"), [("nitrokey-fido2", 8), ("yubikey-5", 25)])
def test_demo_story(profile: str, capacity: int) -> None:
    result = CliRunner().invoke(cli, ["demo", "--profile", profile])
    assert result.exit_code == 0, result.output
    out = result.output
    assert f"KEY_STORE_FULL after {capacity} resident credentials" in out
    assert f"passkeys.example: {capacity} accounts offered" in out
    assert "github.example:   NO_CREDENTIALS" in out
    assert "signed (counter 1)" in out
    # After reset all three old non-resident IDs fail.
    assert out.count("old ID") == 3
    assert "still works" not in out
