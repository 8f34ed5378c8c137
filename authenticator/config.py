"""authenticatorConfig (0x0D, CTAP 2.1 §6.11): toggleAlwaysUv, setMinPINLength,
enableEnterpriseAttestation.

Only profiles with ``authnr_cfg`` (CTAP 2.1) have the command; others answer
INVALID_COMMAND. Once a PIN is set (or alwaysUv is on), every subcommand needs a
pinUvAuthParam over ``32 × 0xff || 0x0d || subCommand || CBOR(subCommandParams)`` from a token
with the acfg permission. enableEnterpriseAttestation exists only if the profile offers
enterprise attestation (option ``ep``). vendorPrototype (0xff) is refused with
INVALID_SUBCOMMAND: this key advertises no vendorPrototypeConfigCommands.
"""

from __future__ import annotations

from enum import IntEnum, unique
from typing import TYPE_CHECKING

from . import cbor, pin_complexity
from .ctap import Cmd, CtapError, Status
from .environment import Interaction
from .params import get, opt
from .pin import (
    MAX_PIN_BYTES,
    META_ALWAYS_UV,
    META_FORCE_PIN_CHANGE,
    META_MIN_PIN_LENGTH,
    Permission,
)
from .profiles import Profile

if TYPE_CHECKING:
    from .device import Authenticator, Handler

META_MIN_PIN_LENGTH_RPIDS = "min_pin_length_rpids"


@unique
class ConfigCmd(IntEnum):
    ENABLE_ENTERPRISE_ATTESTATION = 0x01
    TOGGLE_ALWAYS_UV = 0x02
    SET_MIN_PIN_LENGTH = 0x03
    VENDOR_PROTOTYPE = 0xFF


@unique
class ConfigKey(IntEnum):
    SUB_COMMAND = 0x01
    SUB_COMMAND_PARAMS = 0x02
    PIN_UV_AUTH_PROTOCOL = 0x03
    PIN_UV_AUTH_PARAM = 0x04


@unique
class SetMinPinLengthKey(IntEnum):
    NEW_MIN_PIN_LENGTH = 0x01
    MIN_PIN_LENGTH_RPIDS = 0x02
    FORCE_CHANGE_PIN = 0x03


def handlers(profile: Profile) -> dict[int, Handler]:
    return {Cmd.CONFIG: authenticator_config} if profile.authnr_cfg else {}


def min_pin_length_rp_ids(auth: Authenticator) -> list[str]:
    """RP IDs allowed to learn the minimum PIN length (minPinLength extension)."""
    raw = auth.store.get_meta(META_MIN_PIN_LENGTH_RPIDS)
    return list(cbor.decode(raw)) if raw else []


def info_options(auth: Authenticator) -> dict[str, bool]:
    profile = auth.profile
    if not profile.authnr_cfg:
        return {}
    options = {
        "authnrCfg": True,
        "alwaysUv": auth.pin_uv.always_uv,
        "setMinPINLength": True,
    }
    # "ep" comes from attestation.py, which owns enterprise attestation.
    return options


def authenticator_config(
    auth: Authenticator, params: dict, interaction: Interaction
) -> dict | None:
    K = ConfigKey
    sub = get(params, K.SUB_COMMAND, int)
    sub_params = opt(params, K.SUB_COMMAND_PARAMS, dict)
    protocol = opt(params, K.PIN_UV_AUTH_PROTOCOL, int)
    auth_param = opt(params, K.PIN_UV_AUTH_PARAM, bytes)
    supported = {ConfigCmd.TOGGLE_ALWAYS_UV, ConfigCmd.SET_MIN_PIN_LENGTH}
    if auth.attestation.enterprise_capable:
        supported.add(ConfigCmd.ENABLE_ENTERPRISE_ATTESTATION)
    if sub not in supported:
        raise CtapError(
            Status.INVALID_SUBCOMMAND, f"authenticatorConfig subcommand 0x{sub:02x} unsupported"
        )

    pin_uv = auth.pin_uv
    # §6.11 step 4: a key protected by a PIN (or with alwaysUv on) needs a token with acfg.
    # Turning alwaysUv off must stay possible on a key without a PIN.
    enforce_uv = pin_uv.always_uv and sub != ConfigCmd.TOGGLE_ALWAYS_UV
    if pin_uv.is_set or enforce_uv or auth_param is not None:
        message = b"\xff" * 32 + bytes([Cmd.CONFIG, sub])
        if sub_params is not None:
            message += cbor.encode(sub_params)
        pin_uv.authorize(protocol, auth_param, message, Permission.ACFG)

    store = auth.store
    if sub == ConfigCmd.ENABLE_ENTERPRISE_ATTESTATION:
        auth.attestation.enable_enterprise()
        return None
    if sub == ConfigCmd.TOGGLE_ALWAYS_UV:
        store.set_int(META_ALWAYS_UV, 0 if pin_uv.always_uv else 1)
        return None
    if sub_params is None:
        raise CtapError(Status.MISSING_PARAMETER, "setMinPINLength needs subCommandParams")
    _set_min_pin_length(auth, sub_params)
    return None


def _set_min_pin_length(auth: Authenticator, sub_params: dict) -> None:
    """§6.11.4: raise (never lower) the minimum, name RPs, force a PIN change."""
    P = SetMinPinLengthKey
    pin_uv = auth.pin_uv
    current = pin_uv.min_length
    new_length = opt(sub_params, P.NEW_MIN_PIN_LENGTH, int)
    rp_ids = opt(sub_params, P.MIN_PIN_LENGTH_RPIDS, list)
    force = opt(sub_params, P.FORCE_CHANGE_PIN, bool) or False
    # CTAP 2.2 member pinComplexityPolicy (0x04): true switches the policy on.
    complexity = pin_complexity.requested(auth, sub_params)
    if new_length is None:
        new_length = current
    if new_length < current:
        raise CtapError(
            Status.PIN_POLICY_VIOLATION,
            f"the minimum PIN length can only grow (it is {current}); reset the key to lower it",
        )
    if new_length > MAX_PIN_BYTES:
        raise CtapError(
            Status.PIN_POLICY_VIOLATION, f"no PIN could be {new_length} characters long"
        )
    if rp_ids is not None:
        if not all(isinstance(rp, str) for rp in rp_ids):
            raise CtapError(Status.CBOR_UNEXPECTED_TYPE, "minPinLengthRPIDs must be text")
        limit = auth.profile.max_rpids_for_set_min_pin_length
        if len(rp_ids) > limit:
            raise CtapError(
                Status.INVALID_PARAMETER, f"at most {limit} RP IDs may learn the PIN length"
            )
    if force and not pin_uv.is_set:
        raise CtapError(Status.PIN_NOT_SET, "forceChangePin needs a PIN to change")
    # A PIN shorter than the new minimum must be changed before its next use.
    code_points = pin_uv.pin_code_points
    force = force or (code_points is not None and code_points < new_length)
    store = auth.store
    with store.transaction():
        store.set_int(META_MIN_PIN_LENGTH, new_length)
        if rp_ids is not None:
            store.set_meta(META_MIN_PIN_LENGTH_RPIDS, cbor.encode(rp_ids))
        if force:
            store.set_int(META_FORCE_PIN_CHANGE, 1)
        if complexity:
            pin_complexity.enforce(auth)
