"""The e2e plan: every row the VM run must report, in order, and what a PASS proves.

Shared by the host driver (tools/vm/e2e.py), which prints a row the guest never reported as a
FAIL ("not reached"), and the guest (tools/vm/guest_main.py), which runs them. Stdlib only:
the host side may run without the project's venv.
"""

from __future__ import annotations

from dataclasses import dataclass


class RowFailed(Exception):
    """A row failed; the message is its one-line detail (raised by the guest's row code)."""


@dataclass(frozen=True)
class Row:
    id: str
    client: str
    title: str
    proves: str


ROWS: tuple[Row, ...] = (
    Row(
        "vm.boot",
        "kernel",
        "Debian kernel boots, uhid loads, /dev/uhid exists",
        "the guest really has UHID (the host kernel does not)",
    ),
    Row(
        "device.hidraw",
        "softkey",
        "softkey run --transport uhid -> FIDO hidraw node",
        "UHID_CREATE2 with the FIDO report descriptor makes the kernel publish /dev/hidrawN "
        "with usage page 0xF1D0",
    ),
    # -- python-fido2 over hidraw -------------------------------------------------------------
    Row(
        "pyfido2.enumerate",
        "python-fido2",
        "CtapHidDevice.list_devices() finds the key",
        "the descriptor, bus (USB) and CTAPHID INIT are accepted by python-fido2's HID layer",
    ),
    Row(
        "pyfido2.getinfo",
        "python-fido2",
        "Ctap2.get_info()",
        "authenticatorGetInfo over CTAPHID CBOR, canonical CBOR accepted by a strict client",
    ),
    Row(
        "pyfido2.make_get",
        "python-fido2",
        "make/get non-resident, Fido2Server verifies",
        "makeCredential/getAssertion over hidraw; attestation and assertion signatures verify",
    ),
    Row(
        "pyfido2.make_get_rk",
        "python-fido2",
        "make/get resident (usernameless)",
        "a discoverable credential is stored and found with an empty allowList",
    ),
    Row(
        "pyfido2.clientpin",
        "python-fido2",
        "ClientPin: set PIN, get token, retries",
        "clientPIN setPIN / getPinToken (pinUvAuthToken) over HID",
    ),
    Row(
        "pyfido2.uv",
        "python-fido2",
        "make/get with user verification via PIN",
        "pinUvAuthParam is accepted and the UV flag is set and signed",
    ),
    Row(
        "pyfido2.credman",
        "python-fido2",
        "CredentialManagement: metadata/enumerate/delete",
        "authenticatorCredentialManagement over HID, when getInfo advertises it",
    ),
    Row(
        "pyfido2.reset",
        "python-fido2",
        "softkey replug, then Ctap2.reset()",
        "the control socket's replug re-creates the HID device and opens the reset window; "
        "reset clears PIN and resident credentials",
    ),
    # -- libfido2 command-line tools -----------------------------------------------------------
    Row("libfido2.list", "libfido2", "fido2-token -L", "libfido2 enumerates the key"),
    Row("libfido2.info", "libfido2", "fido2-token -I", "libfido2 parses getInfo"),
    Row(
        "libfido2.cred",
        "libfido2",
        "fido2-cred -M | fido2-cred -V (es256)",
        "non-resident makeCredential; libfido2 verifies the attestation",
    ),
    Row(
        "libfido2.assert",
        "libfido2",
        "fido2-assert -G | fido2-assert -V",
        "getAssertion with the credential ID; signature verifies with the credential key",
    ),
    Row("libfido2.cred_rk", "libfido2", "fido2-cred -M -r | -V", "resident makeCredential"),
    Row(
        "libfido2.assert_rk",
        "libfido2",
        "fido2-assert -G -r | -V",
        "discoverable getAssertion returns the user id; signature verifies",
    ),
    Row(
        "libfido2.setpin",
        "libfido2",
        "fido2-token -S (PIN typed on a pty)",
        "setPIN with libfido2's key agreement; getInfo then reports clientPin=true",
    ),
    Row(
        "libfido2.list_rps",
        "libfido2",
        "fido2-token -L -r",
        "credential management enumerateRPs with a PIN token",
    ),
    Row(
        "libfido2.list_creds",
        "libfido2",
        "fido2-token -L -k RP",
        "credential management enumerateCredentials",
    ),
    Row(
        "libfido2.delete",
        "libfido2",
        "fido2-token -D -i ID",
        "credential management deleteCredential; the credential is gone afterwards",
    ),
    # -- OpenSSH ---------------------------------------------------------------------------------
    Row(
        "ssh.ed25519_sk",
        "OpenSSH",
        "ssh-keygen -t ed25519-sk",
        "an EdDSA (alg -8) credential made through OpenSSH's libfido2 middleware",
    ),
    Row(
        "ssh.sign_verify",
        "OpenSSH",
        "ssh-keygen -Y sign / -Y verify",
        "an sk signature (getAssertion) verifies; a tampered message does not",
    ),
    Row(
        "ssh.ecdsa_sk_rk",
        "OpenSSH",
        "ssh-keygen -t ecdsa-sk -O resident",
        "a resident ES256 credential made with the PIN",
    ),
    Row(
        "ssh.download",
        "OpenSSH",
        "ssh-keygen -K",
        "the resident key is downloaded (credential management) and matches",
    ),
    # -- reset -------------------------------------------------------------------------------------
    Row(
        "libfido2.reset",
        "libfido2",
        "softkey replug, then fido2-token -R within 10 s",
        "reset after replug; PIN gone, old credential IDs no longer recognised",
    ),
    # -- a real browser ---------------------------------------------------------------------------
    Row(
        "browser.register",
        "Chromium",
        "navigator.credentials.create on Xvfb",
        "a real browser registers with the key; Fido2Server verifies the attestation",
    ),
    Row(
        "browser.login",
        "Chromium",
        "navigator.credentials.get",
        "the browser logs in with that credential; Fido2Server verifies the assertion",
    ),
    Row(
        "browser.pin_uv",
        "Chromium",
        "PIN set; get with userVerification=required",
        "Chromium's own PIN dialog (typed with xdotool) gets a PIN token; UV flag verified",
    ),
    Row("browser.screenshot", "Chromium", "screenshot of the page", "what the person would see"),
    # -- docs/ci.md, recipe (c) -------------------------------------------------------------------
    Row(
        "ci.recipe_c",
        "bash",
        "docs/ci.md recipe (c): its run steps as written",
        "the GitHub Actions recipe's shell steps work on a real kernel: the wheel installs, "
        "modprobe, the udev verb, sg + softkey run, status --wait finds the hidraw node, a "
        "python-fido2 register+login in the test step's place, artifacts, unplug on kill",
    ),
)

ROW_IDS = tuple(row.id for row in ROWS)
