"""Our command and status tables agree with python-fido2's (an independent transcription)."""

from __future__ import annotations

from fido2.ctap import CtapError as Fido2Error
from fido2.ctap2 import Ctap2

from softkey.authenticator.ctap import Cmd, Status

_RENAMED_CMDS = {
    "CREDENTIAL_MANAGEMENT": "CREDENTIAL_MGMT",
    "CREDENTIAL_MANAGEMENT_PRE": "CREDENTIAL_MGMT_PRE",
}


def test_command_bytes_match_python_fido2() -> None:
    theirs = {c.name: c.value for c in Ctap2.CMD}
    for cmd in Cmd:
        assert theirs[_RENAMED_CMDS.get(cmd.name, cmd.name)] == cmd.value, cmd.name
    assert len(theirs) == len(Cmd)


def test_status_codes_match_python_fido2() -> None:
    theirs = {e.name: e.value for e in Fido2Error.ERR}
    for status in Status:
        assert theirs[status.name] == status.value, status.name
