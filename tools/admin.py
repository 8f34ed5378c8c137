"""Operator actions on one ``Authenticator``: what the `softkey` verbs do, minus the terminal.

Each operation takes an ``Authenticator`` and JSON-able arguments and returns a JSON-able
dict (IDs as hex with base64url beside them), so the very same code runs offline on a state
file and inside a running key behind its control socket (``dispatch``). Results never contain
secrets: no master key, no PIN, no private key, no pinUvAuthToken; the one exception is
``get_credentials(include_private_keys=true)`` (tools/webdriver_ops.py), which asks for them.

``fill`` does not write the slot table itself: it sends real CBOR authenticatorMakeCredential
requests through ``Authenticator.handle_cbor`` so the device's own capacity rule and errors
apply (CTAP 2.1 §6.1.2 step 15: KEY_STORE_FULL).
"""

from __future__ import annotations

import base64
import hashlib
import inspect
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import serialization

from softkey.authenticator import Authenticator, AutoPresence, Status, cbor, cose, params
from softkey.authenticator.config import ConfigCmd, SetMinPinLengthKey, min_pin_length_rp_ids
from softkey.authenticator.ctap import Cmd, CoseAlg
from softkey.authenticator.keywrap import CRED_RANDOM_LEN, CredentialSecrets
from softkey.authenticator.pin import MAX_PIN_BYTES
from softkey.authenticator.store import ResidentCredential

if TYPE_CHECKING:
    from softkey.authenticator.imported import StoredCredential
from softkey.tools.trace import status_name

DEFAULT_FILL_RP = "fill.softkey.test"
DEFAULT_USER_PREFIX = "user"
# One set of request-field limits for the CTAP path and this admin path (params.py).
MAX_USER_HANDLE = params.MAX_USER_HANDLE_LEN

ALG_NAMES: dict[int, str] = {
    CoseAlg.ES256: "ES256",
    CoseAlg.EDDSA: "EdDSA",
    CoseAlg.ES384: "ES384",
    CoseAlg.MLDSA44: "ML-DSA-44",
    CoseAlg.MLDSA65: "ML-DSA-65",
    CoseAlg.MLDSA87: "ML-DSA-87",
}


class AdminError(Exception):
    """An operation the key refuses; ``str()`` is one sentence saying what to do."""

    def __init__(self, message: str, *, code: str = "refused") -> None:
        super().__init__(message)
        self.code = code


# What a U2F-only key (profile u2f: CTAP1 alone) lacks: verbs that need it say so in one line.
U2F_NO_PIN = "a U2F-only key has no PIN"
U2F_NO_SLOTS = (
    "a U2F-only key has no discoverable credentials: its key handles are kept by the "
    "relying party, not on the key"
)


def _require_ctap2(auth: Authenticator, message: str) -> None:
    if not auth.profile.ctap2:
        raise AdminError(message, code="unsupported")


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
    """The stable JSON form of one resident credential (see README, CLI reference): the same
    record `credentials list --all` gives every stored credential (tools/webdriver_ops.py)."""
    from softkey.authenticator.imported import describe_resident
    from softkey.tools.webdriver_ops import record

    return record(describe_resident(auth, cred))


def parse_id(text: str, what: str) -> bytes:
    """A credential ID or user handle given as hex or base64url (padding optional).

    All-hex text of even length is read as hex (what ykman and fido2-token print); anything
    else as base64url."""
    cleaned = text.strip()
    if _HEX.fullmatch(cleaned) and len(cleaned) % 2 == 0:
        return bytes.fromhex(cleaned)
    if _B64URL.fullmatch(cleaned):
        try:
            return base64.urlsafe_b64decode(cleaned + "=" * (-len(cleaned) % 4))
        except ValueError:
            pass
    raise AdminError(f"{what} {text!r} is neither hex nor base64url", code="usage")


def _rp_filter(rp: str | None) -> str | None:
    return rp if rp else None


# -- read operations -------------------------------------------------------------------------


def pin_state(auth: Authenticator) -> dict[str, Any]:
    """PIN set? retries left? Uses the PIN module's admin API when it offers one."""
    if not auth.profile.ctap2:  # U2F has no PIN at all: nothing set, nothing to count
        return {
            "set": False,
            "retries": None,
            "uv_retries": None,
            "min_length": None,
            "force_change": False,
        }
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
    # What the signatures carried, not the blocks reserved on disk (counters.py).
    tracked, signatures = auth.store.counter_totals()
    return {
        "profile": profile.name,
        "description": profile.description,
        "ctap": profile.ctap,
        "aaguid": str(uuid.UUID(bytes=profile.aaguid)),
        "versions": list(raw.get("versions", [])),
        "extensions": list(raw.get("extensions", [])),
        "options": dict(raw.get("options", {})),
        "algorithms": list(auth.algorithms),  # what getInfo lists (device.py)
        "pin_uv_auth_protocols": list(raw.get("pin_uv_auth_protocols", [])),
        "credential_management": profile.credman,
        "resident_credentials": slot_usage(auth),
        "pin": pin_state(auth),
        "bio": bio_state(auth),
        "config": config_state(auth),
        "counters": {"credentials": tracked, "signatures": signatures},
        "firmware_version": raw.get("firmware_version"),
        "max_msg_size": raw.get("max_msg_size"),
    }


def slots(auth: Authenticator) -> dict[str, int | None]:
    """Slot usage alone (used/capacity/free): what `fill` needs before it starts, without
    listing (and unwrapping) every credential as ``credentials`` does."""
    return slot_usage(auth)


def list_credentials(auth: Authenticator, rp: str | None = None) -> dict[str, Any]:
    creds = auth.credentials(_rp_filter(rp))
    return {
        **slot_usage(auth),
        "credentials": [credential_record(auth, c) for c in creds],
    }


# -- delete ----------------------------------------------------------------------------------

_HEX = re.compile(r"[0-9a-fA-F]+")
_B64URL = re.compile(r"[A-Za-z0-9_-]+=*")


def match_prefix(auth: Authenticator, prefix: str) -> StoredCredential:
    """The one stored credential (resident, or imported: tools/webdriver_ops.py) whose ID is
    ``prefix`` or starts with it, in hex or base64url (as `softkey credentials list` shows
    them); a prefix that fits several is refused."""
    from softkey.tools.webdriver_ops import match_stored

    return match_stored(auth, prefix)


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
    """Delete stored credentials (resident ones, and imported non-resident ones) by unique ID
    prefix, by RP, or all of them."""
    from softkey.authenticator.imported import remove_credential
    from softkey.tools.webdriver_ops import record, stored

    if sum(bool(x) for x in (ids, rp, all)) != 1:
        raise AdminError("give credential ID prefixes, --rp RP or --all", code="usage")
    if ids:
        targets = [match_prefix(auth, p) for p in ids]
    elif rp:
        targets = stored(auth, rp)
        if not targets:
            raise AdminError(
                f"no resident credential for {rp} (nor an imported one); see "
                "`softkey credentials list --all`",
                code="not_found",
            )
    else:
        targets = stored(auth)
    records = [record(c) for c in targets]
    for cred in targets:
        remove_credential(auth, cred.credential_id)
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
                raise AdminError(wrong_pin_message(self.auth)) from None
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
    # Only the names (one indexed query), never whole records: a fill's set-up cost must
    # not grow with the credentials already on the key.
    pattern = re.compile(re.escape(prefix) + r"-(\d+)")
    highest = 0
    for name in auth.store.user_names(hashlib.sha256(rp_id.encode()).digest(), prefix + "-"):
        match = pattern.fullmatch(name)
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
    _require_ctap2(auth, U2F_NO_SLOTS)
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
            "(-----BEGIN PRIVATE KEY-----) of a P-256, P-384, Ed25519 or ML-DSA key",
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
    large_blob: str | None = None,
    backup_eligible: bool | None = None,
    backup_state: bool | None = None,
) -> dict[str, Any]:
    """Seed a credential with a given private key (WebDriver's addCredential).

    Without ``credential_id`` the key makes the ID in its own format (the private key travels
    inside it, encrypted under the master key). With one, any ID is stored as given: an ID
    this key made for the same RP and private key stays what it is (re-seeding is idempotent),
    any other becomes an imported credential (authenticator/imported.py, tools/webdriver_ops.py).
    ``large_blob`` (hex or base64url, resident only) and the backup flags as in WebDriver.
    """
    rp_problem = params.rp_id_problem(rp) if rp else "it must not be empty"
    if rp_problem:
        raise AdminError(f"--rp is not a usable RP ID: {rp_problem}", code="usage")
    if resident:
        _require_ctap2(auth, U2F_NO_SLOTS + "; add it --non-resident")
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
    if resident:
        if user_handle is None:
            raise AdminError(
                "a resident credential needs --user-handle (the RP's user.id, in hex)",
                code="usage",
            )
        handle_problem = params.user_handle_problem(_parse_hex(user_handle, "--user-handle"))
        if handle_problem:
            raise AdminError(f"--user-handle: {handle_problem}", code="usage")
    elif (
        (user_handle is not None and credential_id is None)
        or user_name is not None
        or user_display_name is not None
    ):
        # An imported non-resident credential (--credential-id) may keep the user handle the
        # RP gave it, for listing, as WebDriver's addCredential does.
        raise AdminError(
            "--user-handle/--user-name only apply to --resident credentials: a non-resident "
            "credential stores no user on the key",
            code="usage",
        )

    if credential_id is None:
        secrets = CredentialSecrets(
            alg=alg,
            private_key=raw,
            discoverable=resident,
            cred_protect=cred_protect,
            cred_random=auth.random(CRED_RANDOM_LEN),
        )
        credential_id = auth.wrapper.wrap(secrets, hashlib.sha256(rp.encode()).digest()).hex()
    from softkey.tools.webdriver_ops import add_with_id

    return add_with_id(
        auth,
        rp=rp,
        private_key_pem=private_key_pem,
        credential_id=credential_id,
        user_handle=user_handle,
        user_name=user_name,
        user_display_name=user_display_name,
        resident=resident,
        counter=counter,
        cred_protect=cred_protect,
        large_blob=large_blob,
        backup_eligible=backup_eligible,
        backup_state=backup_state,
    )


def _parse_hex(value: str, option: str) -> bytes:
    """An ID option's bytes: hex or base64url (parse_id says which wins when both fit)."""
    return parse_id(value, option)


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
    _require_ctap2(auth, U2F_NO_PIN)
    return pin_state(auth)


def _pin_api(auth: Authenticator, name: str) -> Callable[..., Any]:
    fn = getattr(auth, name, None)
    if not callable(fn):
        raise AdminError(
            "this softkey build cannot manage PINs yet (no ClientPIN support); upgrade softkey"
        )
    return fn


def _pin_call(fn: Callable[..., Any], *args: str, auth: Authenticator | None = None) -> None:
    from softkey.authenticator import CtapError

    try:
        fn(*args)
    except CtapError as exc:
        raise AdminError(_pin_error(exc.status, exc.reason, auth)) from None
    except ValueError as exc:
        raise AdminError(str(exc)) from None


def wrong_pin_message(auth: Authenticator, what: str = "PIN") -> str:
    """ "wrong PIN; 7 retries left" (what a person needs before the next guess)."""
    retries = pin_state(auth)["retries"]
    if retries is None:
        return f"wrong {what}; retry with the right one"
    if retries == 0:
        return f"wrong {what}; no retries left: the PIN is blocked, reset the key (`softkey reset`)"
    plural = "retry" if retries == 1 else "retries"
    return f"wrong {what}; {retries} {plural} left before the PIN is blocked"


def _pin_error(status: int, reason: str, auth: Authenticator | None = None) -> str:
    if status == Status.PIN_INVALID and auth is not None:
        return wrong_pin_message(auth, "current PIN")
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
    _require_ctap2(auth, U2F_NO_PIN)
    _pin_call(_pin_api(auth, "set_pin"), pin)
    return pin_state(auth)


def pin_change(auth: Authenticator, old: str, new: str) -> dict[str, Any]:
    _require_ctap2(auth, U2F_NO_PIN)
    _pin_call(_pin_api(auth, "change_pin"), old, new, auth=auth)
    return pin_state(auth)


# -- authenticatorConfig and PIN verify (CTAP 2.1 §6.11, §6.5) ----------------------------------
# Done as a platform would: python-fido2's ClientPin gets a pinUvAuthToken (acfg permission)
# through the device's own handle_cbor, then a real authenticatorConfig request carries the
# pinUvAuthParam. The device's spec logic decides; these functions only phrase its answers.


def config_state(auth: Authenticator) -> dict[str, Any]:
    """What getInfo says about the configuration (None: the profile has no such option)."""
    raw = auth.info()
    options = raw.get("options", {})
    pin = pin_state(auth)
    return {
        "authenticator_config": bool(options.get("authnrCfg", False)),
        "always_uv": options.get("alwaysUv"),
        "enterprise_attestation": options.get("ep"),
        "min_pin_length": raw.get("min_pin_length", pin["min_length"]),
        "force_pin_change": bool(raw.get("force_pin_change", pin["force_change"])),
        "min_pin_length_rp_ids": min_pin_length_rp_ids(auth),
        "max_rp_ids_for_min_pin_length": raw.get("max_rpids_for_set_min_pin_length"),
    }


def _profiles_with_option(option: str) -> list[str]:
    """Profiles whose getInfo lists ``option`` (what `softkey profiles` shows)."""
    from softkey.authenticator.profiles import PROFILES

    names = []
    for name in PROFILES:
        with Authenticator(name) as probe:
            if option in probe.info().get("options", {}):
                names.append(name)
    return names


def config_unsupported_message(profile: str) -> str:
    return (
        f"the {profile} profile has no authenticatorConfig (CTAP 2.1 only); profiles with it: "
        f"{', '.join(_profiles_with_option('authnrCfg'))} (see `softkey profiles`)"
    )


def ep_unsupported_message(profile: str) -> str:
    return (
        f'the {profile} profile has no enterprise attestation (no "ep" in getInfo); '
        f"profiles with it: {', '.join(_profiles_with_option('ep'))} (see `softkey profiles`)"
    )


def _platform_pin(auth: Authenticator) -> Any:
    """python-fido2's ClientPin on this device (a fresh getInfo, as after plugging in)."""
    from fido2.ctap2 import ClientPin, Ctap2

    from softkey.transports.inprocess import VirtualCtapDevice

    return ClientPin(Ctap2(VirtualCtapDevice(auth)))


class _PinChangeRequired(AdminError):
    """The PIN was right, but forcePINChange keeps it from being used (§6.5.5.7)."""


def _pin_refusal(auth: Authenticator, status: int) -> AdminError:
    """One sentence for a clientPIN refusal while getting a token."""
    retries = auth.pin_uv.retries
    if status == Status.PIN_INVALID:
        # A right PIN refills the retries before forcePINChange refuses the token.
        if auth.pin_uv.force_change and retries == auth.profile.pin_retries:
            return _PinChangeRequired(
                "the PIN is right, but the key requires a new one before it can be used: "
                "run `softkey pin change`",
                code="pin_change_required",
            )
        left = f"{retries} {'retry' if retries == 1 else 'retries'} left"
        return AdminError(f"wrong PIN; {left}", code="wrong_pin")
    if status == Status.PIN_BLOCKED:
        return AdminError(
            "the PIN is blocked (no retries left); only `softkey reset` makes the key usable "
            "again, and it deletes every credential",
            code="pin_blocked",
        )
    if status == Status.PIN_AUTH_BLOCKED:
        return AdminError(
            f"3 wrong PINs in a row ({retries} left before the PIN is blocked): replug the key "
            "(`softkey replug`) before the next try",
            code="pin_auth_blocked",
        )
    if status == Status.PIN_NOT_SET:
        return AdminError("no PIN is set on this key; set one with `softkey pin set`")
    return AdminError(f"the key refused the PIN: {status_name(status)}")


def _pin_token(auth: Authenticator, pin: str, permissions: int | None) -> tuple[Any, bytes]:
    """(ClientPin, pinUvAuthToken) for ``pin``; AdminError with the device's verdict."""
    import unicodedata

    from fido2.ctap import CtapError as Fido2CtapError
    from fido2.ctap2 import ClientPin

    if not isinstance(pin, str) or not pin:
        raise AdminError("the PIN must be a non-empty string", code="usage")
    client_pin = _platform_pin(auth)
    perms = ClientPin.PERMISSION(permissions) if permissions is not None else None
    try:
        # §6.5.1: the platform sends the NFC form, as `softkey pin set` stored it.
        token = client_pin.get_pin_token(unicodedata.normalize("NFC", pin), perms)
    except Fido2CtapError as exc:
        raise _pin_refusal(auth, int(exc.code)) from None
    return client_pin, bytes(token)


def _config_refusal(auth: Authenticator, status: int, sub: int) -> AdminError:
    outcome = auth.last_outcome
    reason = outcome.reason if outcome is not None else ""
    if status in (Status.INVALID_COMMAND, Status.UNSUPPORTED_OPTION):
        return AdminError(config_unsupported_message(auth.profile.name), code="unsupported")
    if status == Status.INVALID_SUBCOMMAND and sub == ConfigCmd.ENABLE_ENTERPRISE_ATTESTATION:
        return AdminError(ep_unsupported_message(auth.profile.name), code="unsupported")
    if status == Status.PUAT_REQUIRED:
        if auth.pin_uv.is_set:
            return AdminError(
                "this key has a PIN: give it (SOFTKEY_PIN or the prompt)", code="pin_required"
            )
        return AdminError(
            "alwaysUv is on and no PIN is set: set one with `softkey pin set`, then retry"
        )
    if status == Status.PIN_NOT_SET:
        return AdminError(
            "no PIN is set, so there is none to change; set one with `softkey pin set`"
        )
    if status in (Status.PIN_AUTH_INVALID, Status.UNAUTHORIZED_PERMISSION):
        return AdminError(f"the key refused the PIN token ({status_name(status)}: {reason}); retry")
    if status == Status.PIN_POLICY_VIOLATION:
        return AdminError(f"the key refused: {reason or status_name(status)}", code="pin_policy")
    if status == Status.INVALID_PARAMETER and sub == ConfigCmd.SET_MIN_PIN_LENGTH:
        limit = auth.profile.max_rpids_for_set_min_pin_length
        return AdminError(f"too many --rp-id: this key lets at most {limit} RPs read the length")
    detail = f" ({reason})" if reason else ""
    return AdminError(f"the key refused authenticatorConfig: {status_name(status)}{detail}")


def _send_config(
    auth: Authenticator, sub: ConfigCmd, sub_params: dict[int, Any] | None, pin: str | None
) -> None:
    """One authenticatorConfig request, authenticated with ``pin`` when the key has one."""
    from fido2.ctap2 import ClientPin

    if not auth.info().get("options", {}).get("authnrCfg"):
        raise AdminError(config_unsupported_message(auth.profile.name), code="unsupported")
    request: dict[int, Any] = {1: int(sub)}
    if sub_params is not None:
        request[2] = sub_params
    if pin is not None and auth.pin_uv.is_set:
        client_pin, token = _pin_token(auth, pin, ClientPin.PERMISSION.AUTHENTICATOR_CFG)
        # §6.11: pinUvAuthParam = authenticate(token, 32×0xff || 0x0d || subCommand ||
        # subCommandParams), the same bytes the device rebuilds.
        message = b"\xff" * 32 + bytes([Cmd.CONFIG, sub])
        if sub_params is not None:
            message += cbor.encode(sub_params)
        request[3] = client_pin.protocol.VERSION
        request[4] = client_pin.protocol.authenticate(token, message)
    response = auth.handle_cbor(bytes([Cmd.CONFIG]) + cbor.encode(request))
    if response[0] != Status.SUCCESS:
        raise _config_refusal(auth, response[0], sub)


def config_toggle_always_uv(auth: Authenticator, pin: str | None = None) -> dict[str, Any]:
    """authenticatorConfig toggleAlwaysUv (§6.11.2)."""
    _send_config(auth, ConfigCmd.TOGGLE_ALWAYS_UV, None, pin)
    return config_state(auth)


def config_set_min_pin_length(
    auth: Authenticator,
    length: int,
    rp_ids: list[str] | None = None,
    pin: str | None = None,
) -> dict[str, Any]:
    """authenticatorConfig setMinPINLength (§6.11.4): the minimum may only grow."""
    if not isinstance(length, int) or isinstance(length, bool) or length < 1:
        raise AdminError("the minimum PIN length must be a positive number", code="usage")
    if rp_ids is not None:
        if not isinstance(rp_ids, list) or not all(isinstance(r, str) for r in rp_ids):
            raise AdminError("rp_ids must be a list of RP IDs", code="usage")
        for rp in rp_ids:
            problem = params.rp_id_problem(rp) if rp else "it must not be empty"
            if problem:
                raise AdminError(f"--rp-id {rp!r} is not a usable RP ID: {problem}", code="usage")
    before = config_state(auth)
    sub_params: dict[int, Any] = {SetMinPinLengthKey.NEW_MIN_PIN_LENGTH: length}
    if rp_ids:
        sub_params[SetMinPinLengthKey.MIN_PIN_LENGTH_RPIDS] = list(rp_ids)
    try:
        _send_config(auth, ConfigCmd.SET_MIN_PIN_LENGTH, sub_params, pin)
    except AdminError as exc:
        # Only the device's own answer to this request (never a stale last_outcome).
        outcome = auth.last_outcome
        if exc.code != "pin_policy" or outcome is None:
            raise
        if length < before["min_pin_length"]:
            raise AdminError(
                f"the minimum PIN length can only grow (it is {before['min_pin_length']}, "
                f"not {length}): CTAP 2.1 §6.11.4; only `softkey reset` lowers it",
                code="pin_policy",
            ) from None
        if length > MAX_PIN_BYTES:
            raise AdminError(
                f"no PIN can be {length} characters long (a PIN has at most {MAX_PIN_BYTES} "
                "bytes); choose a smaller N",
                code="pin_policy",
            ) from None
        raise AdminError(
            f"the key refused a minimum PIN length of {length}: {outcome.reason}",
            code="pin_policy",
        ) from None
    return {**config_state(auth), "previous_min_pin_length": before["min_pin_length"]}


def config_force_pin_change(auth: Authenticator, pin: str | None = None) -> dict[str, Any]:
    """setMinPINLength with forceChangePin (§6.11.4): the PIN must change before next use."""
    _send_config(
        auth, ConfigCmd.SET_MIN_PIN_LENGTH, {SetMinPinLengthKey.FORCE_CHANGE_PIN: True}, pin
    )
    return config_state(auth)


def config_enable_ep(auth: Authenticator, pin: str | None = None) -> dict[str, Any]:
    """enableEnterpriseAttestation (§6.11.1), only where getInfo lists "ep"."""
    if "ep" not in auth.info().get("options", {}):
        raise AdminError(ep_unsupported_message(auth.profile.name), code="unsupported")
    _send_config(auth, ConfigCmd.ENABLE_ENTERPRISE_ATTESTATION, None, pin)
    return config_state(auth)


def pin_verify(auth: Authenticator, pin: str | None = None) -> dict[str, Any]:
    """Check ``pin`` with a real getPinToken (§6.5.5.7): a wrong one spends a retry.

    Never raises for a wrong or blocked PIN: the result says ``verified`` and why not
    (``error``, one sentence; ``reason``, a short code), so `--json` callers get both. No PIN
    is needed (None) when the key has none or it is blocked: nothing could be checked.
    """
    _require_ctap2(auth, U2F_NO_PIN)
    status = pin_state(auth)
    verdict: dict[str, Any]
    if not status["set"]:
        verdict = {
            "verified": False,
            "reason": "pin_not_set",
            "error": "no PIN is set on this key; set one with `softkey pin set`",
        }
    elif status["retries"] == 0:
        blocked = _pin_refusal(auth, Status.PIN_BLOCKED)
        verdict = {"verified": False, "reason": blocked.code, "error": str(blocked)}
    elif pin is None:
        raise AdminError("give the PIN to verify", code="usage")
    else:
        try:
            _pin_token(auth, pin, None)
            verdict = {"verified": True, "reason": None, "error": None}
        except _PinChangeRequired as exc:
            verdict = {"verified": True, "reason": exc.code, "error": str(exc)}
        except AdminError as exc:
            if exc.code == "usage":
                raise
            verdict = {"verified": False, "reason": exc.code, "error": str(exc)}
        status = pin_state(auth)
    return {
        **verdict,
        "retries": status["retries"],
        "blocked": bool(status["set"]) and status["retries"] == 0,
        "force_change": status["force_change"],
    }


# -- dispatch (control socket) ------------------------------------------------------------------


# -- fingerprint sensor (profiles with one: built-in UV, CTAP 2.1 §6.7) ----------------------------


def bio_state(auth: Authenticator) -> dict[str, Any] | None:
    """The fingerprint sensor and its enrolled fingers; None on a key without one."""
    sensor = auth.profile.bio
    if sensor is None:
        return None
    builtin = auth.pin_uv.builtin
    return {
        "templates": [
            {"template_id": t.template_id.hex(), "name": t.name} for t in builtin.templates()
        ],
        "max_templates": sensor.max_templates,
        "uv_retries": builtin.retries,
        "max_uv_retries": sensor.max_uv_retries,
        "samples": sensor.samples,
    }


def bio_enroll(auth: Authenticator, pin: str, name: str | None = None) -> dict[str, Any]:
    """Enroll one finger as a platform would (PIN token with be, then the capture loop with
    the operator's finger): `softkey init --enrolled`."""
    from fido2.ctap import CtapError as Fido2CtapError

    from softkey.transports.bio_enroll import DEFAULT_FINGER_NAME, enroll_finger

    if auth.profile.bio is None:
        raise AdminError(
            f"the {auth.profile.name} profile has no fingerprint sensor; use --profile yubikey-bio",
            code="unsupported",
        )
    if not isinstance(pin, str) or not pin:
        raise AdminError("the PIN must be a non-empty string", code="usage")
    name = DEFAULT_FINGER_NAME if name is None else name
    try:
        template_id = enroll_finger(auth, pin, name)
    except ValueError as exc:
        raise AdminError(str(exc), code="usage") from None
    except Fido2CtapError as exc:
        status = int(exc.code)
        if status == Status.FP_DATABASE_FULL:
            raise AdminError(
                f"every fingerprint slot of this key is used ({auth.profile.bio.max_templates})"
            ) from None
        if status in (Status.PIN_INVALID, Status.PIN_BLOCKED, Status.PIN_AUTH_BLOCKED):
            raise _pin_refusal(auth, status) from None
        raise AdminError(f"the key refused the enrollment: {status_name(status)}") from None
    return {"template_id": template_id.hex(), "name": name, "bio": bio_state(auth)}


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
    "slots": slots,
    "delete": delete_credentials,
    "fill": fill,
    "add_credential": add_credential,
    "reset": reset,
    "pin_status": pin_status,
    "pin_set": pin_set,
    "pin_change": pin_change,
    "config_toggle_always_uv": config_toggle_always_uv,
    "config_set_min_pin_length": config_set_min_pin_length,
    "config_force_pin_change": config_force_pin_change,
    "config_enable_ep": config_enable_ep,
    "pin_verify": pin_verify,
    "bio_enroll": bio_enroll,
}

READ_ONLY = frozenset({"ping", "info", "credentials", "slots", "pin_status"})

# `softkey fault add|list|clear` (runtime faults of a running key; tools/faults_cli.py).
from softkey.tools.faults_cli import OPERATIONS as _FAULT_OPERATIONS  # noqa: E402

OPERATIONS.update(_FAULT_OPERATIONS)

# WebDriver's credential commands (get_credentials, remove_credential, remove_all_credentials,
# set_credential_properties; add_credential is above): tools/webdriver_ops.py.
from softkey.tools.webdriver_ops import OPERATIONS as _WEBDRIVER_OPERATIONS  # noqa: E402
from softkey.tools.webdriver_ops import READ_ONLY as _WEBDRIVER_READ_ONLY  # noqa: E402

OPERATIONS.update(_WEBDRIVER_OPERATIONS)
READ_ONLY = READ_ONLY | _WEBDRIVER_READ_ONLY


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
        # The operator's own requests (fill...) never meet an injected fault (faults.py).
        with operator_presence(auth), auth.faults.paused():
            return {"ok": True, "result": fn(auth, **args)}
    except AdminError as exc:
        return {"ok": False, "code": exc.code, "error": str(exc)}
