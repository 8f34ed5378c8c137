"""Decoded one-line traces of CTAP requests and responses (`softkey run --trace`).

``format_trace(request, response, outcome)`` turns one CTAPHID_CBOR exchange into one line a
relying-party developer can read::

    getAssertion rp=example.com allowList=0 options={up} -> CTAP2_ERR_NO_CREDENTIALS:
        empty allowList and no discoverable credential for example.com: ...

(on one line). It names the command, rpId, list sizes, options, extensions, the result code
and, on failure, the device's reason (``Authenticator.last_outcome.reason``).

Never logged: PINs and PIN hashes (``newPinEnc``, ``pinHashEnc``), ``pinUvAuthParam`` bytes,
key-agreement keys, pinUvAuthTokens, private keys, signatures, large-blob contents. Only the
*presence* of a pinUvAuthParam and its protocol number appear. Credential IDs are public
(the RP stores them) but long; a short prefix is shown so lines can be correlated with
``softkey credentials list``. Text from the request (rpId, user name, and the device's reason,
which may quote them) is escaped (``softkey.transports.display.printable``) so a hostile
client cannot forge extra log lines or rewrite the terminal.

An answer changed by an injected fault (authenticator/faults.py, `softkey fault add`) ends in
``[fault: LABEL,...]``; one the key withholds reads ``-> <no answer> [fault: no_answer]``::

    getAssertion rp=example.com allowList=1 -> CTAP2_OK credential=014cf29a… counter=2
        [fault: bad_signature]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

import cbor2

from softkey.authenticator.ctap import Status
from softkey.transports.display import printable

COMMANDS: dict[Any, str] = {
    0x01: "makeCredential",
    0x02: "getAssertion",
    0x04: "getInfo",
    0x06: "clientPIN",
    0x07: "reset",
    0x08: "getNextAssertion",
    0x09: "bioEnrollment",
    0x0A: "credentialManagement",
    0x0B: "selection",
    0x0C: "largeBlobs",
    0x0D: "config",
    0x40: "bioEnrollmentPreview",
    0x41: "credentialManagementPreview",
}

CLIENT_PIN_SUBCOMMANDS: dict[Any, str] = {
    0x01: "getPINRetries",
    0x02: "getKeyAgreement",
    0x03: "setPIN",
    0x04: "changePIN",
    0x05: "getPinToken",
    0x06: "getPinUvAuthTokenUsingUvWithPermissions",
    0x07: "getUVRetries",
    0x09: "getPinUvAuthTokenUsingPinWithPermissions",
}

PERMISSIONS: dict[Any, str] = {
    0x01: "mc",
    0x02: "ga",
    0x04: "cm",
    0x08: "be",
    0x10: "lbw",
    0x20: "acfg",
    0x40: "pcmr",
}

CREDMAN_SUBCOMMANDS: dict[Any, str] = {
    0x01: "getCredsMetadata",
    0x02: "enumerateRPsBegin",
    0x03: "enumerateRPsGetNextRP",
    0x04: "enumerateCredentialsBegin",
    0x05: "enumerateCredentialsGetNextCredential",
    0x06: "deleteCredential",
    0x07: "updateUserInformation",
}

CONFIG_SUBCOMMANDS: dict[Any, str] = {
    0x01: "enableEnterpriseAttestation",
    0x02: "toggleAlwaysUv",
    0x03: "setMinPINLength",
    0xFF: "vendorPrototype",
}

U2F_INSTRUCTIONS: dict[Any, str] = {
    0x01: "U2F_REGISTER",
    0x02: "U2F_AUTHENTICATE",
    0x03: "U2F_VERSION",
}
U2F_STATUS: dict[Any, str] = {
    0x9000: "SW_NO_ERROR",
    0x6985: "SW_CONDITIONS_NOT_SATISFIED",
    0x6A80: "SW_WRONG_DATA",
    0x6700: "SW_WRONG_LENGTH",
    0x6E00: "SW_CLA_NOT_SUPPORTED",
    0x6D00: "SW_INS_NOT_SUPPORTED",
}

_MAX_TEXT = 64


class OutcomeLike(Protocol):
    """What ``authenticator.device.Outcome`` carries (duck-typed to keep this decoupled)."""

    command: int
    status: int
    reason: str


def status_name(code: int) -> str:
    """The spec's name for a status byte: CTAP2_OK, CTAP1_ERR_*, CTAP2_ERR_* or 0x..."""
    if code == 0:
        return "CTAP2_OK"
    try:
        name = Status(code).name
    except ValueError:
        return f"0x{code:02x}"
    # CTAP 2.1 §8.2: 0x01-0x0B and 0x7F keep their CTAP1 names.
    prefix = "CTAP1_ERR_" if code <= 0x0B or code == Status.OTHER else "CTAP2_ERR_"
    return prefix + name


def _text(value: Any) -> str:
    """Request-supplied text, escaped onto one line (transports/display.py) and shortened."""
    if not isinstance(value, str):
        return "?"
    if value.isprintable() and " " not in value:
        return printable(value, _MAX_TEXT)
    # Quoted, so a space inside cannot pass for the gap between two fields. Backslashes and
    # quotes are escaped before the control characters are, so a value cannot close the
    # quote early or pass a literal "\x1b" off as an escaped one.
    quoted = value.replace("\\", "\\\\").replace("'", "\\'")
    return "'" + printable(quoted, _MAX_TEXT - 2) + "'"


def _num(value: Any) -> str:
    """An integer (or bool) member; anything else only by its type (it could be anything)."""
    if isinstance(value, (int, bool)):
        return repr(value)
    return f"<{type(value).__name__}>"


def _short_id(value: Any) -> str:
    if not isinstance(value, (bytes, bytearray)):
        return "?"
    return bytes(value[:4]).hex() + "…" if len(value) > 4 else bytes(value).hex()


def _options(value: Any) -> str | None:
    if not isinstance(value, Mapping) or not value:
        return None
    parts = [
        (_text(k) if v is True else f"{_text(k)}=false") if isinstance(v, bool) else f"{_text(k)}=?"
        for k, v in value.items()
    ]
    return "options={" + ",".join(parts) + "}"


def _extensions(value: Any) -> str | None:
    if not isinstance(value, Mapping) or not value:
        return None
    # Names only: extension inputs may carry secrets (hmac-secret salts, credBlob contents).
    return "ext=[" + ",".join(_text(k) if isinstance(k, str) else "?" for k in value) + "]"


def _count(value: Any) -> str:
    return str(len(value)) if isinstance(value, list) else "?"


def _pin_auth(params: Mapping[Any, Any], param_key: int, protocol_key: int) -> str | None:
    if param_key not in params:
        return None
    param = params[param_key]
    protocol = params.get(protocol_key)
    if isinstance(param, (bytes, bytearray)) and len(param) == 0:
        return "pinUvAuthParam=empty(touch probe)"
    proto = f"(protocol {protocol})" if isinstance(protocol, int) else ""
    return f"pinUvAuthParam=present{proto}"


def _permissions(value: Any) -> str:
    if not isinstance(value, int) or isinstance(value, bool):
        return "?"
    names = [name for bit, name in PERMISSIONS.items() if value & bit]
    unknown = value & ~sum(PERMISSIONS)
    if unknown:
        names.append(f"0x{unknown:x}")
    return "+".join(names) or "none"


def _decode(payload: bytes) -> tuple[Any, str | None]:
    if not payload:
        return {}, None
    try:
        return cbor2.loads(payload), None
    except Exception:  # any garbage: say so, never raise from a logger
        return None, f"<{len(payload)} bytes, not CBOR>"


def _describe_request(command: int, params: Mapping[Any, Any]) -> list[str]:
    parts: list[str] = []
    if command == 0x01:  # makeCredential
        rp = params.get(2)
        user = params.get(3)
        if isinstance(rp, Mapping):
            parts.append(f"rp={_text(rp.get('id'))}")
        if isinstance(user, Mapping) and "name" in user:
            parts.append(f"user={_text(user.get('name'))}")
        algs = params.get(4)
        if isinstance(algs, list):
            parts.append(
                "algs=["
                + ",".join(str(a.get("alg")) if isinstance(a, Mapping) else "?" for a in algs)
                + "]"
            )
        if 5 in params:
            parts.append(f"excludeList={_count(params[5])}")
        parts += filter(None, [_extensions(params.get(6)), _options(params.get(7))])
        parts += filter(None, [_pin_auth(params, 8, 9)])
        if 10 in params:
            parts.append(f"enterpriseAttestation={_num(params[10])}")
    elif command == 0x02:  # getAssertion
        parts.append(f"rp={_text(params.get(1))}")
        parts.append(f"allowList={_count(params[3]) if 3 in params else 0}")
        parts += filter(None, [_extensions(params.get(4)), _options(params.get(5))])
        parts += filter(None, [_pin_auth(params, 6, 7)])
    elif command == 0x06:  # clientPIN: never the encrypted PIN, hash, token or keys
        sub = params.get(2)
        parts.append(CLIENT_PIN_SUBCOMMANDS.get(sub, f"subCommand={_num(sub)}"))
        if 1 in params:
            parts.append(f"protocol={_num(params[1])}")
        if 9 in params:
            parts.append(f"permissions={_permissions(params[9])}")
        if 10 in params:
            parts.append(f"rp={_text(params[10])}")
    elif command in (0x0A, 0x41):  # credentialManagement
        sub = params.get(1)
        parts.append(CREDMAN_SUBCOMMANDS.get(sub, f"subCommand={_num(sub)}"))
        sub_params = params.get(2)
        if isinstance(sub_params, Mapping):
            if 1 in sub_params:
                parts.append("rpIdHash=" + _short_id(sub_params[1]))
            cred = sub_params.get(2)
            if isinstance(cred, Mapping):
                parts.append("credential=" + _short_id(cred.get("id")))
        parts += filter(None, [_pin_auth(params, 4, 3)])
    elif command == 0x0C:  # largeBlobs: offsets and sizes only
        if 1 in params:
            parts.append(f"get={_num(params[1])}")
        if 2 in params:
            size = len(params[2]) if isinstance(params[2], (bytes, bytearray)) else "?"
            parts.append(f"set={size}B")
        if 3 in params:
            parts.append(f"offset={_num(params[3])}")
        if 4 in params:
            parts.append(f"length={_num(params[4])}")
        parts += filter(None, [_pin_auth(params, 5, 6)])
    elif command == 0x0D:  # config
        sub = params.get(1)
        parts.append(CONFIG_SUBCOMMANDS.get(sub, f"subCommand={_num(sub)}"))
        parts += filter(None, [_pin_auth(params, 4, 3)])
    return parts


def _authdata_counter(auth_data: Any) -> int | None:
    if isinstance(auth_data, (bytes, bytearray)) and len(auth_data) >= 37:
        return int.from_bytes(auth_data[33:37], "big")
    return None


def _describe_response(command: int, body: Any) -> list[str]:
    if not isinstance(body, Mapping):
        return []
    parts: list[str] = []
    if command == 0x01:
        auth_data = body.get(2)
        if isinstance(auth_data, (bytes, bytearray)) and len(auth_data) >= 55 + 2:
            id_len = int.from_bytes(auth_data[53:55], "big")
            cred_id = bytes(auth_data[55 : 55 + id_len])
            parts.append(f"credential={_short_id(cred_id)}({id_len}B)")
        if 1 in body:
            parts.append(f"fmt={_text(body[1])}")
    elif command in (0x02, 0x08):
        cred = body.get(1)
        if isinstance(cred, Mapping):
            parts.append("credential=" + _short_id(cred.get("id")))
        counter = _authdata_counter(body.get(2))
        if counter is not None:
            parts.append(f"counter={counter}")
        if 5 in body:
            parts.append(f"numberOfCredentials={_num(body[5])}")
        if isinstance(body.get(4), Mapping):
            parts.append("user=" + _short_id(body[4].get("id")))
    elif command == 0x04:
        versions = body.get(1)
        if isinstance(versions, list):
            parts.append("versions=" + ",".join(_text(v) for v in versions))
        if 0x14 in body:
            parts.append(f"remainingDiscoverableCredentials={_num(body[0x14])}")
    elif command == 0x06:
        if 3 in body:
            parts.append(f"retries={_num(body[3])}")
        if 5 in body:
            parts.append(f"uvRetries={_num(body[5])}")
        if 2 in body:
            parts.append("token=issued")  # the encrypted token itself is never shown
    elif command in (0x0A, 0x41):
        for key, name in ((1, "existing"), (2, "remaining"), (5, "totalRPs"), (9, "totalCreds")):
            if key in body:
                parts.append(f"{name}={_num(body[key])}")
        if isinstance(body.get(3), Mapping):
            parts.append(f"rp={_text(body[3].get('id'))}")
    return parts


def format_trace(request: bytes, response: bytes, outcome: OutcomeLike | None = None) -> str:
    """One line describing a CTAP2 request and its response; never includes secrets.

    ``outcome`` is the device's ``last_outcome`` for this request; its reason is appended on
    failure. An outcome for another command (a stale one) is ignored.
    """
    if not request:
        return "<empty request> -> " + (status_name(response[0]) if response else "<no response>")
    command = request[0]
    name = COMMANDS.get(command, f"command 0x{command:02x}")
    params, undecodable = _decode(bytes(request[1:]))
    parts = [name]
    if undecodable:
        parts.append(undecodable)
    elif isinstance(params, Mapping):
        parts += _describe_request(command, params)
    else:
        parts.append("<parameters are not a CBOR map>")

    current = outcome is not None and outcome.command == command
    labels = tuple(getattr(outcome, "faults", ()) or ()) if current else ()
    marker = " [fault: " + ",".join(printable(label) for label in labels) + "]" if labels else ""
    if current and getattr(getattr(outcome, "hold", None), "no_answer", False):
        return " ".join(parts) + " -> <no answer>" + marker
    if not response:
        return " ".join(parts) + " -> <no response>" + marker
    code = response[0]
    result = status_name(code)
    if code == 0:
        body, _ = _decode(bytes(response[1:]))
        details = _describe_response(command, body)
        if details:
            result += " " + " ".join(details)
    elif outcome is not None and outcome.command == command and outcome.reason:
        # The reason may quote the request (rpId): escaped like every request-supplied text.
        result += ": " + printable(outcome.reason)
    return " ".join(parts) + " -> " + result + marker


def format_u2f_trace(apdu: bytes, response: bytes) -> str:
    """One line for a CTAP1/U2F APDU (INS name, P1 control byte, status word)."""
    if len(apdu) < 4:
        head = f"<{len(apdu)}-byte APDU>"
    else:
        ins = apdu[1]
        head = U2F_INSTRUCTIONS.get(ins, f"U2F INS 0x{ins:02x}") + f" p1=0x{apdu[2]:02x}"
    if len(response) < 2:
        return head + " -> <no status word>"
    sw = int.from_bytes(response[-2:], "big")
    return head + " -> " + U2F_STATUS.get(sw, f"SW 0x{sw:04x}")


def install_trace(authenticator: Any, write: Callable[[str], None]) -> None:
    """Make ``authenticator`` report every CTAP2/U2F exchange to ``write`` as one line.

    Wraps the instance's ``handle_cbor``/``handle_u2f`` (what every transport calls), so the
    transports need no tracing code. A decoding bug can never break the device: the line
    degrades to a notice and the response goes out unchanged.
    """
    handle_cbor = authenticator.handle_cbor
    handle_u2f = authenticator.handle_u2f

    def traced_cbor(request: bytes, interaction: Any = None) -> bytes:
        response: bytes = handle_cbor(request, interaction)
        try:
            line = format_trace(request, response, authenticator.last_outcome)
        except Exception:  # pragma: no cover - the decoder promises not to raise
            line = f"<undecodable exchange: {len(request)} bytes in, {len(response)} out>"
        write(line)
        return response

    def traced_u2f(apdu: bytes, interaction: Any = None) -> bytes:
        response: bytes = handle_u2f(apdu, interaction)
        try:
            line = format_u2f_trace(apdu, response)
        except Exception:  # pragma: no cover
            line = f"<undecodable U2F exchange: {len(apdu)} bytes>"
        write(line)
        return response

    authenticator.handle_cbor = traced_cbor
    authenticator.handle_u2f = traced_u2f
