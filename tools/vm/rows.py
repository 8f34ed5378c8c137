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
        "Ctap2.get_info() + the raw reply through softkey's strict CBOR decoder",
        "authenticatorGetInfo over CTAPHID CBOR parses in python-fido2, and the raw reply bytes "
        "are canonical CTAP2 CBOR (strict decode, re-encodes to the same bytes)",
    ),
    Row(
        "pyfido2.make_get",
        "python-fido2",
        "make/get non-resident, direct attestation, Fido2Server verifies",
        "makeCredential/getAssertion over hidraw; the packed attestation verifies to the key's "
        "exported root (x5c chain, signature, AAGUID = getInfo's); the assertion verifies",
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
        "clientPIN setPIN / getPinToken over HID; a wrong PIN is PIN_INVALID and takes exactly "
        "one retry, the right PIN restores the count",
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
        "pyfido2.reset_late",
        "python-fido2",
        "Ctap2.reset() more than 10 s after plug-in",
        "a late reset is CTAP2_ERR_NOT_ALLOWED and wipes nothing: the resident credential still "
        "answers and the PIN is still set",
    ),
    Row(
        "pyfido2.reset",
        "python-fido2",
        "softkey replug, then Ctap2.reset()",
        "replug re-creates the HID device and opens the reset window; after reset the PIN is "
        "gone and the resident credential (empty allowList, by ID) and an old non-resident ID "
        "each get CTAP2_ERR_NO_CREDENTIALS",
    ),
    # -- libfido2 command-line tools -----------------------------------------------------------
    Row("libfido2.list", "libfido2", "fido2-token -L", "libfido2 enumerates the key"),
    Row(
        "libfido2.info",
        "libfido2",
        "fido2-token -I vs softkey profiles --json",
        "libfido2 parses getInfo, and its versions, AAGUID, options, algorithms and extensions "
        "equal what `softkey profiles --json` says of the profile",
    ),
    Row(
        "libfido2.cred",
        "libfido2",
        "fido2-cred -M | fido2-cred -V (es256)",
        "non-resident makeCredential; libfido2 checks the attestation signature with the "
        "statement's own certificate (no root: that is pyfido2.make_get)",
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
        "reset after replug; PIN gone; a resident assertion (-r), the resident credential's ID "
        "and an old non-resident ID each fail with FIDO_ERR_NO_CREDENTIALS",
    ),
    # -- a real browser ---------------------------------------------------------------------------
    Row(
        "browser.register",
        "Chromium",
        "navigator.credentials.create, attestation direct, on Xvfb",
        "a real browser registers with the key; Fido2Server checks the packed attestation to "
        "the key's exported root (x5c chain, signature, AAGUID = getInfo's)",
    ),
    Row(
        "browser.register_none",
        "Chromium",
        "navigator.credentials.create, attestation none",
        "the registration most sites do: Fido2Server verifies origin, challenge, RP ID hash, UP",
    ),
    Row(
        "browser.login",
        "Chromium",
        "navigator.credentials.get",
        "the browser logs in with those credentials; Fido2Server verifies the assertion",
    ),
    Row(
        "browser.on_key",
        "python-fido2",
        "the RP's stored credential IDs against softkey",
        "the credentials the browser registered are softkey's: each stored ID answers a silent "
        "getAssertion over hidraw, a random ID gets NO_CREDENTIALS",
    ),
    Row(
        "browser.pin_uv",
        "Chromium",
        "PIN set; get with userVerification=required",
        "Chromium's own PIN dialog (typed with xdotool) gets a PIN token; UV flag verified",
    ),
    Row(
        "browser.screenshot",
        "Chromium",
        "screenshot of the page",
        "what a person would see: the window is titled 'done' and the screenshot shows four "
        "green finished steps and no waiting or failed one (pixels of the page's step colours)",
    ),
    # -- a second browser: Firefox ESR (authenticator-rs) ---------------------------------------
    Row(
        "firefox.register_rk",
        "Firefox ESR",
        "navigator.credentials.create, residentKey required, on Xvfb",
        "Firefox's own WebAuthn stack (authenticator-rs over hidraw) registers a discoverable "
        "credential; Fido2Server verifies the registration",
    ),
    Row(
        "firefox.login_usernameless",
        "Firefox ESR",
        "navigator.credentials.get, empty allowCredentials",
        "the key picks the credential: Fido2Server verifies the assertion and the userHandle is "
        "the registered user id",
    ),
    Row(
        "firefox.on_key",
        "softkey CLI",
        "softkey credentials list + a silent getAssertion",
        "the credential the RP stored is the one resident credential softkey lists for the RP, "
        "and it answers over hidraw",
    ),
    Row(
        "firefox.pin_uv",
        "Firefox ESR",
        "PIN set; usernameless get with userVerification=required",
        "Firefox's own PIN prompt (typed with xdotool) gets a PIN token; the UV flag is verified",
    ),
    # -- daily use on a desktop ----------------------------------------------------------------
    Row(
        "desktop.prompt",
        "dunst + libfido2",
        "softkey service install -> its command on Xvfb + dunst; Approve / Deny in the "
        "notification",
        "the service's command asks in a desktop notification (freedesktop D-Bus, dunst) naming "
        "the site: Approve registers (fido2-cred -V verifies), Deny refuses and stores nothing, "
        "a prompt that never appears fails; SIGTERM unplugs. The VM has no systemd user "
        "manager, so the command `service install` prints is run as the unit would run it",
    ),
    # -- two keys, replug under a client ------------------------------------------------------
    Row(
        "device.two_keys",
        "python-fido2",
        "two softkey run processes at once",
        "two FIDO hidraw nodes, both listed by python-fido2; each registers and logs in "
        "(Fido2Server verified) and answers only for its own credential",
    ),
    Row(
        "device.replug_held",
        "python-fido2",
        "softkey replug while a client holds the node open",
        "the node goes away (the held handle fails) and a new one appears, the other key's node "
        "is untouched, and a credential made before logs in (assertion verified)",
    ),
    # -- docs/ci.md, recipe (c) -------------------------------------------------------------------
    Row(
        "ci.recipe_c",
        "bash + Playwright",
        "docs/ci.md recipe (c): its run steps and its test file, as written",
        "the GitHub Actions recipe works on a real kernel as written: `pip install` of the wheel, "
        "pytest and playwright (offline: the host pre-installs them), `sudo modprobe uhid` (a "
        "real modprobe), `softkey udev --install`, `sg softkey -c 'softkey run ...'`, `softkey "
        "status --wait` names the hidraw node, the test step `xvfb-run -a python -m pytest` runs "
        "the doc's Playwright test, which drives the system Chromium headed to sign up and "
        "sign in on a demo site whose Fido2Server verifies both, the artifacts step lists the "
        "credential and `kill -TERM` unplugs the key. "
        "Not proven: the guest runs as root (`sudo` is a pass-through) and has no udevd, so the "
        "udev rule's permissions are not exercised; the demo site is the harness's, not yours",
    ),
)


def markdown_table() -> str:
    """docs/e2e.md's row table (between its `rows` markers), generated from ROWS."""
    lines = ["| row | client | what runs | what a PASS proves |", "|---|---|---|---|"]
    for row in ROWS:
        cells = [f"`{row.id}`", row.client, row.title, row.proves]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


ROW_IDS = tuple(row.id for row in ROWS)

if __name__ == "__main__":  # python tools/vm/rows.py > the table for docs/e2e.md
    print(markdown_table(), end="")
