"""The browser rows of the e2e VM run: Chromium on Xvfb against a local relying party.

A tiny HTTP server (this module, in a thread) serves tools/vm/rp_page.html on
http://localhost:8000 and verifies what the page sends with python-fido2's Fido2Server. The
page registers a security key and logs in with it as soon as it loads; Chromium finds softkey
through hidraw like any USB key. Headless Chromium sends no CTAPHID traffic (it never shows
the WebAuthn dialog that starts the USB discovery), so it runs on an Xvfb display.

Logs (in /e2e-out/logs/): chromium.log (Chromium's stderr, FIDO: lines included), xvfb.log,
rp-server.log (every request, the page's own log lines, verification errors). The server's
verdicts go to /e2e-out/browser-result.json and the screenshot to
/e2e-out/browser-screenshot.png.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from rows import RowFailed

HERE = Path(__file__).resolve().parent
PORT = 8000
ORIGIN = f"http://localhost:{PORT}"
DISPLAY = ":99"
SCREEN = (1280, 860)
PROFILE_DIR = Path("/tmp/e2e/chromium-profile")
POLICY = Path("/etc/chromium/policies/managed/softkey-e2e.json")
# Chromium under TCG takes ~35 s to show the page on an idle 2-core host, several times that
# when the host is busy; a launch whose page never loads is retried once.
PAGE_LOAD_TIMEOUT = 180
LAUNCH_ATTEMPTS = 2

# Why each Chromium flag is there (see docs/e2e.md for what was tried):
CHROMIUM_FLAGS = [
    "--no-sandbox",  # the guest runs everything as root; Chromium refuses root with a sandbox
    "--test-type",  # no "unsupported command-line flag" infobar over the page
    "--disable-gpu",  # no GPU in the VM; software compositing is enough on Xvfb
    "--no-first-run",
    "--no-default-browser-check",
    "--password-store=basic",  # no keyring daemon in the VM
    "--disable-background-networking",  # there is no network; don't wait on it
    "--disable-component-update",
    "--disable-sync",
    "--disable-features=Translate,MediaRouter,OptimizationHints",
    # Fewer processes: under TCG on a busy host, child processes that take more than 15 s to
    # connect to the browser are killed ("Terminating current process after 15 seconds with
    # no connection") and the page may never load. Keep network and GPU in the browser.
    "--enable-features=NetworkServiceInProcess2",
    "--in-process-gpu",
    "--no-zygote",
    "--renderer-process-limit=1",
    "--disable-extensions",
    "--window-position=0,0",
    f"--window-size={SCREEN[0]},{SCREEN[1]}",
    f"--user-data-dir={PROFILE_DIR}",
    "--enable-logging=stderr",
    "--v=0",
    "--vmodule=device_event_log*=1",  # FIDO_LOG lines (device discovery, CTAPHID, CTAP2)
]


@dataclass
class BrowserRun:
    out: Path
    log_path: Path
    fido_server: Any = None
    states: dict[str, Any] = field(default_factory=dict)
    credentials: list[Any] = field(default_factory=list)
    result: dict[str, Any] = field(default_factory=dict)
    page_running: threading.Event = field(default_factory=threading.Event)
    registered: threading.Event = field(default_factory=threading.Event)
    registered_none: threading.Event = field(default_factory=threading.Event)
    logged_in: threading.Event = field(default_factory=threading.Event)
    uv_ready: threading.Event = field(default_factory=threading.Event)
    logged_in_uv: threading.Event = field(default_factory=threading.Event)
    failed: threading.Event = field(default_factory=threading.Event)
    httpd: ThreadingHTTPServer | None = None
    xvfb: subprocess.Popen | None = None
    browser: subprocess.Popen | None = None
    name: str = "Chromium"  # for messages
    log_name: str = "chromium.log"  # the browser's stderr in logs/
    result_file: str = "browser-result.json"
    shot_name: str = "browser-screenshot.png"
    user_ids: dict[bytes, bytes] = field(default_factory=dict)  # credential id -> user id
    lock: threading.Lock = field(default_factory=threading.Lock)
    verifier: Any = None  # attestation_check.ChainVerifier for the key under test
    none_server: Any = None  # the same RP asking for attestation "none"

    def log(self, msg: str) -> None:
        with self.lock, open(self.log_path, "a") as fh:
            fh.write(f"{time.strftime('%H:%M:%S')} {msg}\n")

    def save(self) -> None:
        with self.lock:
            (self.out / self.result_file).write_text(json.dumps(self.result, indent=2))

    # -- the relying party ----------------------------------------------------------------------

    def api(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        from fido2.utils import websafe_decode, websafe_encode
        from fido2.webauthn import (
            AttestationObject,
            AuthenticatorData,
            PublicKeyCredentialUserEntity,
        )

        if path == "/api/log":
            self.log(f"page: {body.get('msg')}")
            return {}
        if path == "/api/fail":
            self.result["page_error"] = body.get("error")
            self.save()
            self.failed.set()
            return {}
        if path == "/api/register/begin":
            self.page_running.set()
            none = body.get("attestation") == "none" or self.verifier is None
            resident = bool(body.get("resident"))
            server = self.none_server if none else self.fido_server
            user_id = b"e2e-user-%d" % (len(self.credentials) + 1)
            user = PublicKeyCredentialUserEntity(id=user_id, name="alice",
                                                 display_name="Alice")  # fmt: skip
            options, state = server.register_begin(
                user,
                resident_key_requirement="required" if resident else "discouraged",
                user_verification="discouraged",
                authenticator_attachment="cross-platform",
            )
            self.states["register"] = (none, state, user_id)
            return dict(options)
        if path == "/api/register/complete":
            none, state, user_id = self.states.pop("register")
            server = self.none_server if none else self.fido_server
            auth_data = server.register_complete(state, body)
            cred = auth_data.credential_data
            self.credentials.append(cred)
            self.user_ids[bytes(cred.credential_id)] = user_id
            alg = {-7: "ES256", -8: "EdDSA"}.get(cred.public_key.ALGORITHM, "?")
            self.result["register_none" if none else "register"] = {
                "verified": True,
                "attestation_format": AttestationObject(
                    websafe_decode(body["response"]["attestationObject"])
                ).fmt,
                "checked": [] if none else list(self.verifier.checked),
                "credential_id": websafe_encode(cred.credential_id),
                "aaguid": str(cred.aaguid),
                "alg": alg,
                "flags": int(auth_data.flags),
                "user_present": auth_data.is_user_present(),
            }
            self.save()
            self.registered.set()  # any registration
            if none:
                self.registered_none.set()
            return {"credential_id": websafe_encode(cred.credential_id), "alg": alg}
        if path == "/api/uv/ready":
            return {"ready": self.uv_ready.is_set()}
        if path == "/api/login/begin":
            uv = body.get("uv") == "required"
            usernameless = bool(body.get("usernameless"))
            options, state = self.fido_server.authenticate_begin(
                None if usernameless else self.credentials,
                user_verification="required" if uv else "discouraged",
            )
            self.states["login"] = (uv, state, usernameless)
            return dict(options)
        if path == "/api/login/complete":
            uv, state, usernameless = self.states.pop("login")
            # With userVerification "required" Fido2Server also rejects a missing UV flag.
            cred = self.fido_server.authenticate_complete(state, self.credentials, body)
            auth_data = AuthenticatorData(websafe_decode(body["response"]["authenticatorData"]))
            handle = body["response"].get("userHandle")
            if usernameless:  # who logs in comes from the key: it must be the registered user
                expected = self.user_ids[bytes(cred.credential_id)]
                if handle is None or websafe_decode(handle) != expected:
                    raise ValueError(f"userHandle {handle!r} is not the registered user id")
            self.result["login_uv" if uv else "login"] = {
                "usernameless": usernameless,
                "user_handle_checked": usernameless,
                "verified": True,
                "credential_id": websafe_encode(cred.credential_id),
                "sign_count": auth_data.counter,
                "user_present": auth_data.is_user_present(),
                "user_verified": auth_data.is_user_verified(),
            }
            self.save()
            (self.logged_in_uv if uv else self.logged_in).set()
            return {"user": "alice", "sign_count": auth_data.counter}
        raise KeyError(path)

    def serve(self, root_pem: bytes | None, aaguid: bytes | None) -> None:
        """Serve the pages; "direct" registrations are checked to ``root_pem`` (the key's
        export-ca) and ``aaguid``. Without them (the recipe row: its key does not exist yet)
        only attestation "none" is served."""
        from attestation_check import chain_verifier
        from fido2.server import Fido2Server
        from fido2.webauthn import PublicKeyCredentialRpEntity

        rp = PublicKeyCredentialRpEntity(id="localhost", name="softkey e2e")
        self.none_server = Fido2Server(rp, attestation="none")
        if root_pem is None or aaguid is None:
            self.fido_server = self.none_server
        else:
            self.verifier = chain_verifier(root_pem, aaguid)
            self.fido_server = Fido2Server(
                rp, attestation="direct", verify_attestation=self.verifier
            )
        page = (HERE / "rp_page.html").read_bytes()
        demo = (HERE / "rp_demo.html").read_bytes()
        run = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, fmt: str, *args: Any) -> None:
                run.log("http: " + fmt % args)

            def _send(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path in ("/", "/index.html"):
                    self._send(200, page, "text/html; charset=utf-8")
                elif path == "/demo":
                    self._send(200, demo, "text/html; charset=utf-8")
                else:
                    self._send(404, b"not found", "text/plain")

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                    reply, code = run.api(self.path, body), 200
                except Exception as exc:  # a verification failure is the result we report
                    run.log(f"{self.path} failed: {type(exc).__name__}: {exc}")
                    run.result.setdefault("errors", []).append(f"{self.path}: {exc}")
                    run.save()
                    if self.path.endswith("/complete"):
                        run.failed.set()
                    reply, code = {"error": f"{type(exc).__name__}: {exc}"}, 400
                self._send(code, json.dumps(reply).encode(), "application/json")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.log(f"relying party on {ORIGIN} (rp id localhost)")

    # -- the browser ----------------------------------------------------------------------------

    def start_xvfb(self) -> None:
        if not shutil.which("Xvfb"):
            raise FileNotFoundError("Xvfb is not installed (apt-get install xvfb)")
        logs = self.out / "logs"
        self.xvfb = subprocess.Popen(
            ["Xvfb", DISPLAY, "-screen", "0", f"{SCREEN[0]}x{SCREEN[1]}x24", "-nolisten", "tcp"],
            stdout=open(logs / "xvfb.log", "wb"), stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        socket = Path("/tmp/.X11-unix") / f"X{DISPLAY[1:]}"
        deadline = time.monotonic() + 60
        while not socket.exists():
            if self.xvfb.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("Xvfb did not start (see xvfb.log)")
            time.sleep(0.2)

    def start_browser(self) -> str:
        chromium = shutil.which("chromium") or shutil.which("chromium-browser")
        if not chromium:
            raise FileNotFoundError("chromium is not installed (apt-get install chromium)")
        logs = self.out / "logs"
        # Direct attestation would otherwise stop at Chromium's "see your security key's make
        # and model?" prompt; the enterprise policy for that (SecurityKeyPermitAttestation)
        # lists this RP, as a company's managed browser would. The guest's /etc is its own.
        POLICY.parent.mkdir(parents=True, exist_ok=True)
        POLICY.write_text(json.dumps({"SecurityKeyPermitAttestation": ["localhost", ORIGIN]}))
        PROFILE_DIR.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, DISPLAY=DISPLAY)
        argv = [chromium, *CHROMIUM_FLAGS, ORIGIN + "/"]
        with open(logs / "chromium.log", "a") as fh:
            fh.write("$ " + " ".join(argv) + "\n")
        self.browser = subprocess.Popen(
            argv, env=env, stdin=subprocess.DEVNULL,
            stdout=open(logs / "chromium.log", "ab"), stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        version = subprocess.run([chromium, "--version"], capture_output=True, text=True,
                                 check=False).stdout.strip()  # fmt: skip
        self.result["browser"] = version
        return version

    def screenshot(self) -> Path:
        path = self.out / self.shot_name
        subprocess.run(
            ["import", "-display", DISPLAY, "-window", "root", str(path)],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        return path

    def stop_browser(self) -> None:
        self.stop(xvfb=False)

    def stop(self, *, xvfb: bool = True) -> None:
        import signal

        for proc in (self.browser, self.xvfb if xvfb else None):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
        if xvfb and self.httpd is not None:
            self.httpd.shutdown()
            self.httpd = None


def _fido_lines(run: BrowserRun, limit: int = 6) -> str:
    """The last few 'FIDO:' lines of Chromium's log, for a failure's detail."""
    try:
        lines = (run.out / "logs" / run.log_name).read_text(errors="replace").splitlines()
    except OSError:
        return ""
    fido = [ln.split("FIDO:", 1)[1].strip() for ln in lines if "FIDO:" in ln]
    return " | ".join(fido[-limit:])


def _wait(run: BrowserRun, event: threading.Event, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if event.wait(0.5):
            return True
        if run.failed.is_set():
            return False
        if run.browser is not None and run.browser.poll() is not None:
            return False
    return False


def _failure(run: BrowserRun, what: str) -> str:
    if run.browser is not None and run.browser.poll() is not None:
        return f"{run.name} exited ({run.browser.returncode}) before {what}; see {run.log_name}"
    errors = run.result.get("errors") or []
    if run.result.get("page_error"):
        return f"page: {run.result['page_error']}"
    if errors:
        return f"server rejected it: {errors[-1]}"
    with_fido = _fido_lines(run)
    return f"no {what} within the timeout" + (f"; last FIDO log: {with_fido}" if with_fido else "")


def plan() -> list[tuple[str, Callable[[Any], str], tuple[str, ...]]]:
    state: dict[str, BrowserRun] = {}

    def register(s: Any) -> str:
        run = BrowserRun(s.out, s.out / "logs" / "rp-server.log")
        state["run"] = run
        s.cleanups.append(run.stop)
        root_pem, aaguid = key_facts(s)
        run.serve(root_pem, aaguid)
        run.start_xvfb()
        started = time.monotonic()
        for attempt in range(1, LAUNCH_ATTEMPTS + 1):
            version = run.start_browser()
            s.log(f"{version} (attempt {attempt}); waiting for the page's script to run")
            if _wait(run, run.page_running, PAGE_LOAD_TIMEOUT):
                break
            s.log(f"the page did not run within {PAGE_LOAD_TIMEOUT} s; see chromium.log")
            run.stop_browser()
        else:
            raise_fail(
                s,
                f"Chromium never ran the page in {LAUNCH_ATTEMPTS} launches of "
                f"{PAGE_LOAD_TIMEOUT} s each; see chromium.log",
            )
        s.log("page running; waiting for the registration (chromium.log, rp-server.log)")
        if not _wait(run, run.registered, 180):
            with_shot = ""
            try:
                with_shot = f"; screenshot {run.screenshot()}"
            except Exception as exc:  # a missing screenshot must not hide the real failure
                s.log(f"screenshot failed: {exc}")
            raise_fail(s, _failure(run, "registration") + with_shot)
        reg = run.result["register"]
        if reg["attestation_format"] != "packed" or not reg["checked"]:
            raise_fail(s, f"registered with {reg['attestation_format']!r} attestation, unchecked")
        return (
            f"{version}: {reg['alg']} credential registered {time.monotonic() - started:.0f} s "
            f"after launch ({attempt} launch(es)); direct attestation verified: "
            + "; ".join(reg["checked"])
        )

    def register_none(s: Any) -> str:
        run = state["run"]
        if not _wait(run, run.registered_none, 120):
            raise_fail(s, _failure(run, "second registration"))
        reg = run.result["register_none"]
        return (
            f'attestation "none" asked, {reg["attestation_format"]!r} returned; '
            "Fido2Server verified the registration (origin, challenge, RP ID hash, UP)"
        )

    def on_key(s: Any) -> str:
        run = state["run"]
        ids = [bytes(c.credential_id) for c in run.credentials]
        answered = [credential_answers(s, "localhost", cred_id) for cred_id in ids]
        control = credential_answers(s, "localhost", os.urandom(len(ids[0])))
        if not all(answered):
            raise_fail(s, f"of the {len(ids)} IDs the RP stored, {answered.count(False)} do not "
                          "unwrap on softkey")  # fmt: skip
        if control:
            raise_fail(s, "a random credential ID answered too: the check proves nothing")
        return (
            f"the {len(ids)} credential IDs the RP stored each answer a silent (up=false) "
            "getAssertion on softkey over hidraw; a random ID gets NO_CREDENTIALS"
        )

    def login(s: Any) -> str:
        run = state["run"]
        if not _wait(run, run.logged_in, 120):
            raise_fail(s, _failure(run, "login"))
        res = run.result["login"]
        return f"assertion verified by Fido2Server, sign count {res['sign_count']}"

    def pin_uv(s: Any) -> str:
        run = state["run"]
        pin = "e2e-browser-1234"
        set_pin(s, pin)
        mark = chromium_log_size(run)
        run.uv_ready.set()
        # Chromium must now collect the PIN in its own dialog; its FIDO log names each UI
        # step, so we know when the PIN field is up rather than guessing with sleeps.
        step = wait_ui_step(run, mark, ("kClientPinEntry", "kPinEntry"), 120)
        if step is None:
            seen = ", ".join(ui_steps(run, mark)) or "none"
            raise_fail(s, f"Chromium never asked for the PIN (UI steps seen: {seen})")
        s.log(f"Chromium UI step {step}: typing the PIN with xdotool")
        time.sleep(2)  # the dialog is drawn a moment after the step changes
        with suppress(Exception):
            shutil.copy(run.screenshot(), run.out / "browser-pin-dialog.png")
        type_pin(s, run, pin)
        if not _wait(run, run.logged_in_uv, 90):
            seen = ", ".join(ui_steps(run, mark)) or "none"
            raise_fail(s, _failure(run, "login with the PIN") + f" (UI steps: {seen})")
        res = run.result["login_uv"]
        if not res["user_verified"]:
            raise_fail(s, "the assertion lacks the UV flag")
        return (
            f"Chromium's PIN dialog ({step}) answered with xdotool; UV flag verified by "
            f"Fido2Server, sign count {res['sign_count']}"
        )

    def screenshot(s: Any) -> str:
        run = state.get("run")
        if run is None or run.browser is None:
            raise_fail(s, "the browser never started")
        time.sleep(2)  # let the page paint its final state
        path = run.screenshot()
        title = window_titles(s)
        run.stop()
        shown = step_colours(path)
        s.log(f"pixels per step colour: {shown}; window titles: {title}")
        if shown["ok"] < OK_STEPS * MIN_STEP_PIXELS:
            raise_fail(s, f"the screen shows {shown['ok']} px of the green 'done' step colour, "
                          f"fewer than {OK_STEPS} finished steps make")  # fmt: skip
        if shown["bad"] or shown["wait"]:
            raise_fail(s, f"the screen still shows failed ({shown['bad']} px) or waiting "
                          f"({shown['wait']} px) steps")  # fmt: skip
        if not any("softkey e2e: done" in t for t in title):
            raise_fail(s, f"no browser window titled 'softkey e2e: done' ({title})")
        return (
            f"{path.name}: the window is titled 'softkey e2e: done' and shows {OK_STEPS} green "
            f"finished steps ({shown['ok']} px) and no waiting or failed one"
        )

    return [
        ("browser.register", register, ("device.hidraw",)),
        ("browser.register_none", register_none, ("browser.register",)),
        ("browser.login", login, ("browser.register_none",)),
        ("browser.on_key", on_key, ("browser.login",)),
        ("browser.pin_uv", pin_uv, ("browser.login",)),
        ("browser.screenshot", screenshot, ("browser.register",)),
    ]


# The page's step colours (rp_page.html .ok/.bad/.wait backgrounds) and what "all done" looks
# like on the screenshot: every step box is ~1180 x 45 px at this window size.
STEP_COLOURS = {"ok": "#e8f5e9", "bad": "#ffebee", "wait": "#fffde7"}
OK_STEPS = 4
MIN_STEP_PIXELS = 20_000


def step_colours(path: Path) -> dict[str, int]:
    """How many pixels of the screenshot have each step colour, exactly (ImageMagick)."""
    counts = {}
    for name, colour in STEP_COLOURS.items():
        res = subprocess.run(
            ["convert", str(path), "-alpha", "off", "-fill", "black", "+opaque", colour,
             "-fill", "white", "-opaque", colour, "-format", "%[fx:int(mean*w*h+0.5)]", "info:"],
            capture_output=True, text=True, check=False, timeout=60,
        )  # fmt: skip
        if res.returncode != 0:
            raise RowFailed(f"convert failed on {path}: {res.stderr.strip()[:200]}")
        counts[name] = int(res.stdout.strip())
    return counts


def window_titles(s: Any) -> list[str]:
    env = dict(os.environ, DISPLAY=DISPLAY)
    res = subprocess.run(
        ["xdotool", "search", "--onlyvisible", "--name", "softkey e2e", "getwindowname", "%@"],
        env=env, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    return [ln for ln in res.stdout.splitlines() if ln.strip()]


def trusted_root(s: Any) -> bytes:
    """The root the relying parties trust: the running key's (`softkey attestation export-ca`).

    `make e2e E2E_ARGS=--wrong-root` trusts another key's root instead, so every row that
    claims a verified attestation must fail: the check can fail.
    """
    state = str(s.device.state)
    if s.config.get("wrong_root"):
        state = "/tmp/e2e/another-key.db"
        if not Path(state).exists():
            s.check(s.run([s.device.softkey, "init", "--state", state]), "softkey init")
    res = s.check(
        s.run([s.device.softkey, "attestation", "export-ca", "--state", state, "--json"]),
        "softkey attestation export-ca",
    )
    s.log(f"trusting the attestation root of {state}")
    return json.loads(res.out[res.out.index("{") :])["pem"].encode()


def key_facts(s: Any) -> tuple[bytes, bytes]:
    """The key's attestation root (`softkey attestation export-ca`) and getInfo's AAGUID."""
    from fido2.ctap2 import Ctap2
    from fido2.hid import CtapHidDevice

    root_pem = trusted_root(s)
    devices = list(CtapHidDevice.list_devices())
    try:
        dev = next((d for d in devices if d.descriptor.path == s.device.node), None)
        if dev is None:
            raise_fail(s, f"python-fido2 does not list {s.device.node}")
        aaguid = bytes(Ctap2(dev).get_info().aaguid)
    finally:
        for d in devices:  # an open hidraw handle would queue the browser's replies too
            d.close()
    s.log(f"key facts: aaguid {aaguid.hex()}, root {len(root_pem)} bytes of PEM")
    return root_pem, aaguid


def credential_answers(s: Any, rp_id: str, cred_id: bytes) -> bool:
    """Does softkey recognise this credential ID? A silent getAssertion (up=false) over hidraw."""
    from fido2.ctap import CtapError
    from fido2.ctap2 import Ctap2
    from fido2.hid import CtapHidDevice

    devices = list(CtapHidDevice.list_devices())
    try:
        dev = next((d for d in devices if d.descriptor.path == s.device.node), None)
        if dev is None:
            raise_fail(s, f"python-fido2 does not list {s.device.node}")
        # Ctap2 takes the CTAP map itself (bytes id); the dataclass would send its JSON form.
        descriptor = {"type": "public-key", "id": cred_id}
        try:
            Ctap2(dev).get_assertion(rp_id, os.urandom(32), [descriptor], options={"up": False})
        except CtapError as exc:
            s.log(f"{cred_id.hex()[:24]}... -> {exc.code.name}")
            if exc.code != CtapError.ERR.NO_CREDENTIALS:
                raise_fail(s, f"getAssertion(up=false) gave {exc.code.name}")
            return False
        s.log(f"{cred_id.hex()[:24]}... -> answered")
        return True
    finally:
        for d in devices:
            d.close()


def set_pin(s: Any, pin: str) -> None:
    """Give the key a PIN (python-fido2 ClientPin over hidraw) so the browser must ask."""
    from fido2.ctap2 import ClientPin, Ctap2
    from fido2.hid import CtapHidDevice

    devices = list(CtapHidDevice.list_devices())
    try:
        dev = next((d for d in devices if d.descriptor.path == s.device.node), None)
        if dev is None:
            raise_fail(s, f"python-fido2 does not list {s.device.node} to set a PIN")
        ClientPin(Ctap2(dev)).set_pin(pin)
        s.log(f"PIN set on {s.device.node} through python-fido2")
    finally:
        for d in devices:  # an open hidraw handle would queue Chromium's replies too
            d.close()


def chromium_log_size(run: BrowserRun) -> int:
    with suppress(OSError):
        return (run.out / "logs" / "chromium.log").stat().st_size
    return 0


def ui_steps(run: BrowserRun, offset: int) -> list[str]:
    """Chromium's WebAuthn dialog steps ("UI step: kXxx") logged after ``offset``."""
    with open(run.out / "logs" / "chromium.log", "rb") as fh:
        fh.seek(offset)
        text = fh.read().decode(errors="replace")
    return re.findall(r"UI step: (k\w+)", text)


def wait_ui_step(
    run: BrowserRun, offset: int, wanted: tuple[str, ...], timeout: float
) -> str | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for step in ui_steps(run, offset):
            if step in wanted:
                return step
        if run.failed.is_set() or (run.browser is not None and run.browser.poll() is not None):
            return None
        time.sleep(0.5)
    return None


def type_pin(s: Any, run: BrowserRun, pin: str, window_class: str = "chromium") -> None:
    """Type the PIN into the browser's PIN dialog and press Enter.

    There is no window manager on Xvfb, so nothing gives the dialog focus for us: focus the
    browser's newest visible top-level window (Chromium's dialog; Firefox's main window, whose
    PIN panel then has the focus) explicitly, then type.
    """
    env = dict(os.environ, DISPLAY=DISPLAY)

    def xdo(*args: str) -> str:
        res = subprocess.run(
            ["xdotool", *args], env=env, capture_output=True, text=True, timeout=30, check=False
        )
        s.log(f"$ xdotool {' '.join(args)} -> {res.returncode} {res.stdout.strip()} "
              f"{res.stderr.strip()}")  # fmt: skip
        return res.stdout

    windows = xdo("search", "--onlyvisible", "--class", window_class).split()
    if windows:
        xdo("windowfocus", "--sync", windows[-1])
    xdo("type", "--delay", "80", pin)
    xdo("key", "Return")


def raise_fail(s: Any, detail: str) -> None:
    s.log(f"FAIL: {detail}")
    raise RowFailed(detail)
