"""Built-in user verification: the fingerprint sensor of profiles with ``Profile.bio``.

CTAP 2.1 places built-in UV in several commands; this module is the one place that knows
the enrolled fingers, the uvRetries counter and how a finger on the sensor turns out:

- getInfo (§6.4): options ``uv`` (true once a finger is enrolled, false while the sensor is
  empty), ``bioEnroll`` / ``userVerificationMgmtPreview`` (the same, for the 0x09 command and
  the FIDO_2_1_PRE prototype 0x40), ``uvBioEnroll`` (a token with the be permission may come
  from built-in UV); members preferredPlatformUvAttempts (0x11) and uvModality (0x12);
- clientPIN getPinUvAuthTokenUsingUvWithPermissions (0x06, §6.5.5.7.3) and getUVRetries
  (0x07, §6.5.5): ``get_token`` / ``get_retries``;
- the ``uv`` option of makeCredential / getAssertion (§6.1.2 steps 5 and 11.2, §6.2.2 steps
  4 and 6.2): ``uv_option``; with alwaysUv on, a request without UV uses the sensor too
  (§6.1.2 step 5.4);
- performBuiltInUv: ``perform``. One finger, one match attempt per request (no internal
  retries), so each scripted verdict is exactly one attempt. A finger that does not match
  spends a uvRetry (CTAP2_ERR_UV_INVALID); the last one blocks the sensor
  (CTAP2_ERR_UV_BLOCKED) until the PIN is entered right (``pin_verified``: Yubico documents
  that a right PIN resets the UV retries of a YubiKey Bio). No finger in time is
  CTAP2_ERR_USER_ACTION_TIMEOUT and costs nothing. A finger on the sensor is also the
  user's presence (§6.1.2 step 14, §6.2.2 step 9), and a token from built-in UV starts with
  userPresent true (beginUsingPinUvAuthToken(userIsPresent: true)).

authenticatorBioEnrollment itself (enrolling, naming, removing fingers) is bio_enrollment.py.

Who puts which finger on the sensor is a ``UserVerifier``, passed to the ``Authenticator``
like ``Presence``: ``ScriptedVerifier`` gives scripted verdicts, then a standing one
(WebDriver's setUserVerified), or, with no standing verdict, asks the presence policy as if
for a touch (approved: an enrolled finger; denied: a finger that does not match). Verdicts
mean the same during enrollment: approved is a good sample, denied a poor one, a timeout
"no user activity".

Persistent state lives in the store's meta table (reset wipes it): the templates as JSON
under ``bio_templates`` ([{"id": hex, "name": text}], oldest first) and ``uv_retries``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from .ctap import CtapError, InfoKey, Status
from .environment import Interaction, Presence, PresenceRequest, Verdict
from .params import get, opt
from .profiles import CTAP2_1, BioSensor

if TYPE_CHECKING:
    from .device import Authenticator
    from .pin import PinProtocol, PinUv

META_TEMPLATES = "bio_templates"
META_UV_RETRIES = "uv_retries"

# What a verdict is called where people script it (pytest plugin, `softkey set-user-verified`).
VERDICT_NAMES = {
    "approve": Verdict.APPROVED,
    "fail": Verdict.DENIED,
    "timeout": Verdict.TIMEOUT,
    "cancel": Verdict.CANCELLED,
}


class UserVerifier(Protocol):
    """How each fingerprint check turns out (one finger on the sensor, one verdict)."""

    def verify(
        self, request: PresenceRequest, interaction: Interaction, presence: Presence
    ) -> Verdict: ...


class ScriptedVerifier:
    """Scripted verdicts first, then ``default``; ``default`` None asks ``presence``.

    Records every request it saw. Approved: an enrolled finger (a good sample while
    enrolling); denied: a finger that does not match (a poor sample); timeout: no finger.
    """

    def __init__(self, verdicts: Iterable[Verdict] = (), default: Verdict | None = None) -> None:
        self.verdicts = list(verdicts)
        self.default = default
        self.requests: list[PresenceRequest] = []

    def verify(
        self, request: PresenceRequest, interaction: Interaction, presence: Presence
    ) -> Verdict:
        self.requests.append(request)
        if interaction.cancelled():
            return Verdict.CANCELLED
        if self.verdicts:
            return self.verdicts.pop(0)
        if self.default is not None:
            return self.default
        return presence.confirm(request, interaction)


@dataclass(frozen=True)
class Template:
    """One enrolled finger."""

    template_id: bytes
    name: str = ""


def _permission_names(permissions: int) -> str:
    from .pin import Permission

    names = {
        Permission.MC: "makeCredential",
        Permission.GA: "getAssertion",
        Permission.CM: "credential management",
        Permission.BE: "bio enrollment",
        Permission.LBW: "large blob write",
    }
    return ", ".join(text for flag, text in names.items() if permissions & flag) or "a token"


class BuiltinUv:
    """The fingerprint sensor's state and checks for one ``Authenticator``."""

    def __init__(self, auth: Authenticator) -> None:
        self.auth = auth

    @property
    def sensor(self) -> BioSensor | None:
        return self.auth.profile.bio

    def _sensor(self) -> BioSensor:
        sensor = self.sensor
        if sensor is None:
            raise CtapError(Status.INVALID_COMMAND, "this key has no fingerprint sensor")
        return sensor

    # -- persistent state ----------------------------------------------------------------

    def templates(self) -> list[Template]:
        raw = self.auth.store.get_meta(META_TEMPLATES)
        if not raw:
            return []
        return [Template(bytes.fromhex(t["id"]), t.get("name") or "") for t in json.loads(raw)]

    def save_templates(self, templates: list[Template]) -> None:
        store = self.auth.store
        if not templates:
            store.delete_meta(META_TEMPLATES)
            return
        data = [{"id": t.template_id.hex(), "name": t.name} for t in templates]
        store.set_meta(META_TEMPLATES, json.dumps(data).encode())

    @property
    def enrolled(self) -> bool:
        return self.sensor is not None and bool(self.templates())

    @property
    def retries(self) -> int:
        sensor = self.sensor
        if sensor is None:
            return 0
        return self.auth.store.get_int(META_UV_RETRIES, sensor.max_uv_retries)

    def _set_retries(self, value: int) -> None:
        self.auth.store.set_int(META_UV_RETRIES, value)

    def pin_verified(self) -> None:
        """A right PIN unblocks the sensor: uvRetries back to the maximum."""
        sensor = self.sensor
        if sensor is not None and self.retries != sensor.max_uv_retries:
            self._set_retries(sensor.max_uv_retries)

    def status(self) -> dict[str, Any]:
        """For ``Authenticator.pin_status`` (`softkey pin status`): uv_retries, on keys with
        a sensor only."""
        return {} if self.sensor is None else {"uv_retries": self.retries}

    # -- getInfo (§6.4) --------------------------------------------------------------------

    def info_options(self) -> dict[str, bool]:
        if self.sensor is None:
            return {}
        enrolled = self.enrolled
        profile = self.auth.profile
        # "uv": the key can verify the user by itself; false = supported, not configured.
        options = {"uv": enrolled, "userVerificationMgmtPreview": enrolled}
        if profile.at_least(CTAP2_1):
            options["bioEnroll"] = enrolled
            # A token with the be permission may come from built-in UV (§6.5.5.7.3).
            options["uvBioEnroll"] = True
        return options

    def info_members(self) -> dict[int, Any]:
        sensor = self.sensor
        if sensor is None or not self.auth.profile.at_least(CTAP2_1):
            return {}
        return {
            InfoKey.PREFERRED_PLATFORM_UV_ATTEMPTS: sensor.preferred_platform_uv_attempts,
            InfoKey.UV_MODALITY: sensor.uv_modality,
        }

    # -- performBuiltInUv ------------------------------------------------------------------

    def ask(self, purpose: str, rp_id: str | None, interaction: Interaction) -> Verdict:
        """One finger on the sensor (enrollment uses this for its samples)."""
        request = PresenceRequest(purpose, rp_id)
        return self.auth.verifier.verify(request, interaction, self.auth.presence)

    def perform(self, purpose: str, rp_id: str | None, interaction: Interaction) -> None:
        """Match one finger; raise the spec's status unless it matched."""
        sensor = self._sensor()
        retries = self.retries
        if retries <= 0:
            raise CtapError(
                Status.UV_BLOCKED,
                "the fingerprint sensor is blocked (no UV retries left): use the PIN, which "
                "unblocks it",
            )
        verdict = self.ask(f"fingerprint for {purpose}", rp_id, interaction)
        if verdict is Verdict.APPROVED:
            if retries != sensor.max_uv_retries:
                self._set_retries(sensor.max_uv_retries)
            return
        if verdict is Verdict.CANCELLED:
            raise CtapError(Status.KEEPALIVE_CANCEL, "the platform cancelled the request")
        if verdict is Verdict.TIMEOUT:
            raise CtapError(Status.USER_ACTION_TIMEOUT, "no finger on the sensor in time")
        retries -= 1
        self._set_retries(retries)
        if retries <= 0:
            raise CtapError(
                Status.UV_BLOCKED,
                "the fingerprint did not match and the sensor is now blocked: use the PIN",
            )
        left = f"{retries} UV {'retry' if retries == 1 else 'retries'} left"
        raise CtapError(Status.UV_INVALID, f"the fingerprint did not match ({left})")

    # -- makeCredential / getAssertion "uv" option ---------------------------------------------

    def implied_by_always_uv(self, always_uv: bool, permission: str, options: dict) -> bool:
        """alwaysUv on and no UV asked for: an enabled sensor verifies (§6.1.2 step 5.4)."""
        return (
            always_uv
            and self.enrolled
            and "uv" not in options
            and (permission == "mc" or options.get("up", True))
        )

    def uv_option(self, permission: str, rp_id: str, interaction: Interaction) -> bool:
        """The "uv" option (no pinUvAuthParam): built-in UV or the spec's refusal; True."""
        profile = self.auth.profile
        v21 = profile.at_least(CTAP2_1)
        if self.sensor is None:
            status = Status.INVALID_OPTION if v21 else Status.UNSUPPORTED_OPTION
            raise CtapError(status, "this key has no built-in user verification; use the PIN")
        if not self.enrolled:
            # uv false in getInfo: supported, not configured (§6.1.2 step 5).
            raise CtapError(
                Status.INVALID_OPTION, "no finger is enrolled: enroll one, or use the PIN"
            )
        purpose = "makeCredential" if permission == "mc" else "getAssertion"
        self.perform(purpose, rp_id, interaction)
        return True

    # -- clientPIN 0x06 / 0x07 ---------------------------------------------------------------

    def get_retries(self) -> dict[int, Any]:
        """getUVRetries (0x07): {uvRetries (0x05)}."""
        from .pin import ClientPinResponseKey

        self._sensor()
        return {ClientPinResponseKey.UV_RETRIES: self.retries}

    def get_token(
        self, pin_uv: PinUv, params: dict, protocol: PinProtocol, interaction: Interaction
    ) -> dict[int, Any]:
        """getPinUvAuthTokenUsingUvWithPermissions (0x06, CTAP 2.1 §6.5.5.7.3)."""
        from .pin import ClientPinKey, ClientPinResponseKey, Permission

        K = ClientPinKey
        key_agreement = get(params, K.KEY_AGREEMENT, dict)
        requested = get(params, K.PERMISSIONS, int)
        rp_id = opt(params, K.RP_ID, str)
        permissions = pin_uv._check_permissions(requested, rp_id)
        # acfg through built-in UV needs uvAcfg, which this key does not offer; the CTAP 2.2
        # persistent token (pcmr) comes with the PIN only.
        if permissions & (Permission.ACFG | Permission.PCMR):
            raise CtapError(
                Status.UNAUTHORIZED_PERMISSION,
                "acfg and pcmr need the PIN (getPinUvAuthTokenUsingPinWithPermissions)",
            )
        if not self.enrolled:
            raise CtapError(Status.NOT_ALLOWED, "no finger is enrolled: get the token with the PIN")
        if self.retries <= 0:
            raise CtapError(
                Status.UV_BLOCKED,
                "the fingerprint sensor is blocked (no UV retries left): use the PIN",
            )
        shared = protocol.decapsulate(key_agreement)  # a bad key costs no retry
        self.perform(_permission_names(permissions), rp_id, interaction)
        pin_uv._reset_token()
        token = pin_uv._token
        token.protocol = protocol.version
        token.in_use = True
        token.issued_at = pin_uv._now()
        token.user_verified = True
        token.user_present = True  # the finger on the sensor: beginUsing...(userIsPresent)
        token.permissions = permissions
        token.rp_id = rp_id
        return {ClientPinResponseKey.PIN_UV_AUTH_TOKEN: protocol.encrypt(shared, token.token)}
