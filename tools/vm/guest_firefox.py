"""The Firefox rows of the e2e VM run: Firefox ESR on Xvfb, its own WebAuthn stack over hidraw.

Firefox does not use Chromium's FIDO code: its WebAuthn requests go through Mozilla's
authenticator-rs, which finds USB keys through hidraw itself. So these rows are a second,
independent browser client for softkey. The page is the same relying party
(tools/vm/rp_page.html, served and verified with python-fido2's Fido2Server by
guest_browser.BrowserRun) in its ``?flow=discoverable`` form: register a discoverable
credential (residentKey "required"), then log in with an empty allowCredentials, then — after
the harness sets a PIN — log in with userVerification "required", the PIN typed into Firefox's
own prompt with xdotool.

The profile is a new directory with a user.js that turns off what would cover the page or
wait on the network (first-run pages, telemetry, updates) and keeps WebAuthn on USB keys
only (no soft token). MOZ_DISABLE_CONTENT_SANDBOX=1: the content sandbox cannot start under
this VM's chroot; WebAuthn runs in Firefox's parent process, so it does not change what is
proven. Logs: logs/firefox.log (stderr, with MOZ_LOG webauthn lines), /e2e-out/firefox-result.json.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import guest_browser
from guest_browser import (
    DISPLAY,
    ORIGIN,
    BrowserRun,
    _failure,
    _wait,
    credential_answers,
    raise_fail,
    set_pin,
    type_pin,
)

PROFILE = Path("/tmp/e2e/firefox-profile")
PAGE = ORIGIN + "/?flow=discoverable"
PIN = "e2e-firefox-1234"

USER_JS = {
    # WebAuthn: USB keys through authenticator-rs, never the built-in soft token.
    "security.webauth.webauthn_enable_softtoken": False,
    "security.webauth.webauthn_enable_usbtoken": True,
    # Nothing over the page, nothing waiting on a network the VM does not have.
    "browser.aboutwelcome.enabled": False,
    "browser.shell.checkDefaultBrowser": False,
    "browser.startup.homepage_override.mstone": "ignore",
    "browser.startup.firstrunSkipsHomepage": True,
    "startup.homepage_welcome_url": "",
    "startup.homepage_welcome_url.additional": "",
    "datareporting.policy.dataSubmissionEnabled": False,
    "datareporting.healthreport.uploadEnabled": False,
    "toolkit.telemetry.reportingpolicy.firstRun": False,
    "toolkit.telemetry.enabled": False,
    "app.update.enabled": False,
    "app.update.auto": False,
    "app.normandy.enabled": False,
    "browser.newtabpage.enabled": False,
    "browser.tabs.warnOnClose": False,
    "browser.sessionstore.resume_from_crash": False,
    "network.captive-portal-service.enabled": False,
    "network.connectivity-service.enabled": False,
    "extensions.update.enabled": False,
    "browser.safebrowsing.malware.enabled": False,
    "browser.safebrowsing.phishing.enabled": False,
    "browser.ml.enable": False,
}


def _user_js() -> str:
    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int):
            return str(v)
        return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'

    return "".join(f'user_pref("{k}", {value(v)});\n' for k, v in USER_JS.items())


class FirefoxRun(BrowserRun):
    """BrowserRun (the RP, Xvfb, screenshots) with Firefox ESR as the browser."""

    def start_browser(self) -> str:
        firefox = shutil.which("firefox-esr") or shutil.which("firefox")
        if not firefox:
            raise FileNotFoundError("Firefox is not installed (apt-get install firefox-esr)")
        logs = self.out / "logs"
        shutil.rmtree(PROFILE, ignore_errors=True)
        PROFILE.mkdir(parents=True)
        (PROFILE / "user.js").write_text(_user_js())
        home = PROFILE.parent / "firefox-home"
        home.mkdir(parents=True, exist_ok=True)
        env = dict(
            os.environ,
            DISPLAY=DISPLAY,
            HOME=str(home),
            MOZ_DISABLE_CONTENT_SANDBOX="1",
            MOZ_CRASHREPORTER_DISABLE="1",
            MOZ_LOG="webauthn_service:4,webauthn_linux:4",
        )
        argv = [firefox, "--no-remote", "--profile", str(PROFILE), "--new-instance", PAGE]
        with open(logs / self.log_name, "a") as fh:
            fh.write("$ " + " ".join(argv) + "\n")
        self.browser = subprocess.Popen(
            argv, env=env, stdin=subprocess.DEVNULL,
            stdout=open(logs / self.log_name, "ab"), stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        version = subprocess.run(
            [firefox, "--version"], capture_output=True, text=True, check=False,
            env=dict(os.environ, HOME=str(home)),
        ).stdout.strip()  # fmt: skip
        self.result["browser"] = version
        return version


def plan() -> list[tuple[str, Callable[[Any], str], tuple[str, ...]]]:
    state: dict[str, FirefoxRun] = {}

    def register(s: Any) -> str:
        run = FirefoxRun(
            s.out, s.out / "logs" / "rp-server-firefox.log", name="Firefox",
            log_name="firefox.log", result_file="firefox-result.json",
            shot_name="firefox-screenshot.png",
        )  # fmt: skip
        state["run"] = run
        s.cleanups.append(run.stop)
        root_pem, aaguid = guest_browser.key_facts(s)
        run.serve(root_pem, aaguid)
        run.start_xvfb()
        started = time.monotonic()
        version = run.start_browser()
        s.log(f"{version}; waiting for the page's script to run")
        if not _wait(run, run.page_running, guest_browser.PAGE_LOAD_TIMEOUT):
            raise_fail(s, f"Firefox never ran the page in {guest_browser.PAGE_LOAD_TIMEOUT} s")
        if not _wait(run, run.registered, 180):
            raise_fail(s, _failure(run, "registration"))
        reg = run.result["register_none"]  # the page asks for attestation "none"
        return (
            f"{version}: {reg['alg']} discoverable credential (residentKey required) registered "
            f"{time.monotonic() - started:.0f} s after launch; Fido2Server verified it"
        )

    def login(s: Any) -> str:
        run = state["run"]
        if not _wait(run, run.logged_in, 120):
            raise_fail(s, _failure(run, "usernameless login"))
        res = run.result["login"]
        if not res["usernameless"] or not res["user_handle_checked"]:
            raise_fail(s, "the login was not the usernameless one")
        return (
            "empty allowCredentials: the key chose the credential, its userHandle is the "
            f"registered user id, Fido2Server verified the assertion (sign count "
            f"{res['sign_count']})"
        )

    def on_key(s: Any) -> str:
        run = state["run"]
        (cred,) = run.credentials
        cred_id = bytes(cred.credential_id)
        res = s.check(
            s.run([s.device.softkey, "credentials", "list", "--state", str(s.device.state),
                   "--json"]),
            "softkey credentials list",
        )  # fmt: skip
        import json

        listed = json.loads(res.out[res.out.index("{") :]).get("credentials", [])
        mine = [c for c in listed if c.get("rp_id") == "localhost"]
        if [c.get("credential_id") for c in mine] != [cred_id.hex()]:
            raise_fail(s, f"softkey credentials list shows {mine}, not the one the RP stored")
        if not credential_answers(s, "localhost", cred_id):
            raise_fail(s, "the stored credential ID does not answer on softkey")
        return (
            "`softkey credentials list` shows exactly the resident credential the RP stored "
            "(same ID, RP localhost), and it answers a silent getAssertion over hidraw"
        )

    def pin_uv(s: Any) -> str:
        run = state["run"]
        set_pin(s, PIN)
        run.uv_ready.set()
        # Firefox asks for the PIN in a prompt of its own window. It is up once Firefox has
        # read the key's PIN retries; give it a moment to draw, then type into the window.
        deadline = time.monotonic() + 120
        typed = 0
        while time.monotonic() < deadline and not run.logged_in_uv.is_set():
            if run.failed.is_set() or (run.browser is not None and run.browser.poll() is not None):
                break
            time.sleep(8 if typed == 0 else 15)
            if run.logged_in_uv.is_set():
                break
            type_pin(s, run, PIN, window_class="firefox")
            typed += 1
            if _wait(run, run.logged_in_uv, 10):
                break
        if not run.logged_in_uv.is_set():
            with_shot = ""
            try:
                shot = run.screenshot()
                shutil.copy(shot, run.out / "firefox-pin.png")
                with_shot = "; screenshot firefox-pin.png"
            except Exception as exc:  # a missing screenshot must not hide the real failure
                s.log(f"screenshot failed: {exc}")
            raise_fail(s, _failure(run, "login with the PIN") + f" ({typed} tries){with_shot}")
        res = run.result["login_uv"]
        if not res["user_verified"]:
            raise_fail(s, "the assertion lacks the UV flag")
        with_shot = ""
        try:
            with_shot = f"; {run.screenshot().name}"
        except Exception as exc:  # the login is verified; a missing picture is only logged
            s.log(f"screenshot failed: {exc}")
        run.stop()
        return (
            f"Firefox's PIN prompt answered with xdotool ({typed} tries); usernameless login "
            f"with UV verified by Fido2Server (UV flag), sign count {res['sign_count']}" + with_shot
        )

    return [
        ("firefox.register_rk", register, ("device.hidraw",)),
        ("firefox.login_usernameless", login, ("firefox.register_rk",)),
        ("firefox.on_key", on_key, ("firefox.login_usernameless",)),
        ("firefox.pin_uv", pin_uv, ("firefox.login_usernameless",)),
    ]
