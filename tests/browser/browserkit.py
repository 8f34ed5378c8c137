"""Shared helpers of the browser tests: finding Chromium, and a tiny relying party.

The relying party is python-fido2's ``Fido2Server`` behind a stdlib HTTP server on
http://localhost:PORT (a secure context, so browsers offer WebAuthn there). Its page runs
plain WebAuthn JavaScript that knows nothing of softkey: it fetches options from the server,
turns their base64url members into ArrayBuffers, calls ``navigator.credentials.create/get``
and posts the result back, where ``register_complete`` / ``authenticate_complete`` verify it
(attestation signatures too). Every verified ceremony lands in ``RelyingParty.verified``.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.util import find_spec
from typing import Any

import pytest
from fido2.attestation import Attestation
from fido2.server import Fido2Server
from fido2.utils import websafe_decode, websafe_encode
from fido2.webauthn import (
    AttestationObject,
    AttestedCredentialData,
    AuthenticationResponse,
    PublicKeyCredentialRpEntity,
    PublicKeyCredentialUserEntity,
)

# Headless and quiet: no sandbox (CI runs as root), no GPU, no calls home, no updates.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium_path() -> str | None:
    """The system's Chromium (Debian's `chromium`), or $SOFTKEY_CHROMIUM."""
    return (
        os.environ.get("SOFTKEY_CHROMIUM")
        or shutil.which("chromium")
        or shutil.which("chromium-browser")
    )


def missing_browser_support(*, pytest_playwright: bool = False) -> str | None:
    """Why browser tests cannot run here, or None."""
    if find_spec("playwright") is None:
        return "the playwright package is not installed (pip install -e '.[test]')"
    if pytest_playwright and find_spec("pytest_playwright") is None:
        return "the pytest-playwright package is not installed (pip install -e '.[test]')"
    if chromium_path() is None:
        return (
            "no Chromium found (apt-get install chromium, or set SOFTKEY_CHROMIUM to a "
            "Chromium binary); Playwright's own browser downloads are not used"
        )
    return None


def require_browser(*, pytest_playwright: bool = False) -> str:
    """The Chromium path; else skip, or fail where SOFTKEY_REQUIRE_BROWSER=1 (CI)."""
    reason = missing_browser_support(pytest_playwright=pytest_playwright)
    if reason is not None:
        if os.environ.get("SOFTKEY_REQUIRE_BROWSER") == "1":
            pytest.fail(f"browser tests are required (SOFTKEY_REQUIRE_BROWSER=1) but {reason}")
        pytest.skip(reason)
    path = chromium_path()
    assert path is not None
    return path


def launch_options() -> dict[str, Any]:
    return {"executable_path": require_browser(), "headless": True, "args": CHROMIUM_ARGS}


def _verify_attestation(attestation: AttestationObject, client_data_hash: bytes) -> None:
    # The statement's signature over authData || clientDataHash (trust in the certificate
    # chain is docs/attestation.md's business, not these tests').
    Attestation.for_type(attestation.fmt)().verify(
        attestation.att_stmt, attestation.auth_data, client_data_hash
    )


class RelyingParty:
    """Fido2Server plus users; the HTTP handler calls ``begin`` / ``complete``."""

    def __init__(self) -> None:
        self.server = Fido2Server(
            PublicKeyCredentialRpEntity(id="localhost", name="softkey browser RP"),
            attestation="direct",  # type: ignore[arg-type]
            verify_attestation=_verify_attestation,
        )
        self.users: dict[str, dict[str, Any]] = {}
        self.verified: list[dict[str, Any]] = []
        self._states: dict[str, tuple[str, Any, str | None]] = {}
        self._lock = threading.Lock()
        self.origin = ""

    def credentials(self, username: str | None = None) -> list[AttestedCredentialData]:
        users = [self.users[username]] if username else list(self.users.values())
        return [c for u in users for c in u["credentials"]]

    def begin(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        username = body.get("username")
        extensions = body.get("extensions")
        if kind == "register":
            user = self.users.setdefault(username, {"id": os.urandom(16), "credentials": []})
            options, state = self.server.register_begin(
                PublicKeyCredentialUserEntity(
                    id=user["id"], name=username, display_name=username.title()
                ),
                credentials=user["credentials"] if body.get("exclude") else None,
                resident_key_requirement=body.get("residentKey", "required"),
                user_verification=body.get("userVerification", "discouraged"),
                extensions=extensions,
            )
        else:
            options, state = self.server.authenticate_begin(
                self.credentials(username) if username else None,
                user_verification=body.get("userVerification", "discouraged"),
                extensions=extensions,
            )
        public_key = dict(options)["publicKey"]
        # What a misconfigured RP sends (for SecurityError / NotSupportedError tests).
        if "rpId" in body:
            if kind == "register":
                public_key["rp"]["id"] = body["rpId"]
            else:
                public_key["rpId"] = body["rpId"]
        if "algorithms" in body:
            public_key["pubKeyCredParams"] = [
                {"type": "public-key", "alg": alg} for alg in body["algorithms"]
            ]
        token = websafe_encode(os.urandom(12))
        with self._lock:
            self._states[token] = (kind, state, username)
        return {"token": token, "publicKey": public_key}

    def complete(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            state_kind, state, username = self._states.pop(body["token"])
        assert state_kind == kind
        credential = body["credential"]
        if kind == "register":
            auth_data = self.server.register_complete(state, credential)
            assert auth_data.credential_data is not None
            self.users[username]["credentials"].append(auth_data.credential_data)
            record = {
                "ceremony": "register",
                "username": username,
                "credential_id": websafe_encode(auth_data.credential_data.credential_id),
                "user_verified": auth_data.is_user_verified(),
                "authenticator_extensions": _plain(auth_data.extensions or {}),
            }
        else:
            response = AuthenticationResponse.from_dict(credential)
            if username is None:  # usernameless: the user handle names the account
                handle = response.response.user_handle
                username = next((n for n, u in self.users.items() if u["id"] == handle), None)
                if username is None:
                    raise ValueError("unknown user handle")
            matched = self.server.authenticate_complete(state, self.credentials(username), response)
            auth_data = response.response.authenticator_data
            record = {
                "ceremony": "login",
                "username": username,
                "credential_id": websafe_encode(matched.credential_id),
                "user_verified": auth_data.is_user_verified(),
                "sign_count": auth_data.counter,
            }
        record["client_extension_results"] = body.get("extensions", {})
        self.verified.append(record)
        return record


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return websafe_encode(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


PAGE = """<!doctype html>
<meta charset="utf-8">
<title>softkey browser RP</title>
<p>A relying party page with plain WebAuthn code.</p>
<script>
const fromB64 = (text) => Uint8Array.from(
  atob(text.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((text.length + 3) % 4)),
  (c) => c.charCodeAt(0)).buffer;
const toB64 = (buffer) => btoa(String.fromCharCode(...new Uint8Array(buffer)))
  .replace(/\\+/g, "-").replace(/\\//g, "_").replace(/=+$/, "");

// ArrayBuffers anywhere in extension outputs -> base64url, to post them.
function encodeBuffers(value) {
  if (value instanceof ArrayBuffer) return toB64(value);
  if (Array.isArray(value)) return value.map(encodeBuffers);
  if (value && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, encodeBuffers(v)]));
  }
  return value;
}

async function post(path, body) {
  const answer = await fetch(path, {method: "POST", body: JSON.stringify(body)});
  const json = await answer.json();
  if (!answer.ok) throw new Error("server: " + json.error);
  return json;
}

function failure(e) {
  return {error: {name: e.name, message: e.message, domException: e instanceof DOMException}};
}

function creationOptions(json) {
  const options = {...json, challenge: fromB64(json.challenge),
                   user: {...json.user, id: fromB64(json.user.id)}};
  if (json.excludeCredentials) {
    options.excludeCredentials = json.excludeCredentials.map((c) => ({...c, id: fromB64(c.id)}));
  }
  return options;
}

function requestOptions(json) {
  const options = {...json, challenge: fromB64(json.challenge)};
  options.allowCredentials = (json.allowCredentials || []).map(
    (c) => ({...c, id: fromB64(c.id)}));
  const ext = json.extensions;
  if (ext && ext.prf && ext.prf.eval) {
    options.extensions = {...ext, prf: {eval: {first: fromB64(ext.prf.eval.first)}}};
  }
  if (ext && ext.largeBlob && ext.largeBlob.write) {
    options.extensions = {...ext, largeBlob: {write: fromB64(ext.largeBlob.write)}};
  }
  return options;
}

// Registration: the response encoded by hand, member by member, as older sites do.
async function register(username, settings = {}) {
  const begin = await post("/register/begin", {username, ...settings});
  let credential;
  try {
    credential = await navigator.credentials.create({publicKey: creationOptions(begin.publicKey)});
  } catch (e) {
    return failure(e);
  }
  const response = credential.response;
  const shape = {
    isPublicKeyCredential: credential instanceof PublicKeyCredential,
    isAttestationResponse: response instanceof AuthenticatorAttestationResponse,
    attachment: credential.authenticatorAttachment,
    transports: response.getTransports(),
    publicKey: toB64(response.getPublicKey()),
    publicKeyAlgorithm: response.getPublicKeyAlgorithm(),
    authenticatorData: toB64(response.getAuthenticatorData()),
    toJSONid: credential.toJSON().id,
  };
  const extensions = encodeBuffers(credential.getClientExtensionResults());
  const body = {
    id: credential.id, rawId: toB64(credential.rawId), type: credential.type,
    response: {clientDataJSON: toB64(response.clientDataJSON),
               attestationObject: toB64(response.attestationObject),
               transports: response.getTransports()},
    authenticatorAttachment: credential.authenticatorAttachment,
    clientExtensionResults: extensions,
  };
  try {
    return {server: await post("/register/complete", {token: begin.token, credential: body,
                                                      extensions}), shape};
  } catch (e) {
    return {serverError: e.message};
  }
}

// Login: the credential's own toJSON() goes to the server.
async function login(username, settings = {}) {
  const {mediation, abort, ...rest} = settings;
  const begin = await post("/login/begin", {username, ...rest});
  const request = {publicKey: requestOptions(begin.publicKey)};
  if (mediation) request.mediation = mediation;
  if (abort) {
    const controller = new AbortController();
    controller.abort();
    request.signal = controller.signal;
  }
  let credential;
  try {
    credential = await navigator.credentials.get(request);
  } catch (e) {
    return failure(e);
  }
  return finishLogin(begin, credential);
}

const typeOf = (value) => value === undefined ? null : Object.prototype.toString.call(value);

async function finishLogin(begin, credential) {
  const results = credential.getClientExtensionResults();
  const shape = {
    isPublicKeyCredential: credential instanceof PublicKeyCredential,
    isAssertionResponse: credential.response instanceof AuthenticatorAssertionResponse,
    userHandle: credential.response.userHandle && toB64(credential.response.userHandle),
    prfFirstType: typeOf(results.prf && results.prf.results && results.prf.results.first),
    largeBlobType: typeOf(results.largeBlob && results.largeBlob.blob),
  };
  const extensions = encodeBuffers(results);
  try {
    return {server: await post("/login/complete", {token: begin.token,
                                                   credential: credential.toJSON(),
                                                   extensions}), shape};
  } catch (e) {
    return {serverError: e.message};
  }
}

// Conditional UI: started as a page would on load, answered when the user picks.
let conditional = null;
async function startConditional() {
  const begin = await post("/login/begin", {username: null});
  const controller = new AbortController();
  const state = {settled: false, controller, outcome: null};
  state.promise = navigator.credentials.get({
    publicKey: requestOptions(begin.publicKey), mediation: "conditional",
    signal: controller.signal,
  }).then((credential) => finishLogin(begin, credential), failure)
    .then((outcome) => { state.settled = true; state.outcome = outcome; return outcome; });
  conditional = state;
  return "started";
}
</script>
"""


class _Handler(BaseHTTPRequestHandler):
    rp: RelyingParty

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet tests
        return None

    def _send(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path == "/favicon.ico":
            self._send(204, b"", "image/x-icon")
            return
        if self.path != "/":
            self._send(404, b"not found", "text/plain")
            return
        self._send(200, PAGE.encode(), "text/html; charset=utf-8")

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
            kind, step = self.path.strip("/").split("/")
            rp = self.rp
            kind = {"register": "register", "login": "login"}[kind]
            result = rp.begin(kind, body) if step == "begin" else rp.complete(kind, body)
            status = 200
        except Exception as exc:  # noqa: BLE001 - the page shows the server's refusal
            result, status = {"error": f"{type(exc).__name__}: {exc}"}, 400
        self._send(status, json.dumps(result).encode(), "application/json")


class RpServer:
    """The relying party on http://localhost:PORT (port 0: the OS picks a free one)."""

    def __init__(self) -> None:
        self.rp = RelyingParty()
        handler = type("Handler", (_Handler,), {"rp": self.rp})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.origin = f"http://localhost:{self.httpd.server_address[1]}"
        self.rp.origin = self.origin
        # A short poll interval: shutdown() waits for one, once per test.
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    @property
    def url(self) -> str:
        return self.origin + "/"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def decode(text: str) -> bytes:
    return websafe_decode(text)
