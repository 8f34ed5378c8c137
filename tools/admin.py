"""Operator actions on one ``Authenticator``: what the `softkey` verbs do, minus the terminal.

Each operation takes an ``Authenticator`` and JSON-able arguments and returns a JSON-able
dict (bytes as lowercase hex), so the very same code runs offline on a state file and inside
a running key behind its control socket (``dispatch``). Results never contain secrets: no
master key, no PIN, no private key, no pinUvAuthToken.

``fill`` does not write the slot table itself: it sends real CBOR authenticatorMakeCredential
requests through ``Authenticator.handle_cbor`` so the device's own capacity rule and errors
apply (CTAP 2.1 §6.1.2 step 15: KEY_STORE_FULL).
"""

from __future__ import annotations

import hashlib
import inspect
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization

from softkey.authenticator import Authenticator, AutoPresence, Status, cbor, cose, params
from softkey.authenticator.ctap import CoseAlg
from softkey.authenticator.keywrap import CRED_RANDOM_LEN, CredentialSecrets
from softkey.authenticator.store import ResidentCredential
from softkey.tools.trace import status_name

DEFAULT_FILL_RP = "fill.softkey.test"
DEFAULT_USER_PREFIX = "user"
# One set of request-field limits for the CTAP path and this admin path (params.py).
MAX_USER_HANDLE = params.MAX_USER_HANDLE_LEN

ALG_NAMES: dict[int, str] = {CoseAlg.ES256: "ES256", CoseAlg.EDDSA: "EdDSA", CoseAlg.ES384: "ES384"}


class AdminError(Exception):
    """An operation the key refuses; ``str()`` is one sentence saying what to do."""

    def __init__(self, message: str, *, code: str = "refused") -> None:
        super().__init__(message)
        self.code = code


# -- records ---------------------------------------------------------------------------------


def _hex(value: bytes | None) -> str | None:
    return value.hex() if value is not None else None


def slot_usage(auth: Authenticator) -> dict[str, int | None]:
    used = auth.store.resident_count()
    capacity = auth.profile.rk_capacity
    return {
        "used": used,
        "capacity": capacity,
        "free": None if capacity is None else max(0, capacity - used),
    }


def credential_record(auth: Authenticator, cred: ResidentCredential) -> dict[str, Any]:
    """The stable JSON form of one resident credential (see README, CLI reference)."""
    secrets = auth.wrapper.unwrap(cred.credential_id, cred.rp_id_hash)
    return {
        "credential_id": cred.credential_id.hex(),
        "rp_id": cred.rp_id,
        "rp_name": cred.rp_name,
        "user_handle": cred.user_id.hex(),
        "user_name": cred.user_name,
        "user_display_name": cred.user_display_name,
        "alg": secrets.alg if secrets else None,
        "cred_protect": cred.cred_protect,
        "counter": auth.counter(cred.credential_id),
        "created": cred.created,
    }


def _rp_filter(rp: str | None) -> str | None:
    return rp if rp else None


# -- read operations -------------------------------------------------------------------------


def pin_state(auth: Authenticator) -> dict[str, Any]:
    """PIN set? retries left? Uses the PIN module's admin API when it offers one."""
    status_fn = getattr(auth, "pin_status", None)
    if callable(status_fn):
        status = status_fn()
        if not isinstance(status, dict):
            status = vars(status) if hasattr(status, "__dict__") else {}
        return {
            "set": bool(status.get("set", status.get("is_set", False))),
            "retries": status.get("retries"),
            "uv_retries": status.get("uv_retries"),
            "min_length": status.get("min_length", auth.profile.min_pin_length),
            "force_change": bool(status.get("force_change", False)),
        }
    # Fallback: what any platform can learn over CTAP (getInfo + getPINRetries).
    info = auth.info()
    pin_set = bool(info.get("options", {}).get("clientPin", False))
    retries = None
    response = auth.handle_cbor(b"\x06" + cbor.encode({1: 1, 2: 1}))
    if response[:1] == b"\x00" and len(response) > 1:
        retries = cbor.decode(response[1:]).get(3)
    return {
        "set": pin_set,
        "retries": retries,
        "uv_retries": None,
        "min_length": auth.profile.min_pin_length,
        "force_change": False,
    }


def info(auth: Authenticator) -> dict[str, Any]:
    """Profile, AAGUID, versions, slots, PIN, counters: the `softkey info --json` body."""
    import uuid

    raw = auth.info()
    profile = auth.profile
    with auth.store.transaction() as db:
        tracked, signatures = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(value), 0) FROM counters"
        ).fetchone()
    return {
        "profile": profile.name,
        "description": profile.description,
        "ctap": profile.ctap,
        "aaguid": str(uuid.UUID(bytes=profile.aaguid)),
        "versions": list(raw.get("versions", [])),
        "extensions": list(raw.get("extensions", [])),
        "options": dict(raw.get("options", {})),
        "algorithms": list(profile.algorithms),
        "pin_uv_auth_protocols": list(raw.get("pin_uv_auth_protocols", [])),
        "credential_management": profile.credman,
        "resident_credentials": slot_usage(auth),
        "pin": pin_state(auth),
        "counters": {"credentials": tracked, "signatures": signatures},
        "firmware_version": raw.get("firmware_version"),
        "max_msg_size": raw.get("max_msg_size"),
    }


def list_credentials(auth: Authenticator, rp: str | None = None) -> dict[str, Any]:
    creds = auth.credentials(_rp_filter(rp))
    return {
        **slot_usage(auth),
        "credentials": [credential_record(auth, c) for c in creds],
    }


# -- delete ----------------------------------------------------------------------------------

_HEX = re.compile(r"[0-9a-fA-F]+")


def match_prefix(auth: Authenticator, prefix: str) -> ResidentCredential:
    """The one resident credential whose ID starts with the hex ``prefix``."""
    if not _HEX.fullmatch(prefix):
        raise AdminError(
            f"{prefix!r} is not a hex credential ID prefix; copy one from "
            "`softkey credentials list`",
            code="usage",
        )
    prefix = prefix.lower()
    matches = [c for c in auth.credentials() if c.credential_id.hex().startswith(prefix)]
    if not matches:
        raise AdminError(
            f"no resident credential ID starts with {prefix}; non-resident credentials are "
            "not stored on the key (only `softkey reset` revokes them), see "
            "`softkey credentials list`",
            code="not_found",
        )
    if len(matches) > 1:
        raise AdminError(
            f"{len(matches)} credentials start with {prefix}; give more hex digits",
            code="ambiguous",
        )
    return matches[0]


def device_can_delete(auth: Authenticator) -> str | None:
    """None if the emulated device itself offers deletion, else a note saying so."""
    if auth.profile.credman == "none":
        return (
            f"a real {auth.profile.name} key (CTAP {auth.profile.ctap}) has no credential "
            "management: only a reset frees its slots; softkey deleted offline as the operator"
        )
    return None


def delete_credentials(
    auth: Authenticator,
    ids: list[str] | None = None,
    rp: str | None = None,
    all: bool = False,  # noqa: A002 - mirrors the --all option
) -> dict[str, Any]:
    """Delete resident credentials by unique ID prefix, by RP, or all of them."""
    if sum(bool(x) for x in (ids, rp, all)) != 1:
        raise AdminError("give credential ID prefixes, --rp RP or --all", code="usage")
    if ids:
        targets = [match_prefix(auth, p) for p in ids]
    elif rp:
        targets = auth.credentials(rp)
        if not targets:
            raise AdminError(
                f"no resident credential for {rp}; see `softkey credentials list`",
                code="not_found",
            )
    else:
        targets = auth.credentials()
    records = [credential_record(auth, c) for c in targets]
    for cred in targets:
        auth.delete_credential(cred.credential_id)
    return {
        "deleted": records,
        **slot_usage(auth),
        "device_note": device_can_delete(auth),
    }


# -- fill ------------------------------------------------------------------------------------


@contextmanager
def operator_presence(auth: Authenticator) -> Iterator[None]:
    """The operator is the person at the key: approve presence for this operation only."""
    saved = auth.presence
    auth.presence = AutoPresence()
    try:
        yield
    finally:
        auth.presence = saved


@dataclass
class _PinAuth:
    """pinUvAuthParam source for makeCredential on a key with a PIN (via ClientPIN)."""

    auth: Authenticator
    pin: str
    rp_id: str
    _token: bytes | None = None
    _client_pin: Any = None

    def _fresh_token(self) -> None:
        from fido2.ctap import CtapError as Fido2CtapError
        from fido2.ctap2 import ClientPin, Ctap2

        from softkey.transports.inprocess import VirtualCtapDevice

        client_pin = ClientPin(Ctap2(VirtualCtapDevice(self.auth)))
        try:
            self._token = client_pin.get_pin_token(
                self.pin, ClientPin.PERMISSION.MAKE_CREDENTIAL, self.rp_id
            )
        except Fido2CtapError as exc:
            code = Status(int(exc.code)) if int(exc.code) in Status._value2member_map_ else None
            if code == Status.PIN_INVALID:
                raise AdminError("wrong PIN; retry with the right one") from None
            if code in (Status.PIN_BLOCKED, Status.PIN_AUTH_BLOCKED):
                raise AdminError(
                    "the PIN is blocked; reset the key with `softkey reset`"
                    if code == Status.PIN_BLOCKED
                    else "too many wrong PINs since power-up; replug the key and retry"
                ) from None
            raise AdminError(f"could not get a PIN token: {exc}") from None
        self._client_pin = client_pin

    def members(self, client_data_hash: bytes, refresh: bool = False) -> dict[int, Any]:
        if self._token is None or refresh:
            self._fresh_token()
        protocol = self._client_pin.protocol
        return {
            8: protocol.authenticate(self._token, client_data_hash),
            9: protocol.VERSION,
        }


def _next_user_number(auth: Authenticator, rp_id: str, prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"-(\d+)")
    highest = 0
    for cred in auth.credentials(rp_id):
        match = pattern.fullmatch(cred.user_name or "")
        if match:
            highest = max(highest, int(match.group(1)))
    return highest + 1


# Errors after which a fresh pinUvAuthToken may help (its permissions were consumed).
_TOKEN_RETRY = {Status.PIN_AUTH_INVALID, Status.UNAUTHORIZED_PERMISSION, Status.PUAT_REQUIRED}


def fill(
    auth: Authenticator,
    count: int | None = None,
    rp: str = DEFAULT_FILL_RP,
    user_prefix: str = DEFAULT_USER_PREFIX,
    pin: str | None = None,
    on_created: Callable[[int], None] | None = None,
    start: int | None = None,
) -> dict[str, Any]:
    """Make up to ``count`` resident credentials (None: until the key says it is full).

    Stops at the first error the device returns; the result says how many were created and
    why it stopped (``stopped``: None, or {status, reason}). ``until_full`` ending with
    KEY_STORE_FULL is the normal end, reported with ``full: true``. ``start``: the number of
    the first user (``next_number`` of the previous call) instead of scanning the slots.
    ``on_created(n)`` hears how many credentials are made, only once they are committed.
    """
    if count is None and auth.profile.rk_capacity is None:
        raise AdminError(
            f"the {auth.profile.name} profile has no slot limit, so it is never full; "
            "use --count N instead of --until-full",
            code="usage",
        )
    if count is not None and count < 0:
        raise AdminError("--count must be at least 0", code="usage")
    rp_problem = params.rp_id_problem(rp) if rp else "it must not be empty"
    if rp_problem:
        raise AdminError(f"--rp is not a usable RP ID: {rp_problem}", code="usage")
    pin_auth = _PinAuth(auth, pin, rp) if pin else None
    if start is not None and (not isinstance(start, int) or start < 1):
        raise AdminError("start must be a positive number", code="usage")
    number = start if start is not None else _next_user_number(auth, rp, user_prefix)
    cred_params = [{"alg": alg, "type": "public-key"} for alg in auth.profile.algorithms]
    created: list[str] = []
    stopped: dict[str, Any] | None = None
    # Without a PIN, one commit for the whole batch instead of one fsync per credential: the
    # requests are the same makeCredential calls, only their writes land together. With a
    # PIN, every request commits on its own so a PIN retry counter change is never rolled
    # back with the batch.
    batch = auth.store.transaction() if pin_auth is None else nullcontext()
    with operator_presence(auth), batch:
        while count is None or len(created) < count:
            name = f"{user_prefix}-{number:04d}"
            user_id = name.encode()[:MAX_USER_HANDLE]
            client_data_hash = hashlib.sha256(b"softkey fill " + os.urandom(16)).digest()
            request: dict[int, Any] = {
                1: client_data_hash,
                2: {"id": rp, "name": rp},
                3: {"id": user_id, "name": name, "displayName": name},
                4: cred_params,
                7: {"rk": True},
            }
            if pin_auth is not None:
                request.update(pin_auth.members(client_data_hash))
            response = auth.handle_cbor(b"\x01" + cbor.encode(request))
            if response[0] in _TOKEN_RETRY and pin_auth is not None:
                request.update(pin_auth.members(client_data_hash, refresh=True))
                response = auth.handle_cbor(b"\x01" + cbor.encode(request))
            if response[0] != Status.SUCCESS:
                outcome = auth.last_outcome
                stopped = {
                    "status": status_name(response[0]),
                    "reason": outcome.reason if outcome else "",
                }
                break
            created.append(name)
            number += 1
            if on_created is not None and pin_auth is not None:
                on_created(len(created))  # this request's own transaction has committed
    if on_created is not None and pin_auth is None and created:
        on_created(len(created))  # the batch commits as the `with` ends: report only now
    usage = slot_usage(auth)
    full = stopped is not None and stopped["status"] == status_name(Status.KEY_STORE_FULL)
    return {
        "rp_id": rp,
        "created": len(created),
        "users": created,
        "next_number": number,
        "full": full or (usage["free"] == 0),
        "stopped": stopped,
        **usage,
    }


# -- add-credential --------------------------------------------------------------------------


def load_private_key_pem(pem: bytes) -> tuple[int, bytes]:
    """(COSE alg, raw private key) from a PKCS#8 (or SEC1) PEM; AdminError if unusable."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except TypeError:
        raise AdminError(
            "the private key PEM is encrypted; decrypt it first "
            "(openssl pkcs8 -in key.pem -nocrypt -topk8 -out plain.pem)",
            code="usage",
        ) from None
    except (ValueError, Exception) as exc:  # cryptography raises several types for bad PEM
        raise AdminError(
            f"cannot read the private key ({exc.__class__.__name__}); give a PKCS#8 PEM "
            "(-----BEGIN PRIVATE KEY-----) of a P-256, P-384 or Ed25519 key",
            code="usage",
        ) from None
    try:
        return cose.from_private_key(key)
    except ValueError as exc:
        raise AdminError(f"{exc}", code="usage") from None


def add_credential(
    auth: Authenticator,
    rp: str,
    private_key_pem: str,
    credential_id: str | None = None,
    user_handle: str | None = None,
    user_name: str | None = None,
    user_display_name: str | None = None,
    resident: bool = False,
    counter: int = 0,
    cred_protect: int = 1,
) -> dict[str, Any]:
    """Seed a credential with a given private key (what WebDriver's addCredential offers).

    The credential ID is always this key's wrapped format (the private key travels inside
    it, encrypted under the master key), so an arbitrary ID cannot be honoured; an ID this
    key made earlier for the same RP and private key is accepted (re-seeding is idempotent).
    """
    rp_problem = params.rp_id_problem(rp) if rp else "it must not be empty"
    if rp_problem:
        raise AdminError(f"--rp is not a usable RP ID: {rp_problem}", code="usage")
    alg, raw = load_private_key_pem(private_key_pem.encode())
    if alg not in auth.profile.algorithms:
        offered = ", ".join(ALG_NAMES.get(a, str(a)) for a in auth.profile.algorithms)
        raise AdminError(
            f"the {auth.profile.name} profile does not make {ALG_NAMES.get(alg, str(alg))} "
            f"credentials (it offers {offered}); use a key of one of those types",
            code="usage",
        )
    if not 0 <= counter <= 0xFFFFFFFF:
        raise AdminError("--counter must be between 0 and 4294967295", code="usage")
    if cred_protect not in (1, 2, 3):
        raise AdminError("--cred-protect must be 1, 2 or 3", code="usage")
    user_id: bytes | None = None
    if resident:
        if user_handle is None:
            raise AdminError(
                "a resident credential needs --user-handle (the RP's user.id, in hex)",
                code="usage",
            )
        user_id = _parse_hex(user_handle, "--user-handle")
        handle_problem = params.user_handle_problem(user_id)
        if handle_problem:
            raise AdminError(f"--user-handle: {handle_problem}", code="usage")
    elif user_handle is not None or user_name is not None or user_display_name is not None:
        raise AdminError(
            "--user-handle/--user-name only apply to --resident credentials: a non-resident "
            "credential stores no user on the key",
            code="usage",
        )

    rp_hash = hashlib.sha256(rp.encode()).digest()
    if credential_id is not None:
        wanted = _parse_hex(credential_id, "--credential-id")
        found = auth.wrapper.unwrap(wanted, rp_hash)
        if found is None or found.private_key != raw or found.discoverable != resident:
            raise AdminError(
                "softkey cannot adopt that credential ID: its IDs carry the private key "
                "encrypted under this key's master key, so they are always made by the key; "
                "omit --credential-id and give your RP fixture the ID this command prints",
                code="usage",
            )
        cred_id = wanted
    else:
        secrets = CredentialSecrets(
            alg=alg,
            private_key=raw,
            discoverable=resident,
            cred_protect=cred_protect,
            cred_random=auth.random(CRED_RANDOM_LEN),
        )
        cred_id = auth.wrapper.wrap(secrets, rp_hash)

    with auth.store.transaction():
        if resident:
            assert user_id is not None
            existing = auth.store.find_resident(rp_hash, user_id)
            capacity = auth.profile.rk_capacity
            used = auth.store.resident_count()
            if existing is None and capacity is not None and used >= capacity:
                raise AdminError(slots_full_message(used, capacity))
            auth.store.put_resident(
                ResidentCredential(
                    credential_id=cred_id,
                    rp_id=rp,
                    rp_id_hash=rp_hash,
                    user_id=user_id,
                    rp_name=rp,
                    user_name=params.truncate_name(user_name),
                    user_display_name=params.truncate_name(user_display_name),
                    cred_protect=cred_protect,
                )
            )
        auth.store.set_counter(cred_id, counter)
    public = cose.public_cose(alg, raw)
    return {
        "credential_id": cred_id.hex(),
        "rp_id": rp,
        "resident": resident,
        "user_handle": _hex(user_id),
        "alg": alg,
        "counter": counter,
        "public_key_cose": cbor.encode(public).hex(),
        **slot_usage(auth),
    }


def _parse_hex(value: str, option: str) -> bytes:
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise AdminError(f"{option} must be hex digits, e.g. 0a1b2c", code="usage") from None


def slots_full_message(used: int, capacity: int) -> str:
    return f"slots full ({used}/{capacity}); delete some with `softkey credentials delete` or reset"


# -- reset and PIN -----------------------------------------------------------------------------


def reset(auth: Authenticator) -> dict[str, Any]:
    """Factory reset as the operator: no 10 s window, no touch (CTAP 2.1 §6.6 applies only
    to the authenticatorReset command a platform sends)."""
    deleted = auth.store.resident_count()
    auth.factory_reset()
    return {"deleted_resident": deleted, **slot_usage(auth)}


def pin_status(auth: Authenticator) -> dict[str, Any]:
    return pin_state(auth)


def _pin_api(auth: Authenticator, name: str) -> Callable[..., Any]:
    fn = getattr(auth, name, None)
    if not callable(fn):
        raise AdminError(
            "this softkey build cannot manage PINs yet (no ClientPIN support); upgrade softkey"
        )
    return fn


def _pin_call(fn: Callable[..., Any], *args: str) -> None:
    from softkey.authenticator import CtapError

    try:
        fn(*args)
    except CtapError as exc:
        raise AdminError(_pin_error(exc.status, exc.reason)) from None
    except ValueError as exc:
        raise AdminError(str(exc)) from None


def _pin_error(status: int, reason: str) -> str:
    messages: dict[int, str] = {
        Status.PIN_INVALID: "wrong current PIN; retry with the right one",
        Status.PIN_BLOCKED: "the PIN is blocked; reset the key with `softkey reset`",
        Status.PIN_AUTH_BLOCKED: "too many wrong PINs since power-up; replug the key and retry",
        Status.PIN_POLICY_VIOLATION: "the new PIN breaks the PIN policy"
        + (f" ({reason})" if reason else "")
        + "; choose another",
        Status.NOT_ALLOWED: "a PIN is already set; use `softkey pin change`",
        Status.PIN_NOT_SET: "no PIN is set; use `softkey pin set`",
    }
    return messages.get(status, f"the key refused: {status_name(status)} {reason}".strip())


def pin_set(auth: Authenticator, pin: str) -> dict[str, Any]:
    _pin_call(_pin_api(auth, "set_pin"), pin)
    return pin_state(auth)


def pin_change(auth: Authenticator, old: str, new: str) -> dict[str, Any]:
    _pin_call(_pin_api(auth, "change_pin"), old, new)
    return pin_state(auth)


# -- dispatch (control socket) ------------------------------------------------------------------


def ping(auth: Authenticator) -> dict[str, Any]:
    """Lets a CLI learn that a running key answers admin calls."""
    return {"profile": auth.profile.name}


def attestation_ca(auth: Authenticator) -> dict[str, Any]:
    """The attestation root CA an RP trusts (`softkey attestation export-ca`): public only."""
    root_der = auth.attestation.root_der()
    return {
        "pem": auth.attestation.root_pem().decode("ascii"),
        "subject": auth.attestation.root_certificate().subject.rfc4514_string(),
        "sha256": hashlib.sha256(root_der).hexdigest(),
    }


OPERATIONS: dict[str, Callable[..., dict[str, Any]]] = {
    "ping": ping,
    "attestation_ca": attestation_ca,
    "info": info,
    "credentials": list_credentials,
    "delete": delete_credentials,
    "fill": fill,
    "add_credential": add_credential,
    "reset": reset,
    "pin_status": pin_status,
    "pin_set": pin_set,
    "pin_change": pin_change,
}

READ_ONLY = frozenset({"ping", "info", "credentials", "pin_status"})


def dispatch(auth: Authenticator, op: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run one named operation with JSON arguments; for a key's control socket.

    Returns ``{"ok": true, "result": {...}}`` or ``{"ok": false, "error": sentence,
    "code": kind}``; never raises for a bad request.
    """
    fn = OPERATIONS.get(op)
    if fn is None:
        return {"ok": False, "code": "usage", "error": f"unknown admin operation {op!r}"}
    args = dict(args or {})
    if "on_created" in args or not all(isinstance(k, str) for k in args):
        return {"ok": False, "code": "usage", "error": f"bad arguments for {op}"}
    try:
        inspect.signature(fn).bind(auth, **args)
    except TypeError as exc:
        return {"ok": False, "code": "usage", "error": f"bad arguments for {op}: {exc}"}
    try:
        with operator_presence(auth):
            return {"ok": True, "result": fn(auth, **args)}
    except AdminError as exc:
        return {"ok": False, "code": exc.code, "error": str(exc)}
