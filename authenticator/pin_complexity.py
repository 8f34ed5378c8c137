"""PIN complexity policy and PIN length limits of CTAP 2.2 keys (§6.4, §6.11.4).

CTAP 2.2 lets a key enforce a PIN complexity policy beyond minPINLength. getInfo's
pinComplexityPolicy (0x1B) is present on keys that have one and says whether it is enforced
now; authenticatorConfig setMinPINLength gains the member pinComplexityPolicy (0x04): true
switches the policy on. Like the minimum PIN length it only gets stricter: false (or leaving
it out) changes nothing, and only authenticatorReset switches it off again. The policy's
content is the authenticator's choice; softkey's, once on, refuses the two classic trivial
PINs with PIN_POLICY_VIOLATION when a PIN is set or changed:

- one character repeated ("0000", "aaaaaa");
- a run of consecutive code points, up or down ("1234", "98765", "abcd").

No pinComplexityPolicyURL (0x1C) is given: it is optional and this docstring is the policy.
The switch lives in the store's meta table, so reset (which wipes meta) turns it off.

maxPINLength (0x1D, CTAP 2.2) is 63: the newPinEnc block carries at most 63 bytes of UTF-8
(64 with the terminating zero), so no PIN can be longer; it is also python-fido2's default.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .ctap import CtapError, InfoKey, Status

if TYPE_CHECKING:
    from .device import Authenticator

META_PIN_COMPLEXITY_POLICY = "pin_complexity_policy"
# setMinPINLength subCommandParams member (CTAP 2.2 §6.11.4).
PIN_COMPLEXITY_POLICY_PARAM = 0x04
MAX_PIN_LENGTH = 63


def supported(auth: Authenticator) -> bool:
    return auth.profile.pin_complexity_policy


def enforced(auth: Authenticator) -> bool:
    return supported(auth) and bool(auth.store.get_int(META_PIN_COMPLEXITY_POLICY))


def info_members(auth: Authenticator) -> dict[int, Any]:
    if not supported(auth):
        return {}
    return {InfoKey.PIN_COMPLEXITY_POLICY: enforced(auth), InfoKey.MAX_PIN_LENGTH: MAX_PIN_LENGTH}


def requested(auth: Authenticator, sub_params: dict) -> bool:
    """setMinPINLength's pinComplexityPolicy member, checked (True: switch the policy on).

    Keys without a policy ignore the member, as they ignore any member they do not know.
    """
    if not supported(auth) or PIN_COMPLEXITY_POLICY_PARAM not in sub_params:
        return False
    value = sub_params[PIN_COMPLEXITY_POLICY_PARAM]
    if not isinstance(value, bool):
        raise CtapError(Status.CBOR_UNEXPECTED_TYPE, "pinComplexityPolicy must be a boolean")
    return value


def enforce(auth: Authenticator) -> None:
    auth.store.set_int(META_PIN_COMPLEXITY_POLICY, 1)


def check(auth: Authenticator, pin: str) -> None:
    """PIN_POLICY_VIOLATION if the policy is on and ``pin`` is a trivial one."""
    if not enforced(auth) or len(pin) < 2:
        return
    if len(set(pin)) == 1:
        raise CtapError(Status.PIN_POLICY_VIOLATION, "the PIN repeats one character")
    steps = {ord(b) - ord(a) for a, b in zip(pin, pin[1:], strict=False)}
    if steps in ({1}, {-1}):
        raise CtapError(Status.PIN_POLICY_VIOLATION, "the PIN is a run of consecutive characters")
