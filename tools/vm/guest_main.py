"""Runs inside the e2e VM (as root, chrooted into the host's root with a tmpfs overlay).

Starts softkey on /dev/uhid, then drives it with clients nobody here wrote: python-fido2 over
hidraw, libfido2's command-line tools, OpenSSH and Chromium. Every row in tools/vm/rows.py is
reported exactly once to /e2e-out/results.jsonl as PASS or FAIL with a one-line detail; the
full transcript of each row is in /e2e-out/logs/<row>.log. A row whose prerequisite failed
is a FAIL that names the prerequisite: nothing is skipped silently.

Usage (written by tools/vm/e2e.py into guest-entry.sh): python guest_main.py /e2e-out
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import pty
import re
import select
import shlex
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import guest_browser  # noqa: E402
from rows import ROW_IDS  # noqa: E402
from rows import RowFailed as Fail  # noqa: E402

PIN = "e2e-4711"
WORK = Path("/tmp/e2e")
FIDO_USAGE_PAGE = bytes.fromhex("06d0f1")  # report descriptor: Usage Page (0xF1D0)


@dataclass
class CmdResult:
    argv: list[str]
    rc: int
    out: str
    seconds: float
    prompts: int = 0  # PIN prompts answered (pty runs)


@dataclass
class Suite:
    out: Path
    config: dict[str, Any]
    results: dict[str, str] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)  # what later rows need
    log_file: Any = None
    device: Any = None
    phase_error: str | None = None
    cleanups: list[Callable[[], None]] = field(default_factory=list)

    # -- reporting ----------------------------------------------------------------------------

    def report(self, rid: str, status: str, detail: str, seconds: float | None) -> None:
        assert rid in ROW_IDS, rid
        self.results[rid] = status
        rec = {"id": rid, "status": status, "detail": detail, "seconds": seconds}
        with open(self.out / "results.jsonl", "a") as fh:
            fh.write(json.dumps(rec) + "\n")
        print(f"E2E {status} {rid}: {detail}", flush=True)

    def wanted(self, rid: str) -> bool:
        only = self.config.get("only")
        return not only or any(rid.startswith(prefix) for prefix in only)

    def run_row(self, rid: str, func: Callable[[Suite], str], needs: Sequence[str] = ()) -> None:
        if not self.wanted(rid):
            self.report(rid, "FAIL", "not run (--only)", None)
            return
        if self.phase_error:
            self.report(rid, "FAIL", self.phase_error, None)
            return
        missing = [n for n in needs if self.results.get(n) != "PASS"]
        if missing:
            self.report(rid, "FAIL", f"needs {', '.join(missing)}, which did not pass", None)
            return
        print(f"E2E start {rid}", flush=True)
        started = time.monotonic()
        with open(self.out / "logs" / f"{rid}.log", "w") as self.log_file:
            try:
                detail = func(self)
                status = "PASS"
            except Fail as exc:
                detail, status = str(exc), "FAIL"
                self.log(f"FAIL: {exc}")
            except Exception as exc:  # any client exception is a failed row, with a trace
                detail, status = f"{type(exc).__name__}: {exc}", "FAIL"
                self.log(traceback.format_exc())
        self.log_file = None
        self.report(rid, status, detail.replace("\n", " ")[:300], time.monotonic() - started)

    def end_group(self) -> None:
        """Release what the last client family started (a browser, its RP server, Xvfb)."""
        while self.cleanups:
            with suppress(Exception):
                self.cleanups.pop()()

    def fresh_key(self, name: str) -> None:
        """Give the next client family its own new key (see Device)."""
        self.end_group()
        close_pyfido2(self)
        if self.device is None:  # device.hidraw failed; its dependants say so
            return
        started = time.monotonic()
        try:
            node = self.device.fresh(name)
        except Exception as exc:
            self.phase_error = f"a fresh key for the {name} rows did not come up: {exc}"
            print(f"E2E {self.phase_error}", flush=True)
            return
        self.phase_error = None
        print(f"E2E fresh key {name!r} on {node} ({time.monotonic() - started:.1f} s)", flush=True)

    def log(self, text: str) -> None:
        if self.log_file is not None:
            self.log_file.write(text.rstrip("\n") + "\n")
            self.log_file.flush()

    # -- running clients ----------------------------------------------------------------------

    def run(
        self,
        argv: Sequence[str],
        *,
        input: str | None = None,
        timeout: float = 120,
        cwd: Path | None = None,
    ) -> CmdResult:
        """Run a client with stdin/stdout as pipes (no tty, so it never prompts)."""
        self.log(f"$ {shlex.join(argv)}")
        started = time.monotonic()
        try:
            proc = subprocess.run(
                list(argv), input=input, capture_output=True, text=True, timeout=timeout,
                cwd=cwd, check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired as exc:
            self.log(f"(timed out after {timeout} s) {exc.stdout!r} {exc.stderr!r}")
            raise Fail(f"{argv[0]} timed out after {timeout:.0f} s") from exc
        except FileNotFoundError as exc:
            raise Fail(f"{argv[0]} is not installed") from exc
        out = (proc.stdout or "") + (proc.stderr or "")
        res = CmdResult(list(argv), proc.returncode, out, time.monotonic() - started)
        self.log(f"{out.rstrip()}\n(exit {proc.returncode}, {res.seconds:.1f} s)")
        return res

    def run_pty(
        self,
        argv: Sequence[str],
        *,
        pin: str | None,
        timeout: float = 120,
        cwd: Path | None = None,
    ) -> CmdResult:
        """Run a client on a fresh pty and type the PIN whenever it asks for one.

        libfido2's tools and ssh-keygen read PINs from /dev/tty (readpassphrase), so a pipe
        would not do. ``pin=None`` means no PIN is expected: a prompt is a failure.
        """
        self.log(f"$ {shlex.join(argv)}   (on a pty)")
        started = time.monotonic()
        pid, fd = pty.fork()
        if pid == 0:  # child
            try:
                if cwd is not None:
                    os.chdir(cwd)
                os.execvp(argv[0], list(argv))
            finally:
                os._exit(127)
        buf = b""
        answered_upto = 0
        prompts = 0
        prompt_re = re.compile(rb"PIN[^\n]*:\s*$")
        deadline = started + timeout
        killed = None
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                killed = f"timed out after {timeout:.0f} s"
                break
            ready, _, _ = select.select([fd], [], [], min(left, 0.5))
            if ready:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:  # EIO: the child closed the pty
                    break
                if not chunk:
                    break
                buf += chunk
            tail = buf[answered_upto:]
            if prompt_re.search(tail):
                if pin is None:
                    killed = "asked for a PIN although none is set"
                    break
                time.sleep(0.2)  # let it finish turning off echo before we type
                os.write(fd, pin.encode() + b"\n")
                prompts += 1
                answered_upto = len(buf)
        if killed:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        os.close(fd)
        rc = os.waitstatus_to_exitcode(status)
        out = buf.decode(errors="replace").replace("\r\n", "\n")
        res = CmdResult(list(argv), rc, out, time.monotonic() - started, prompts)
        self.log(f"{out.rstrip()}\n(exit {rc}, {res.seconds:.1f} s, {prompts} PIN prompt(s))")
        if killed:
            raise Fail(f"{argv[0]} {killed}")
        return res

    def check(self, res: CmdResult, what: str) -> CmdResult:
        if res.rc != 0:
            last = [ln for ln in res.out.strip().splitlines() if ln.strip()][-1:] or [""]
            raise Fail(f"{what} exited {res.rc}: {last[0][:160]}")
        return res


# -- the device under test -------------------------------------------------------------------


def fido_hidraw_nodes() -> dict[str, str]:
    """hidraw node -> its sysfs device path, for nodes whose descriptor is FIDO's."""
    nodes = {}
    for cls in sorted(Path("/sys/class/hidraw").glob("hidraw*")):
        with suppress(OSError):
            desc = (cls / "device" / "report_descriptor").read_bytes()
            if desc.startswith(FIDO_USAGE_PAGE):
                nodes[f"/dev/{cls.name}"] = os.path.realpath(cls / "device")
    return nodes


class Device:
    """softkey (or the --device-cmd override) serving /dev/uhid, and its control verbs.

    Each client family gets a fresh key (its own state file), so one family's failure (say a
    PIN left set) cannot turn into confusing failures in the next.
    """

    def __init__(self, suite: Suite) -> None:
        cfg = suite.config
        self.repo = Path(cfg["repo"])
        self.softkey = str(self.repo / ".venv" / "bin" / "softkey")
        self.override = cfg.get("device_cmd")
        self.profile = cfg["profile"]
        self.state = WORK / "first.db"
        self.proc: subprocess.Popen | None = None
        self.node: str | None = None
        self.sysdev: str | None = None
        self.plugged_at = 0.0  # when the current node appeared (the reset window's start)
        self.others: set[str | None] = set()  # other keys' sysfs devices: never ours
        self.log_path = suite.out / "logs" / "softkey.log"

    def argv(self) -> list[str]:
        if self.override:
            return [a.replace("{state}", str(self.state)) for a in self.override]
        return [
            self.softkey, "run", "--transport", "uhid", "--state", str(self.state),
            "--profile", self.profile, "--presence", "auto",
        ]  # fmt: skip

    def start(self, name: str) -> None:
        WORK.mkdir(parents=True, exist_ok=True)
        self.state = WORK / f"{name}.db"
        argv = self.argv()
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== key {name!r}\n$ {shlex.join(argv)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip

    def fresh(self, name: str, timeout: float = 90) -> str:
        """Stop the running key (if any), start a new one, return its hidraw node."""
        old = self.sysdev
        self.stop()
        self.start(name)
        return self.wait_node(timeout, not_sysdev=old)

    def wait_node(self, timeout: float, *, not_sysdev: str | None = None) -> str:
        """Wait for a FIDO hidraw node (a new instance if ``not_sysdev`` is given)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise Fail(f"softkey exited with status {self.proc.returncode} (see softkey.log)")
            for node, sysdev in fido_hidraw_nodes().items():
                if sysdev != not_sysdev and sysdev not in self.others:
                    self.node, self.sysdev = node, sysdev
                    self.plugged_at = time.monotonic()
                    return node
            time.sleep(0.1)
        raise Fail(f"no FIDO hidraw node appeared within {timeout:.0f} s")

    def control(self, suite: Suite, verb: str, timeout: float = 60) -> CmdResult:
        """`softkey <verb>` against the running key (control socket)."""
        argv = [self.softkey, verb, "--state", str(self.state)]
        return suite.check(suite.run(argv, timeout=timeout), f"softkey {verb}")

    def replug(self, suite: Suite) -> tuple[str, float]:
        """Unplug + replug through the control socket; return (new node, seconds it took)."""
        old = self.sysdev
        started = time.monotonic()
        self.control(suite, "replug")
        node = self.wait_node(20, not_sysdev=old)
        suite.log(f"replugged: {old} -> {self.sysdev} ({node})")
        return node, time.monotonic() - started

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None


# -- rows: the VM and the device --------------------------------------------------------------


def row_vm_boot(s: Suite) -> str:
    uname = os.uname().release
    if not Path("/dev/uhid").exists():
        raise Fail(f"kernel {uname}: /dev/uhid missing (uhid module not loaded?)")
    modules = Path("/proc/modules").read_text()
    if not re.search(r"^uhid ", modules, re.M):
        raise Fail("uhid is not in /proc/modules")
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    # Loopback for the browser's relying party on http://localhost.
    res = subprocess.run(["busybox", "ip", "link", "set", "lo", "up"], check=False)
    if res.returncode != 0:
        raise Fail("cannot bring up the loopback interface (busybox ip link set lo up)")
    return f"kernel {uname}, /dev/uhid present, guest up {uptime:.1f} s"


def row_device(s: Suite) -> str:
    dev = Device(s)
    s.device = dev
    started = time.monotonic()
    dev.start("python-fido2")
    s.log(f"started: {shlex.join(dev.argv())}")
    node = dev.wait_node(90)
    hid_id = ""
    with suppress(OSError):
        uevent = Path(dev.sysdev or "", "uevent").read_text()
        hid_id = re.search(r"HID_ID=(\S+)", uevent).group(1)  # type: ignore[union-attr]
    s.log(f"node {node}, sysfs {dev.sysdev}, HID_ID={hid_id}")
    if not hid_id.startswith("0003:"):
        raise Fail(f"{node} has HID_ID={hid_id}, not bus USB (0003): libfido2 would ignore it")
    how = "override: " + dev.argv()[0] if dev.override else "softkey run --transport uhid"
    return f"{node} HID_ID={hid_id} after {time.monotonic() - started:.1f} s ({how})"


# -- rows: python-fido2 -------------------------------------------------------------------------

ORIGIN = "https://e2e.softkey.example"
RP_ID = "e2e.softkey.example"


def close_pyfido2(s: Suite) -> None:
    dev = s.facts.pop("pydev", None)
    if dev is not None:
        with suppress(Exception):
            dev.close()


def _pyfido2_device(s: Suite) -> Any:
    """The key as python-fido2 sees it; one open handle at a time.

    hidraw hands every input report to every open file descriptor, so a second open
    CtapHidDevice would later read the first one's replies ("Wrong channel").
    """
    from fido2.hid import CtapHidDevice

    cached = s.facts.get("pydev")
    if (
        cached is not None
        and cached.descriptor.path == s.device.node
        and s.facts.get("pydev_sysdev") == s.device.sysdev
    ):
        return cached
    close_pyfido2(s)
    devices = list(CtapHidDevice.list_devices())
    s.log(f"CtapHidDevice.list_devices(): {[d.descriptor for d in devices]}")
    found = None
    for dev in devices:
        if dev.descriptor.path == s.device.node and found is None:
            found = dev
        else:
            dev.close()
    if found is None:
        raise Fail(f"CtapHidDevice.list_devices() did not list {s.device.node}")
    s.facts["pydev"], s.facts["pydev_sysdev"] = found, s.device.sysdev
    return found


def _client(s: Suite, dev: Any, pin: str | None = None) -> Any:
    from fido2.client import DefaultClientDataCollector, Fido2Client, UserInteraction

    class Person(UserInteraction):
        def request_pin(self, permissions: Any, rp_id: str | None) -> str | None:
            s.log(f"client asked for the PIN (permissions {permissions!r})")
            return pin

    return Fido2Client(dev, DefaultClientDataCollector(ORIGIN), user_interaction=Person())


def _register_login(
    s: Suite,
    dev: Any,
    *,
    resident: bool,
    uv: str,
    pin: str | None,
    verify_attestation: bool = False,
) -> Any:
    from fido2.ctap2 import Ctap2
    from fido2.server import Fido2Server
    from fido2.webauthn import (
        PublicKeyCredentialRpEntity,
        PublicKeyCredentialUserEntity,
        ResidentKeyRequirement,
    )

    client = _client(s, dev, pin)
    rp = PublicKeyCredentialRpEntity(id=RP_ID, name="softkey e2e")
    if verify_attestation:
        from attestation_check import chain_verifier

        aaguid = bytes(Ctap2(dev).get_info().aaguid)
        verifier = chain_verifier(guest_browser.trusted_root(s), aaguid)
        server = Fido2Server(rp, attestation="direct", verify_attestation=verifier)
    else:
        server = Fido2Server(rp)
    user_id = os.urandom(16)
    user = PublicKeyCredentialUserEntity(id=user_id, name="alice", display_name="Alice")
    rk = ResidentKeyRequirement.REQUIRED if resident else ResidentKeyRequirement.DISCOURAGED
    options, state = server.register_begin(user, resident_key_requirement=rk, user_verification=uv)
    registration = client.make_credential(options.public_key)
    auth_data = server.register_complete(state, registration)
    cred = auth_data.credential_data
    s.log(f"registered {cred.credential_id.hex()} flags {auth_data.flags!r}")
    if verify_attestation:
        s.log(f"attestation checked: {'; '.join(verifier.checked)}")
        if not verifier.checked:
            raise Fail("Fido2Server did not run the attestation verifier")
    request, state = server.authenticate_begin(None if resident else [cred], user_verification=uv)
    selection = client.get_assertion(request.public_key)
    response = selection.get_response(0)
    verified = server.authenticate_complete(state, [cred], response)
    if verified.credential_id != cred.credential_id:
        raise Fail("the assertion names another credential")
    if resident:
        handle = response.response.user_handle
        if handle != user_id:
            raise Fail(f"userHandle {handle!r} is not the registered user id")
    s.log(f"assertion verified, flags {response.response.authenticator_data.flags!r}")
    return auth_data, response


def row_pyfido2_enumerate(s: Suite) -> str:
    dev = _pyfido2_device(s)
    desc = dev.descriptor
    return f"{desc.path} vid={desc.vid:04x} pid={desc.pid:04x} {desc.product_name!r}"


def row_pyfido2_getinfo(s: Suite) -> str:
    from fido2.ctap2 import Ctap2
    from fido2.hid import CTAPHID

    from softkey.authenticator import cbor

    dev = _pyfido2_device(s)
    info = Ctap2(dev).get_info()
    s.log(repr(info))
    s.facts["info"] = info
    if not info.versions:
        raise Fail("getInfo lists no versions")
    # python-fido2 decodes loosely, so check the raw reply bytes with softkey's strict
    # canonical-CBOR decoder (the one it applies to requests) as well.
    raw = dev.call(CTAPHID.CBOR, b"\x04")
    if raw[:1] != b"\x00":
        raise Fail(f"raw getInfo status {raw[:1].hex()}")
    strict = cbor.decode(raw[1:])  # raises on non-canonical order, indefinite lengths, ...
    if cbor.encode(strict) != raw[1:]:
        raise Fail("the getInfo reply does not re-encode to the same canonical bytes")
    if strict.get(1) != info.versions or bytes(strict.get(3, b"")) != bytes(info.aaguid):
        raise Fail("python-fido2's decoding and the strict decoding disagree")
    opts = ",".join(f"{k}={v}" for k, v in sorted(info.options.items()))
    return (
        f"versions {info.versions}; aaguid {info.aaguid}; options {opts}; "
        f"{len(raw) - 1} reply bytes pass the strict canonical-CBOR decoder"
    )


def row_pyfido2_make_get(s: Suite) -> str:
    auth_data, _ = _register_login(
        s, _pyfido2_device(s), resident=False, uv="discouraged", pin=None,
        verify_attestation=True,
    )  # fmt: skip
    s.facts["py_plain_cred"] = auth_data.credential_data
    return (
        f"credential id {len(auth_data.credential_data.credential_id)} bytes; packed "
        "attestation verified to the key's exported root (chain, signature, AAGUID = getInfo); "
        "assertion signature verified"
    )


def row_pyfido2_make_get_rk(s: Suite) -> str:
    auth_data, _ = _register_login(s, _pyfido2_device(s), resident=True, uv="discouraged", pin=None)
    s.facts["py_rk_cred"] = auth_data.credential_data
    return "discoverable credential stored, found without allowList, userHandle matches"


def _needs_option(s: Suite, *names: str) -> None:
    info = s.facts.get("info")
    if info is None:
        raise Fail("no getInfo")
    if not any(n in info.options for n in names):
        raise Fail(f"getInfo (profile {s.config['profile']}) does not advertise {'/'.join(names)}")


def row_pyfido2_clientpin(s: Suite) -> str:
    from fido2.ctap2 import ClientPin, Ctap2

    _needs_option(s, "clientPin")
    ctap = Ctap2(_pyfido2_device(s))
    if ctap.info.options.get("clientPin"):
        raise Fail("a PIN is already set on a fresh key")
    client_pin = ClientPin(ctap)
    client_pin.set_pin(PIN)
    s.facts["py_pin_set"] = True
    if not ctap.get_info().options.get("clientPin"):
        raise Fail("getInfo still says clientPin=false after setPIN")
    token = client_pin.get_pin_token(PIN, ClientPin.PERMISSION.GET_ASSERTION, RP_ID)
    retries, _ = client_pin.get_pin_retries()
    try:
        client_pin.get_pin_token(PIN + "x", ClientPin.PERMISSION.GET_ASSERTION, RP_ID)
        raise Fail("a wrong PIN was accepted")
    except Exception as exc:  # CtapError(PIN_INVALID) expected
        if isinstance(exc, Fail):
            raise
        s.log(f"wrong PIN -> {exc}")
        if "PIN_INVALID" not in str(exc):
            raise Fail(f"wrong PIN gave {exc}, expected PIN_INVALID") from exc
    after, _ = client_pin.get_pin_retries()
    client_pin.get_pin_token(PIN, ClientPin.PERMISSION.GET_ASSERTION, RP_ID)  # resets counter
    restored, _ = client_pin.get_pin_retries()
    if after != retries - 1:
        raise Fail(f"pinRetries {retries} -> {after} after a wrong PIN, not {retries - 1}")
    if restored != retries:
        raise Fail(f"pinRetries is {restored} after a correct PIN, expected {retries} again")
    return (
        f"PIN set (protocol {client_pin.protocol.VERSION}), token {len(token)} bytes, "
        f"retries {retries} -> {after} after a wrong PIN -> {restored} after the right one"
    )


def row_pyfido2_uv(s: Suite) -> str:
    _needs_option(s, "clientPin")
    auth_data, response = _register_login(
        s, _pyfido2_device(s), resident=False, uv="required", pin=PIN
    )
    if not auth_data.is_user_verified():
        raise Fail("registration lacks the UV flag")
    if not response.response.authenticator_data.is_user_verified():
        raise Fail("assertion lacks the UV flag")
    return "UV flag set and verified in both registration and assertion (PIN token)"


def row_pyfido2_credman(s: Suite) -> str:
    from fido2.ctap2 import ClientPin, CredentialManagement, Ctap2
    from fido2.webauthn import PublicKeyCredentialDescriptor

    _needs_option(s, "credMgmt", "credentialMgmtPreview")
    ctap = Ctap2(_pyfido2_device(s))
    client_pin = ClientPin(ctap)
    token = client_pin.get_pin_token(PIN, ClientPin.PERMISSION.CREDENTIAL_MGMT)
    cm = CredentialManagement(ctap, client_pin.protocol, token)
    meta = cm.get_metadata()
    existing = meta[CredentialManagement.RESULT.EXISTING_CRED_COUNT]
    remaining = meta[CredentialManagement.RESULT.MAX_REMAINING_COUNT]
    rps = cm.enumerate_rps()
    s.log(f"metadata {dict(meta)}; rps {rps}")
    ids = [rp[CredentialManagement.RESULT.RP]["id"] for rp in rps]
    if RP_ID not in ids:
        raise Fail(f"enumerateRPs gave {ids}, missing {RP_ID}")
    rp_hash = hashlib.sha256(RP_ID.encode()).digest()
    creds = cm.enumerate_creds(rp_hash)
    s.log(f"creds {creds}")
    wanted = s.facts["py_rk_cred"].credential_id if "py_rk_cred" in s.facts else None
    found = [c[CredentialManagement.RESULT.CREDENTIAL_ID] for c in creds]
    if wanted is None or not any(d["id"] == wanted for d in found):
        raise Fail("enumerateCredentials does not list the resident credential made earlier")
    cm.delete_cred(PublicKeyCredentialDescriptor(type="public-key", id=wanted))
    after = cm.get_metadata()[CredentialManagement.RESULT.EXISTING_CRED_COUNT]
    if after != existing - 1:
        raise Fail(f"after delete the count is {after}, expected {existing - 1}")
    return f"metadata {existing} used/{remaining} left; {len(rps)} RP(s); deleted one -> {after}"


def _silent_assertion_error(s: Suite, allow: list[bytes] | None) -> int:
    """getAssertion with up=false (no touch): 0 if a credential answers, else the CTAP code."""
    from fido2.ctap import CtapError
    from fido2.ctap2 import Ctap2

    ctap = Ctap2(_pyfido2_device(s))
    # Ctap2 takes the CTAP map itself (bytes id); the dataclass would send its JSON form.
    allow_list = [{"type": "public-key", "id": c} for c in allow or []]
    try:
        ctap.get_assertion(RP_ID, os.urandom(32), allow_list or None, options={"up": False})
    except CtapError as exc:
        s.log(f"getAssertion(up=false, {len(allow_list)} allowed) -> {exc.code.name}")
        return int(exc.code)
    s.log(f"getAssertion(up=false, {len(allow_list)} allowed) -> a credential answered")
    return 0


def row_pyfido2_reset_late(s: Suite) -> str:
    from fido2.ctap import CtapError
    from fido2.ctap2 import Ctap2

    # A resident credential (and the PIN set earlier) that a late reset must not touch.
    auth_data, _ = _register_login(
        s, _pyfido2_device(s), resident=True, uv="preferred",
        pin=PIN if s.facts.get("py_pin_set") else None,
    )  # fmt: skip
    s.facts["py_reset_rk"] = auth_data.credential_data.credential_id
    since = time.monotonic() - s.device.plugged_at
    if since < 10.5:  # CTAP 2.1 §6.6: only within 10 s of power-up
        time.sleep(10.5 - since)
        since = time.monotonic() - s.device.plugged_at
    ctap = Ctap2(_pyfido2_device(s))
    try:
        ctap.reset()
    except CtapError as exc:
        if exc.code != CtapError.ERR.NOT_ALLOWED:
            raise Fail(
                f"reset {since:.0f} s after plug-in gave {exc.code.name}, not NOT_ALLOWED"
            ) from exc
    else:
        raise Fail(f"reset {since:.0f} s after plug-in was accepted")
    if _silent_assertion_error(s, None) != 0:
        raise Fail("the resident credential is gone after a refused reset")
    pin_still = ctap.get_info().options.get("clientPin")
    if s.facts.get("py_pin_set") and not pin_still:
        raise Fail("the PIN is gone after a refused reset")
    return (
        f"reset {since:.1f} s after plug-in -> CTAP2_ERR_NOT_ALLOWED; the resident credential "
        f"still answers{' and the PIN is still set' if pin_still else ''}"
    )


def row_pyfido2_reset(s: Suite) -> str:
    from fido2.ctap import CtapError
    from fido2.ctap2 import Ctap2

    # What must not survive: a resident credential and a non-resident credential ID.
    resident_id = s.facts.get("py_reset_rk")
    if resident_id is None:
        auth_data, _ = _register_login(
            s, _pyfido2_device(s), resident=True, uv="preferred",
            pin=PIN if s.facts.get("py_pin_set") else None,
        )  # fmt: skip
        resident_id = auth_data.credential_data.credential_id
    plain = s.facts.get("py_plain_cred")
    if plain is None:
        raise Fail("no non-resident credential from pyfido2.make_get to check")
    if _silent_assertion_error(s, [plain.credential_id]) != 0:
        raise Fail("the non-resident credential does not answer even before the reset")
    _, took = s.device.replug(s)
    started = time.monotonic()
    ctap = Ctap2(_pyfido2_device(s))
    ctap.reset()
    reset_after = time.monotonic() - started
    info = ctap.get_info()
    if info.options.get("clientPin"):
        raise Fail("a PIN is still set after reset")
    no_creds = int(CtapError.ERR.NO_CREDENTIALS)
    got = _silent_assertion_error(s, None)
    if got != no_creds:
        raise Fail(f"usernameless getAssertion after reset gave 0x{got:02x}, not NO_CREDENTIALS")
    got = _silent_assertion_error(s, [resident_id])
    if got != no_creds:
        raise Fail(f"the resident credential's ID after reset gave 0x{got:02x}, not NO_CREDENTIALS")
    got = _silent_assertion_error(s, [plain.credential_id])
    if got != no_creds:
        raise Fail(f"the old non-resident ID after reset gave 0x{got:02x}, not NO_CREDENTIALS")
    from fido2.client import ClientError

    try:
        _register_login(s, _pyfido2_device(s), resident=False, uv="discouraged", pin=None)
    except ClientError as exc:
        raise Fail(f"the key does not work after reset: {exc}") from exc
    return (
        f"replug took {took:.1f} s, reset sent {reset_after:.1f} s later; PIN cleared; the "
        "resident credential (empty allowList and by ID) and the old non-resident ID each give "
        "CTAP2_ERR_NO_CREDENTIALS; a new registration works"
    )


# -- rows: libfido2 -----------------------------------------------------------------------------

FIDO2_RP = "libfido2.e2e.example"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _fido2_dir() -> Path:
    path = WORK / "libfido2"
    path.mkdir(parents=True, exist_ok=True)
    return path


def row_libfido2_list(s: Suite) -> str:
    res = s.check(s.run(["fido2-token", "-L"]), "fido2-token -L")
    line = next((ln for ln in res.out.splitlines() if ln.startswith(s.device.node + ":")), None)
    if line is None:
        raise Fail(f"fido2-token -L does not list {s.device.node}")
    return line.strip()


# libfido2's names for COSE algorithms (tools/token.c); anything else prints as "unknown".
LIBFIDO2_ALGS = {"es256": -7, "eddsa": -8, "es384": -35, "rs256": -257}


def _profile_json(s: Suite) -> dict[str, Any]:
    res = s.check(s.run([s.device.softkey, "profiles", "--json"]), "softkey profiles --json")
    profiles = json.loads(res.out[res.out.index("{") :])["profiles"]
    for profile in profiles:
        if profile["name"] == s.config["profile"]:
            return profile
    raise Fail(f"softkey profiles --json has no {s.config['profile']}")


def row_libfido2_info(s: Suite) -> str:
    res = s.check(s.run(["fido2-token", "-I", s.device.node]), "fido2-token -I")
    fields = dict(
        ln.split(": ", 1) for ln in res.out.splitlines() if ": " in ln and not ln.startswith(" ")
    )
    if "aaguid" not in fields or "version strings" not in fields:
        raise Fail("fido2-token -I printed no aaguid/version strings")
    want = _profile_json(s)
    wrong = []
    versions = [v.strip() for v in fields["version strings"].split(",")]
    if versions != want["versions"]:
        wrong.append(f"versions {versions} != {want['versions']}")
    if fields["aaguid"].strip() != want["aaguid"].replace("-", ""):
        wrong.append(f"aaguid {fields['aaguid']} != {want['aaguid']}")
    options = {}
    for name in (o.strip() for o in fields.get("options", "").split(",") if o.strip()):
        # "noX" is X=false, except options whose own name starts with "no" (none today)
        if name.startswith("no") and name[2:] in want["options"]:
            options[name[2:]] = False
        else:
            options[name] = True
    if options != want["options"]:
        wrong.append(f"options {options} != {want['options']}")
    algs = re.findall(r"(\w+) \(public-key\)", fields.get("algorithms", ""))
    expected = [
        next((n for n, a in LIBFIDO2_ALGS.items() if a == alg), "unknown")
        for alg in want["algorithms"]
    ]
    if algs != expected:
        wrong.append(f"algorithms {algs} != {want['algorithms']} (as libfido2 names {expected})")
    extensions = [e.strip() for e in fields.get("extension strings", "").split(",") if e.strip()]
    if extensions != want["extensions"]:
        wrong.append(f"extensions {extensions} != {want['extensions']}")
    if wrong:
        raise Fail("fido2-token -I disagrees with softkey profiles --json: " + "; ".join(wrong))
    return (
        f"versions, aaguid, {len(options)} options, {len(algs)} algorithms and "
        f"{len(extensions)} extensions equal `softkey profiles --json` for {want['name']}"
    )


def _cred_make_verify(s: Suite, name: str, *, resident: bool) -> tuple[str, Path]:
    work = _fido2_dir()
    param = work / f"{name}.param"
    user_id = os.urandom(16)
    param.write_text(
        "\n".join([_b64(os.urandom(32)), FIDO2_RP, f"user-{name}", _b64(user_id)]) + "\n"
    )
    made = work / f"{name}.cred"
    argv = ["fido2-cred", "-M", *(["-r"] if resident else []), "-i", str(param)]
    argv += ["-o", str(made), s.device.node, "es256"]
    s.check(s.run_pty(argv, pin=s.facts.get("libfido2_pin")), "fido2-cred -M")
    verified = work / f"{name}.verified"
    s.check(
        s.run(["fido2-cred", "-V", "-i", str(made), "-o", str(verified), "es256"]),
        "fido2-cred -V",
    )
    lines = verified.read_text().splitlines()
    cred_id = lines[0]
    pem = work / f"{name}.pem"
    pem.write_text("\n".join(lines[1:]) + "\n")
    if "BEGIN PUBLIC KEY" not in pem.read_text():
        raise Fail("fido2-cred -V printed no public key")
    s.facts[f"libfido2_{name}"] = (cred_id, pem, user_id)
    return cred_id, pem


def _assert_get_verify(s: Suite, name: str, *, resident: bool) -> str:
    cred_id, pem, user_id = s.facts[f"libfido2_{name}"]
    work = _fido2_dir()
    param = work / f"{name}.aparam"
    lines = [_b64(os.urandom(32)), FIDO2_RP] + ([] if resident else [cred_id])
    param.write_text("\n".join(lines) + "\n")
    got = work / f"{name}.assert"
    argv = ["fido2-assert", "-G", *(["-r"] if resident else []), "-p", "-i", str(param)]
    argv += ["-o", str(got), s.device.node, "es256"]
    s.check(s.run_pty(argv, pin=s.facts.get("libfido2_pin")), "fido2-assert -G")
    out = got.read_text().splitlines()
    # One assertion: cdh, rp, authdata, sig [, user id when resident].
    if resident:
        if len(out) < 5:
            raise Fail(f"fido2-assert -G -r printed {len(out)} lines, expected a user id")
        if base64.b64decode(out[4]) != user_id:
            raise Fail("the resident assertion's user id is not the one registered")
    check = work / f"{name}.acheck"
    check.write_text("\n".join(out[:4]) + "\n")
    s.check(
        s.run(["fido2-assert", "-V", "-p", "-i", str(check), str(pem), "es256"]),
        "fido2-assert -V",
    )
    return "assertion signature verified with the credential's public key (UP flag signed)"


def row_libfido2_cred(s: Suite) -> str:
    cred_id, _ = _cred_make_verify(s, "plain", resident=False)
    size = len(base64.b64decode(cred_id))
    return f"credential id {size} bytes; fido2-cred -V checked the attestation signature"


def row_libfido2_assert(s: Suite) -> str:
    return _assert_get_verify(s, "plain", resident=False)


def row_libfido2_cred_rk(s: Suite) -> str:
    cred_id, _ = _cred_make_verify(s, "rk", resident=True)
    return f"resident credential {cred_id[:16]}...; fido2-cred -V checked the attestation signature"


def row_libfido2_assert_rk(s: Suite) -> str:
    return _assert_get_verify(s, "rk", resident=True) + "; user id matches"


def _token_options(s: Suite) -> str:
    res = s.check(s.run(["fido2-token", "-I", s.device.node]), "fido2-token -I")
    match = re.search(r"^options: (.*)$", res.out, re.M)
    return match.group(1) if match else ""


def row_libfido2_setpin(s: Suite) -> str:
    before = _token_options(s)
    if re.search(r"(?<!no)clientPin", before):
        raise Fail(f"a PIN is already set before fido2-token -S (options: {before})")
    res = s.check(s.run_pty(["fido2-token", "-S", s.device.node], pin=PIN), "fido2-token -S")
    after = _token_options(s)
    if not re.search(r"(?<!no)clientPin", after):
        raise Fail(f"options after -S still say {after}")
    s.facts["libfido2_pin"] = PIN
    return f"answered {res.prompts} PIN prompts on a pty; options now include clientPin"


def row_libfido2_list_rps(s: Suite) -> str:
    res = s.check(
        s.run_pty(["fido2-token", "-L", "-r", s.device.node], pin=PIN), "fido2-token -L -r"
    )
    if FIDO2_RP not in res.out:
        raise Fail(f"{FIDO2_RP} not listed")
    rps = [ln for ln in res.out.splitlines() if re.match(r"^\d+:", ln)]
    return f"{len(rps)} RP(s) listed, including {FIDO2_RP}"


def row_libfido2_list_creds(s: Suite) -> str:
    cred_id = s.facts["libfido2_rk"][0]
    res = s.check(
        s.run_pty(["fido2-token", "-L", "-k", FIDO2_RP, s.device.node], pin=PIN),
        "fido2-token -L -k",
    )
    if cred_id not in res.out:
        raise Fail("the resident credential from fido2-cred -M -r is not listed")
    return "the resident credential is listed (id, user, algorithm)"


def row_libfido2_delete(s: Suite) -> str:
    cred_id = s.facts["libfido2_rk"][0]
    s.check(
        s.run_pty(["fido2-token", "-D", "-i", cred_id, s.device.node], pin=PIN),
        "fido2-token -D -i",
    )
    res = s.run_pty(["fido2-token", "-L", "-k", FIDO2_RP, s.device.node], pin=PIN)
    if cred_id in res.out:
        raise Fail("the credential is still listed after -D")
    return "deleted; fido2-token -L -k no longer lists it"


def _libfido2_no_credentials(s: Suite, node: str, *, cred_id: str | None) -> str:
    """fido2-assert -G after the reset: it must fail with FIDO_ERR_NO_CREDENTIALS exactly."""
    param = _fido2_dir() / "stale.aparam"
    param.write_text("\n".join([_b64(os.urandom(32)), FIDO2_RP, *([cred_id] if cred_id else [])])
                     + "\n")  # fmt: skip
    argv = ["fido2-assert", "-G", *([] if cred_id else ["-r"]), "-i", str(param), node, "es256"]
    res = s.run_pty(argv, pin=None, timeout=60)
    what = "the old credential ID" if cred_id else "a resident (-r) assertion"
    if res.rc == 0:
        raise Fail(f"{what} still works after the reset")
    if "FIDO_ERR_NO_CREDENTIALS" not in res.out:
        last = res.out.strip().splitlines()[-1:] or [""]
        raise Fail(f"{what} failed with {last[0][:120]!r}, not FIDO_ERR_NO_CREDENTIALS")
    return what


def row_libfido2_reset(s: Suite) -> str:
    # What must not survive: a resident credential made now, and the non-resident one.
    rk_id, _ = _cred_make_verify(s, "prereset", resident=True)
    plain = s.facts.get("libfido2_plain", ("",))[0]
    if not plain:
        raise Fail("no non-resident credential from libfido2.cred to check")
    node, took = s.device.replug(s)
    replugged = time.monotonic()
    s.check(s.run_pty(["fido2-token", "-R", node], pin=None, timeout=30), "fido2-token -R")
    within = time.monotonic() - replugged
    options = _token_options(s)
    if re.search(r"(?<!no)clientPin", options):
        raise Fail(f"PIN still set after reset (options: {options})")
    s.facts.pop("libfido2_pin", None)
    checked = [
        _libfido2_no_credentials(s, node, cred_id=None),
        _libfido2_no_credentials(s, node, cred_id=rk_id),
        _libfido2_no_credentials(s, node, cred_id=plain),
    ]
    return (
        f"replug {took:.1f} s, reset done {within:.1f} s after the new node appeared; PIN "
        f"cleared; FIDO_ERR_NO_CREDENTIALS for {len(checked)} of 3: resident by -r, resident "
        "by ID, old non-resident ID"
    )


# -- rows: OpenSSH ----------------------------------------------------------------------------


def _ssh_dir() -> Path:
    path = WORK / "ssh"
    path.mkdir(parents=True, exist_ok=True)
    return path


def row_ssh_ed25519(s: Suite) -> str:
    key = _ssh_dir() / "id_ed25519_sk"
    argv = ["ssh-keygen", "-t", "ed25519-sk", "-f", str(key), "-N", "", "-C", "e2e-ed25519"]
    res = s.check(s.run_pty(argv, pin=s.facts.get("libfido2_pin")), "ssh-keygen -t ed25519-sk")
    pub = Path(f"{key}.pub").read_text().split()
    if pub[0] != "sk-ssh-ed25519@openssh.com":
        raise Fail(f"unexpected key type {pub[0]}")
    return f"{pub[0]} key made ({res.prompts} PIN prompt(s))"


def row_ssh_sign_verify(s: Suite) -> str:
    work = _ssh_dir()
    key = work / "id_ed25519_sk"
    message = work / "message.txt"
    message.write_text("softkey e2e: signed by a key that lives in a UHID device\n")
    s.check(
        s.run_pty(["ssh-keygen", "-Y", "sign", "-f", str(key), "-n", "file", str(message)],
                  pin=s.facts.get("libfido2_pin")),
        "ssh-keygen -Y sign",
    )  # fmt: skip
    pub = Path(f"{key}.pub").read_text().split()
    signers = work / "allowed_signers"
    signers.write_text(f"e2e@softkey {pub[0]} {pub[1]}\n")
    verify = ["ssh-keygen", "-Y", "verify", "-f", str(signers), "-I", "e2e@softkey",
              "-n", "file", "-s", f"{message}.sig"]  # fmt: skip
    res = s.check(s.run(verify, input=message.read_text()), "ssh-keygen -Y verify")
    tampered = s.run(verify, input=message.read_text() + "x")
    if tampered.rc == 0:
        raise Fail("a tampered message verified")
    return res.out.strip().splitlines()[-1][:120] + "; tampered message rejected"


def row_ssh_ecdsa_rk(s: Suite) -> str:
    key = _ssh_dir() / "id_ecdsa_sk_rk"
    argv = ["ssh-keygen", "-t", "ecdsa-sk", "-O", "resident", "-O", "application=ssh:e2e",
            "-O", "user=e2e", "-f", str(key), "-N", "", "-C", "e2e-ecdsa-rk"]  # fmt: skip
    res = s.check(
        s.run_pty(argv, pin=s.facts.get("libfido2_pin")), "ssh-keygen -t ecdsa-sk -O resident"
    )
    pub = Path(f"{key}.pub").read_text().split()
    if pub[0] != "sk-ecdsa-sha2-nistp256@openssh.com":
        raise Fail(f"unexpected key type {pub[0]}")
    s.facts["ssh_rk_pub"] = pub[1]
    return f"{pub[0]} resident key made ({res.prompts} PIN prompt(s))"


def row_ssh_download(s: Suite) -> str:
    work = _ssh_dir() / "download"
    work.mkdir(exist_ok=True)
    res = s.check(
        s.run_pty(["ssh-keygen", "-K", "-N", ""], pin=s.facts.get("libfido2_pin"), cwd=work),
        "ssh-keygen -K",
    )
    pubs = {p.name: p.read_text().split()[1] for p in work.glob("*.pub")}
    s.log(f"downloaded: {sorted(pubs)}")
    if s.facts["ssh_rk_pub"] not in pubs.values():
        raise Fail(f"downloaded {sorted(pubs)}, none matches the resident key made earlier")
    return f"downloaded {len(pubs)} key(s), the resident one matches ({res.prompts} PIN prompt)"


# -- the plan ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FreshKey:
    """Plan marker: the rows after it get a new key (stop softkey, start it on a new state)."""

    name: str


Step = tuple[str, Callable[[Suite], str], tuple[str, ...]]
Plan = list["Step | FreshKey"]


def plan() -> Plan:
    import guest_ci
    import guest_desktop
    import guest_firefox
    import guest_keys

    dev = ("device.hidraw",)
    py = ("pyfido2.enumerate",)
    return [
        ("vm.boot", row_vm_boot, ()),
        ("device.hidraw", row_device, ("vm.boot",)),
        ("pyfido2.enumerate", row_pyfido2_enumerate, dev),
        ("pyfido2.getinfo", row_pyfido2_getinfo, py),
        ("pyfido2.make_get", row_pyfido2_make_get, py),
        ("pyfido2.make_get_rk", row_pyfido2_make_get_rk, py),
        ("pyfido2.clientpin", row_pyfido2_clientpin, ("pyfido2.getinfo",)),
        ("pyfido2.uv", row_pyfido2_uv, ("pyfido2.clientpin",)),
        ("pyfido2.credman", row_pyfido2_credman, ("pyfido2.clientpin", "pyfido2.make_get_rk")),
        ("pyfido2.reset_late", row_pyfido2_reset_late, py),
        ("pyfido2.reset", row_pyfido2_reset, ("pyfido2.make_get",)),
        FreshKey("libfido2+openssh"),
        ("libfido2.list", row_libfido2_list, dev),
        ("libfido2.info", row_libfido2_info, dev),
        ("libfido2.cred", row_libfido2_cred, dev),
        ("libfido2.assert", row_libfido2_assert, ("libfido2.cred",)),
        ("libfido2.cred_rk", row_libfido2_cred_rk, dev),
        ("libfido2.assert_rk", row_libfido2_assert_rk, ("libfido2.cred_rk",)),
        ("libfido2.setpin", row_libfido2_setpin, dev),
        ("libfido2.list_rps", row_libfido2_list_rps, ("libfido2.setpin", "libfido2.cred_rk")),
        ("libfido2.list_creds", row_libfido2_list_creds, ("libfido2.setpin", "libfido2.cred_rk")),
        ("libfido2.delete", row_libfido2_delete, ("libfido2.list_creds",)),
        ("ssh.ed25519_sk", row_ssh_ed25519, dev),
        ("ssh.sign_verify", row_ssh_sign_verify, ("ssh.ed25519_sk",)),
        ("ssh.ecdsa_sk_rk", row_ssh_ecdsa_rk, dev),
        ("ssh.download", row_ssh_download, ("ssh.ecdsa_sk_rk",)),
        ("libfido2.reset", row_libfido2_reset, dev),
        FreshKey("browser"),
        *guest_browser.plan(),
        FreshKey("firefox"),
        *guest_firefox.plan(),
        FreshKey("desktop"),
        ("desktop.prompt", guest_desktop.run_desktop_row, ("vm.boot",)),
        FreshKey("two keys"),
        *guest_keys.plan(_register_login, _client),
        ("ci.recipe_c", guest_ci.row_recipe_c, ("vm.boot",)),
    ]


def main() -> int:
    out = Path(sys.argv[1])
    config = json.loads((out / "config.json").read_text())
    suite = Suite(out, config)
    print(f"E2E guest started: python {sys.version.split()[0]}, profile {config['profile']}",
          flush=True)  # fmt: skip
    steps = plan()
    rows = [step for step in steps if not isinstance(step, FreshKey)]
    assert [rid for rid, _, _ in rows] == list(ROW_IDS), "guest plan and rows.py disagree"
    try:
        for step in steps:
            if isinstance(step, FreshKey):
                suite.fresh_key(step.name)
            else:
                suite.run_row(*step)
    finally:
        close_pyfido2(suite)
        suite.end_group()
        if suite.device is not None:
            suite.device.stop()
    failed = [rid for rid, status in suite.results.items() if status != "PASS"]
    print(f"E2E done: {len(ROW_IDS) - len(failed)}/{len(ROW_IDS)} passed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
