"""Injected faults: what a broken or hostile key answers, for relying-party negative tests.

``Authenticator.faults`` holds overrides an operator or a test adds at run time
(``add(kind, count, value, on)``); ``Authenticator.handle_cbor`` passes every CTAP2 request
through ``Faults.handle`` while any is set. A fault changes what the key *answers*, never what
it *is*: stored credentials, the real signature counters, the PIN and the master key are left
alone, and nothing of it is persisted (a new process starts without faults).

Kinds (``KINDS``):

| kind | value | what the next answer does |
|---|---|---|
| ``bad_signature`` | - | the signature bytes are corrupted (assertion signature, or attStmt.sig) |
| ``up_flag`` / ``uv_flag`` | ``on`` / ``off`` | the UP / UV flag of authenticatorData forced |
| ``counter`` | N | signCount is N |
| ``counter_regression`` | N (default 1) | signCount N below the previous signature's (>= 0) |
| ``rp_id_hash`` | RP ID (optional) | rpIdHash of that RP ID (default: the right hash, inverted) |
| ``aaguid`` | UUID (optional) | another AAGUID in the attested credential data (default random) |
| ``attestation_cert`` | - | packed attestation by a freshly generated self-signed certificate |
| ``error`` | status | the request is not processed; the answer is that CTAP status |
| ``delay`` | seconds | the answer comes that much later (the transport waits) |
| ``no_answer`` | - | the request is not processed and never answered (the transport) |

Authenticator data changed by a fault is signed again with the right key (the credential's for
an assertion or self attestation, the batch key for packed attestation), so each fault is the
only defect in its answer: a wrong rpIdHash fails an RP's rpIdHash check, not its signature
check. ``bad_signature`` then corrupts the final signature.

**Which requests consume a fault.** Only a request that reaches the user: a makeCredential,
or a getAssertion with ``up`` true (the default), whose pinUvAuthParam is not the empty "touch
to select this key" probe. A client's silent ``up: false`` getAssertion (python-fido2 sends one
before every login with an allowList, to find which ID the key holds) passes untouched and
consumes nothing, nor does any other command. Each such request takes one unit of ``count``
from every fault it applied; a fault at 0 is gone. ``error``, ``delay`` and ``no_answer`` act
on receipt of the request; the others change a successful answer, and wait for the next
request if this one failed on its own (no credential, the user declined ...) or its answer has
nothing of theirs (``bad_signature`` on a "none" attestation, which carries no signature;
``aaguid`` and ``attestation_cert`` on a getAssertion). ``on`` limits a fault to
makeCredential or getAssertion. The operator's own requests (``softkey fill`` and other admin
operations, which run inside ``paused()``) never meet a fault, and CTAP1/U2F messages (a
``u2f`` profile, U2F fallbacks) pass untouched: faults are a CTAP2 layer.

**Delay and no answer** are instructions to the transport, never sleeps here: the device stays
pure. The answer's ``Outcome.hold`` says ``Hold(delay=s)`` or ``Hold(no_answer=True)``. Over
CTAPHID (transports/server.py) a delayed answer is sent ``s`` seconds later with KEEPALIVE
PROCESSING every 100 ms meanwhile, as a slow key would (a CANCEL meanwhile gets
CTAP2_ERR_KEEPALIVE_CANCEL at once); no answer means no KEEPALIVE and no response at all, so
the client's read times out (a keepalive would keep a CTAP client waiting forever), and the key
is ready for the next request at once. In-process (transports/inprocess.py) a delay advances a
``FakeClock`` (or sleeps on a real one) and no answer raises ``NoAnswerError``, a
``TimeoutError`` as a HID read timeout is an ``OSError``. A caller that ignores ``hold`` gets
CTAP2_ERR_USER_ACTION_TIMEOUT for no answer.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from . import cbor, cose
from .ctap import FLAG_AT, FLAG_UP, FLAG_UV, Cmd, CoseAlg, CtapError, Status

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec

    from .device import Authenticator
    from .environment import Interaction

log = logging.getLogger("softkey.faults")

MC = int(Cmd.MAKE_CREDENTIAL)
GA = int(Cmd.GET_ASSERTION)
COMMAND_NAMES = {MC: "makeCredential", GA: "getAssertion"}
ON_CHOICES = ("any", "makeCredential", "getAssertion")
MAX_FAULTS = 100
MAX_COUNT = 1_000_000
MAX_DELAY = 300.0
MAX_COUNTER = 0xFFFFFFFF


@dataclass(frozen=True)
class Kind:
    name: str
    commands: frozenset[int]
    value: str  # "none", "required" or "optional"
    help: str


_BOTH = frozenset({MC, GA})
KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind("bad_signature", _BOTH, "none", "corrupt the signature (assertion or attestation)"),
        Kind("up_flag", _BOTH, "required", "on|off: force the UP flag of authenticatorData"),
        Kind("uv_flag", _BOTH, "required", "on|off: force the UV flag of authenticatorData"),
        Kind("counter", _BOTH, "required", "N: report signature counter N"),
        Kind(
            "counter_regression",
            frozenset({GA}),
            "optional",
            "N (default 1): a counter N below the previous signature's (clone detection)",
        ),
        Kind(
            "rp_id_hash",
            _BOTH,
            "optional",
            "RP_ID: the rpIdHash of another RP ID (default: the right hash, inverted)",
        ),
        Kind(
            "aaguid",
            frozenset({MC}),
            "optional",
            "UUID: another AAGUID in the attested credential data (default: a random one)",
        ),
        Kind(
            "attestation_cert",
            frozenset({MC}),
            "none",
            "attest with a freshly generated self-signed certificate",
        ),
        Kind(
            "error", _BOTH, "required", "CODE: answer this CTAP status (0x27, 39, OPERATION_DENIED)"
        ),
        Kind("delay", _BOTH, "required", "SECONDS: answer this much later"),
        Kind("no_answer", _BOTH, "none", "never answer (the client times out)"),
    )
}
# Kinds that change a successful answer (the others act on receipt of the request).
_AUTH_DATA_KINDS = ("up_flag", "uv_flag", "counter", "counter_regression", "rp_id_hash", "aaguid")


class FaultError(ValueError):
    """A fault that cannot be set as given; the message says what would do."""


@dataclass(frozen=True)
class Hold:
    """What the transport does with an answer: send it ``delay`` s later, or never."""

    delay: float = 0.0
    no_answer: bool = False


class NoAnswerError(TimeoutError):
    """In-process, the key did not answer (injected fault ``no_answer``)."""


@dataclass(eq=False)
class Fault:
    id: int
    kind: str
    value: Any
    count: int
    remaining: int
    on: str
    label: str
    # attestation_cert: the injected certificate's key (runtime only, never shown).
    _key: Any = field(default=None, repr=False)

    def applies_to(self, command: int) -> bool:
        if command not in KINDS[self.kind].commands:
            return False
        return self.on == "any" or COMMAND_NAMES.get(command) == self.on

    def record(self) -> dict[str, Any]:
        """The JSON form (`softkey fault list`, `softkey status`, the fixture's ``faults``)."""
        return {
            "id": self.id,
            "kind": self.kind,
            "value": self.value,
            "count": self.count,
            "left": self.remaining,
            "on": self.on,
            "label": self.label,
        }


# -- values ------------------------------------------------------------------------------------

_ON_WORDS = {"on": True, "true": True, "1": True, "set": True, "off": False, "false": False}
_ON_WORDS.update({"0": False, "clear": False})


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _ON_WORDS:
        return _ON_WORDS[value.strip().lower()]
    raise FaultError(f"the value must be on or off, not {value!r}")


def _integer(value: Any, what: str, low: int, high: int) -> int:
    if isinstance(value, bool):
        raise FaultError(f"{what} must be a whole number, not {value!r}")
    if isinstance(value, str):
        text = value.strip().lower()
        try:
            value = int(text, 16) if text.startswith("0x") else int(text, 10)
        except ValueError:
            raise FaultError(f"{what} must be a whole number, not {value!r}") from None
    if not isinstance(value, int) or not low <= value <= high:
        raise FaultError(f"{what} must be a whole number from {low} to {high}, not {value!r}")
    return int(value)


def parse_status(value: Any) -> int:
    """A CTAP status from 39, "0x27", "OPERATION_DENIED" or "CTAP2_ERR_OPERATION_DENIED"."""
    if isinstance(value, str):
        name = value.strip().upper()
        for prefix in ("CTAP2_ERR_", "CTAP1_ERR_", "ERR_"):
            if name.startswith(prefix):
                name = name[len(prefix) :]
        if name in Status.__members__:
            value = int(Status[name])
    try:
        code = _integer(value, "the error code", 1, 0xFF)
    except FaultError:
        raise FaultError(
            f"the error code must be a CTAP status from 0x01 to 0xff (e.g. 0x27 or "
            f"OPERATION_DENIED), not {value!r}"
        ) from None
    return code


def status_label(code: int) -> str:
    name = Status(code).name if code in Status._value2member_map_ else "status"
    return f"{name}(0x{code:02x})"


def _rp_id(value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > 253:
        raise FaultError("the value must be an RP ID (1-253 characters), e.g. evil.example")
    if not value.isprintable() or any(c.isspace() for c in value):
        raise FaultError("an RP ID has no spaces or control characters")
    return value


def _aaguid(value: Any) -> str:
    if value is None:
        return str(uuid.uuid4())
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (bytes, bytearray)) and len(value) == 16:
        return str(uuid.UUID(bytes=bytes(value)))
    if isinstance(value, str):
        try:
            return str(uuid.UUID(value.strip()))
        except ValueError:
            pass
    raise FaultError(f"the value must be a UUID (an AAGUID), not {value!r}")


def _delay(value: Any) -> float:
    if isinstance(value, str):
        try:
            value = float(value.strip().removesuffix("s"))
        except ValueError:
            raise FaultError(f"the delay must be a number of seconds, not {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise FaultError(f"the delay must be a number of seconds, not {value!r}")
    if not 0 < value <= MAX_DELAY:
        raise FaultError(f"the delay must be more than 0 and at most {MAX_DELAY:g} seconds")
    return float(value)


def parse_value(kind: str, value: Any) -> tuple[Any, str]:
    """(the value as JSON shows it, the label traces show) for a fault of ``kind``."""
    spec = KINDS[kind]
    if spec.value == "none":
        if value is not None:
            raise FaultError(f"{kind} takes no value")
        label = "attestation_cert=self-signed" if kind == "attestation_cert" else kind
        return None, label
    if value is None and spec.value == "required":
        raise FaultError(f"{kind} needs a value: {spec.help}")
    if kind in ("up_flag", "uv_flag"):
        word = "on" if _flag(value) else "off"
        return word, f"{kind}={word}"
    if kind == "counter":
        number = _integer(value, "the counter", 0, MAX_COUNTER)
        return number, f"counter={number}"
    if kind == "counter_regression":
        number = 1 if value is None else _integer(value, "the regression", 1, MAX_COUNTER)
        return number, f"counter_regression={number}"
    if kind == "rp_id_hash":
        if value is None:
            return None, "rp_id_hash=inverted"
        rp = _rp_id(value)
        return rp, f"rp_id_hash={rp}"
    if kind == "aaguid":
        text = _aaguid(value)
        return text, f"aaguid={text}"
    if kind == "error":
        code = parse_status(value)
        return code, f"error={status_label(code)}"
    seconds = _delay(value)  # delay
    return seconds, f"delay={seconds:g}s"


def parse_on(on: str | None, kind: str) -> str:
    aliases = {"mc": "makeCredential", "ga": "getAssertion", None: "any", "": "any"}
    resolved = aliases.get(on, on) if on is None or isinstance(on, str) else on
    if resolved not in ON_CHOICES:
        raise FaultError(f"on must be one of {', '.join(ON_CHOICES)}, not {on!r}")
    commands = KINDS[kind].commands
    if resolved != "any" and not any(COMMAND_NAMES[c] == resolved for c in commands):
        only = " and ".join(COMMAND_NAMES[c] for c in sorted(commands))
        raise FaultError(f"{kind} only applies to {only}")
    return resolved


# -- the layer -----------------------------------------------------------------------------------


class Faults:
    """The faults set on one key, and the layer that applies them (see the module docstring)."""

    def __init__(self) -> None:
        self._items: list[Fault] = []
        self._next_id = 1
        self._paused = 0

    @property
    def active(self) -> bool:
        return bool(self._items) and not self._paused

    def add(self, kind: str, count: int = 1, value: Any = None, on: str | None = "any") -> Fault:
        """Set a fault for the next ``count`` requests that reach the user; FaultError if the
        kind, value, count or ``on`` make no sense."""
        if kind not in KINDS:
            raise FaultError(f"unknown fault {kind!r}; use one of {', '.join(KINDS)}")
        number = _integer(count, "count", 1, MAX_COUNT)
        shown, label = parse_value(kind, value)
        where = parse_on(on, kind)
        if len(self._items) >= MAX_FAULTS:
            raise FaultError(f"at most {MAX_FAULTS} faults at a time; clear some first")
        fault = Fault(self._next_id, kind, shown, number, number, where, label)
        if kind == "attestation_cert":
            from cryptography.hazmat.primitives.asymmetric import ec

            fault._key = ec.generate_private_key(ec.SECP256R1())
        self._next_id += 1
        self._items.append(fault)
        return fault

    def clear(self, kind: str | None = None) -> int:
        """Remove every fault (or every fault of ``kind``); returns how many went."""
        if kind is not None and kind not in KINDS:
            raise FaultError(f"unknown fault {kind!r}; use one of {', '.join(KINDS)}")
        before = len(self._items)
        self._items = [f for f in self._items if kind is not None and f.kind != kind]
        return before - len(self._items)

    def records(self) -> list[dict[str, Any]]:
        return [f.record() for f in list(self._items)]

    @contextmanager
    def paused(self) -> Iterator[None]:
        """No fault applies inside (the operator's own requests, e.g. `softkey fill`)."""
        self._paused += 1
        try:
            yield
        finally:
            self._paused -= 1

    def _spend(self, fault: Fault) -> None:
        fault.remaining -= 1
        if fault.remaining <= 0:
            self._items = [f for f in self._items if f is not fault]

    def handle(
        self,
        auth: Authenticator,
        request: bytes,
        interaction: Interaction,
        inner: Callable[[bytes, Interaction], bytes],
    ) -> bytes:
        """``inner(request)`` (the device), with the due faults applied around it."""
        command = request[0] if request else -1
        params = _user_facing_params(command, request)
        due = [f for f in self._items if f.applies_to(command)] if params is not None else []
        if not due:
            return inner(request, interaction)
        from .device import Outcome

        silent = _first(due, "no_answer")
        if silent is not None:
            self._spend(silent)
            auth.pending = None  # any command but a continuation ends multi-call state
            auth.last_outcome = Outcome(
                command,
                Status.USER_ACTION_TIMEOUT,
                "injected fault no_answer: the key does not answer",
                faults=(silent.label,),
                hold=Hold(no_answer=True),
            )
            return bytes([Status.USER_ACTION_TIMEOUT])
        applied: list[Fault] = []
        hold = None
        delay = _first(due, "delay")
        if delay is not None:
            self._spend(delay)
            applied.append(delay)
            hold = Hold(delay=float(delay.value))
        error = _first(due, "error")
        if error is not None:
            self._spend(error)
            applied.append(error)
            auth.pending = None
            code = int(error.value)
            status: Any = Status(code) if code in Status._value2member_map_ else code
            auth.last_outcome = Outcome(
                command,
                status,
                f"injected fault: answered {status_label(code)}",
                faults=tuple(f.label for f in applied),
                hold=hold,
            )
            return bytes([code])
        response = inner(request, interaction)
        if response[:1] == b"\x00":
            try:
                response, used = _mutate(auth, command, params or {}, response, due)
            except Exception:  # a bug here must not cost the device its answer
                log.exception("could not apply injected faults; answering unchanged")
                used = []
            for fault in used:
                self._spend(fault)
                applied.append(fault)
        outcome = auth.last_outcome
        if applied and outcome is not None and outcome.command == command:
            auth.last_outcome = replace(outcome, faults=tuple(f.label for f in applied), hold=hold)
        return response


def _first(faults: list[Fault], kind: str) -> Fault | None:
    return next((f for f in faults if f.kind == kind), None)


def _user_facing_params(command: int, request: bytes) -> dict[Any, Any] | None:
    """The request map of a makeCredential/getAssertion that reaches the user, else None."""
    if command not in COMMAND_NAMES:
        return None
    try:
        params = cbor.decode(request[1:])
    except CtapError:
        return None  # the device refuses it as it is
    if not isinstance(params, dict):
        return None
    options_key, pin_auth_key = (7, 8) if command == MC else (5, 6)
    options = params.get(options_key)
    if isinstance(options, dict) and options.get("up") is False:
        return None  # a silent request (pre-flight); makeCredential refuses it anyway
    pin_auth = params.get(pin_auth_key)
    if isinstance(pin_auth, bytes) and not pin_auth:
        return None  # "touch to select this key": always an error, nobody's answer
    return params


def _corrupt(signature: bytes) -> bytes:
    if not signature:
        return b"\x00"
    middle = len(signature) // 2
    return signature[:middle] + bytes([signature[middle] ^ 0x5A]) + signature[middle + 1 :]


def _auth_data(data: bytes, faults: list[Fault]) -> tuple[bytes, list[Fault]]:
    rp_hash, flags = data[:32], data[32]
    counter = int.from_bytes(data[33:37], "big")
    rest = data[37:]
    used: list[Fault] = []
    for fault in faults:
        if fault.kind == "up_flag":
            flags = flags | FLAG_UP if fault.value == "on" else flags & ~FLAG_UP
        elif fault.kind == "uv_flag":
            flags = flags | FLAG_UV if fault.value == "on" else flags & ~FLAG_UV
        elif fault.kind == "counter":
            counter = int(fault.value)
        elif fault.kind == "counter_regression":
            counter = max(0, counter - 1 - int(fault.value))
        elif fault.kind == "rp_id_hash":
            if fault.value is None:
                rp_hash = bytes(b ^ 0xFF for b in rp_hash)
            else:
                rp_hash = hashlib.sha256(str(fault.value).encode()).digest()
        elif fault.kind == "aaguid":
            if not flags & FLAG_AT or len(rest) < 16:
                continue
            rest = uuid.UUID(str(fault.value)).bytes + rest[16:]
        else:
            continue
        used.append(fault)
    return rp_hash + bytes([flags]) + counter.to_bytes(4, "big") + rest, used


def _credential_secrets(auth: Authenticator, credential_id: bytes, rp_hash: bytes) -> Any:
    found = auth.locate(credential_id, rp_hash)
    return found.secrets if found is not None else None


def _mutate(
    auth: Authenticator, command: int, params: dict[Any, Any], response: bytes, due: list[Fault]
) -> tuple[bytes, list[Fault]]:
    body = cbor.decode(response[1:])
    if not isinstance(body, dict):
        return response, []
    data = body.get(2)
    if not isinstance(data, bytes) or len(data) < 37:
        return response, []
    real_rp_hash = data[:32]
    new_data, used = _auth_data(data, [f for f in due if f.kind in _AUTH_DATA_KINDS])
    bad = _first(due, "bad_signature")
    if command == GA:
        client_data_hash = params.get(2, b"")
        credential = body.get(1)
        cred_id = credential.get("id") if isinstance(credential, dict) else None
        signature = body.get(3, b"")
        if new_data != data and isinstance(cred_id, bytes):
            secrets = _credential_secrets(auth, cred_id, real_rp_hash)
            if secrets is not None:
                signature = cose.sign(secrets.alg, secrets.private_key, new_data + client_data_hash)
        if bad is not None:
            signature = _corrupt(signature)
            used.append(bad)
        body[2], body[3] = new_data, signature
        return b"\x00" + cbor.encode(body), used

    client_data_hash = params.get(1, b"")
    injected = _first(due, "attestation_cert")
    if injected is not None:
        body.update(_self_signed_statement(injected, new_data, client_data_hash))
        used.append(injected)
    elif new_data != data and body.get(1) == "packed":
        cred_id = _attested_credential_id(new_data)
        secrets = _credential_secrets(auth, cred_id, real_rp_hash) if cred_id else None
        alg = secrets.alg if secrets is not None else CoseAlg.ES256
        key = secrets.private_key if secrets is not None else b""
        if secrets is not None or auth.attestation.mode != "self":
            body.update(
                auth.attestation.statement(
                    new_data, client_data_hash, alg, key, fmt="packed", enterprise=4 in body
                )
            )
    body[2] = new_data
    statement = body.get(3)
    if bad is not None and isinstance(statement, dict) and isinstance(statement.get("sig"), bytes):
        body[3] = {**statement, "sig": _corrupt(statement["sig"])}
        used.append(bad)
    return b"\x00" + cbor.encode(body), used


def _attested_credential_id(auth_data: bytes) -> bytes | None:
    if len(auth_data) < 55 or not auth_data[32] & FLAG_AT:
        return None
    length = int.from_bytes(auth_data[53:55], "big")
    return auth_data[55 : 55 + length]


def _self_signed_statement(fault: Fault, auth_data: bytes, client_data_hash: bytes) -> dict:
    """fmt/attStmt of packed attestation by a fresh self-signed certificate, for the AAGUID the
    answer carries: valid in itself, chaining to no root an RP trusts."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from .attestation import aaguid_extension

    key: ec.EllipticCurvePrivateKey = fault._key
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "ZZ"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "softkey injected fault"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Authenticator Attestation"),
            x509.NameAttribute(NameOID.COMMON_NAME, "softkey self-signed attestation"),
        ]
    )
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    if len(auth_data) >= 53 and auth_data[32] & FLAG_AT:
        builder = builder.add_extension(aaguid_extension(auth_data[37:53]), critical=False)
    cert = builder.sign(key, hashes.SHA256())
    signature = key.sign(auth_data + client_data_hash, ec.ECDSA(hashes.SHA256()))
    return {
        1: "packed",
        3: {
            "alg": int(CoseAlg.ES256),
            "sig": signature,
            "x5c": [cert.public_bytes(serialization.Encoding.DER)],
        },
    }
