"""authenticatorBioEnrollment: 0x09 (CTAP 2.1 §6.7) and the FIDO_2_1_PRE prototype 0x40.

Only profiles with a fingerprint sensor (``Profile.bio``) have the commands: 0x40 from
2.1-pre on (option userVerificationMgmtPreview), 0x09 from 2.1 on (option bioEnroll); other
keys answer INVALID_COMMAND. Encodings follow python-fido2 2.2.1's fido2/ctap2/bio.py.

- getModality (``getModality`` true, §6.7.2) and getFingerprintSensorInfo (0x07, §6.7.3)
  need no authentication, nor does cancelCurrentEnrollment (0x03), as python-fido2 sends it.
- enrollBegin (0x01), enrollCaptureNextSample (0x02), enumerateEnrollments (0x04),
  setFriendlyName (0x05) and removeEnrollment (0x06) need a pinUvAuthParam over
  ``modality || subCommand || CBOR(subCommandParams)`` from a token with the be permission
  (any token on a 2.1-pre key; on a 2.1 key's 0x40 also a getPinToken token, as for the
  credential-management preview: ``Profile.preview_accepts_pin_token``). So a PIN comes
  first, as on real bio keys (PIN_NOT_SET otherwise).
- Enrolling takes ``BioSensor.samples`` good samples. Each capture asks the user verifier
  (builtin_uv.py): approved is a good sample (lastEnrollSampleStatus FP_GOOD, one fewer
  remaining), denied a poor one (FP_POOR_QUALITY, nothing counted), a timeout
  NO_USER_ACTIVITY; a cancelled request ends the enrollment (KEEPALIVE_CANCEL). The
  enrollment in progress lives in ``auth.pending`` and only enrollCaptureNextSample
  continues it: any other command ends it, as every multi-call state of this device.
  timeoutMilliseconds is accepted and type-checked; the presence policy's own timeout
  applies.
- Errors where §6.7 leaves the code to the implementation follow Chromium's virtual
  authenticator: no enrollments to enumerate, or an unknown templateId, is
  CTAP2_ERR_INVALID_OPTION (python-fido2 reads the former as "none"); a full sensor is
  CTAP2_ERR_FP_DATABASE_FULL; enrollCaptureNextSample without an enrollment in progress is
  NOT_ALLOWED (as getNextAssertion without a getAssertion); an unsupported modality is
  INVALID_PARAMETER; a friendly name longer than maxTemplateFriendlyName bytes is
  INVALID_PARAMETER.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, unique
from typing import TYPE_CHECKING, Any

from . import cbor
from .builtin_uv import BuiltinUv, Template
from .ctap import Cmd, CtapError, Status
from .environment import Interaction, Verdict
from .params import get, opt
from .pin import Permission
from .profiles import Profile

if TYPE_CHECKING:
    from .device import Authenticator, Handler

MODALITY_FINGERPRINT = 0x01
TEMPLATE_ID_LEN = 2


@unique
class BioCmd(IntEnum):
    ENROLL_BEGIN = 0x01
    ENROLL_CAPTURE_NEXT_SAMPLE = 0x02
    CANCEL_CURRENT_ENROLLMENT = 0x03
    ENUMERATE_ENROLLMENTS = 0x04
    SET_FRIENDLY_NAME = 0x05
    REMOVE_ENROLLMENT = 0x06
    GET_FINGERPRINT_SENSOR_INFO = 0x07


@unique
class BioKey(IntEnum):
    MODALITY = 0x01
    SUB_COMMAND = 0x02
    SUB_COMMAND_PARAMS = 0x03
    PIN_UV_AUTH_PROTOCOL = 0x04
    PIN_UV_AUTH_PARAM = 0x05
    GET_MODALITY = 0x06


@unique
class BioParamKey(IntEnum):
    TEMPLATE_ID = 0x01
    TEMPLATE_FRIENDLY_NAME = 0x02
    TIMEOUT_MILLISECONDS = 0x03


@unique
class BioResponseKey(IntEnum):
    MODALITY = 0x01
    FINGERPRINT_KIND = 0x02
    MAX_CAPTURE_SAMPLES_REQUIRED_FOR_ENROLL = 0x03
    TEMPLATE_ID = 0x04
    LAST_ENROLL_SAMPLE_STATUS = 0x05
    REMAINING_SAMPLES = 0x06
    TEMPLATE_INFOS = 0x07
    MAX_TEMPLATE_FRIENDLY_NAME = 0x08


@unique
class TemplateInfoKey(IntEnum):
    TEMPLATE_ID = 0x01
    TEMPLATE_FRIENDLY_NAME = 0x02


@unique
class SampleStatus(IntEnum):
    """lastEnrollSampleStatus values (CTAP 2.1 §6.7.4 ff., CTAP2_ENROLL_FEEDBACK_*)."""

    FP_GOOD = 0x00
    FP_TOO_HIGH = 0x01
    FP_TOO_LOW = 0x02
    FP_TOO_LEFT = 0x03
    FP_TOO_RIGHT = 0x04
    FP_TOO_FAST = 0x05
    FP_TOO_SLOW = 0x06
    FP_POOR_QUALITY = 0x07
    FP_TOO_SKEWED = 0x08
    FP_TOO_SHORT = 0x09
    FP_MERGE_FAILURE = 0x0A
    FP_EXISTS = 0x0B
    FP_DATABASE_FULL = 0x0C
    NO_USER_ACTIVITY = 0x0D
    NO_UP_TRANSITION = 0x0E


# What one capture gives, per verdict of the user verifier (see the module docstring).
_SAMPLE = {
    Verdict.APPROVED: SampleStatus.FP_GOOD,
    Verdict.DENIED: SampleStatus.FP_POOR_QUALITY,
    Verdict.TIMEOUT: SampleStatus.NO_USER_ACTIVITY,
}

_AUTHENTICATED = frozenset(
    {
        BioCmd.ENROLL_BEGIN,
        BioCmd.ENROLL_CAPTURE_NEXT_SAMPLE,
        BioCmd.ENUMERATE_ENROLLMENTS,
        BioCmd.SET_FRIENDLY_NAME,
        BioCmd.REMOVE_ENROLLMENT,
    }
)


@dataclass
class PendingEnrollment:
    """An enrollment in progress (between enrollBegin and its last sample)."""

    template_id: bytes
    remaining: int


def handlers(profile: Profile) -> dict[int, Handler]:
    if profile.bio is None:
        return {}
    found: dict[int, Handler] = {Cmd.BIO_ENROLLMENT_PRE: bio_enrollment_preview}
    if profile.is_2_1:
        found[Cmd.BIO_ENROLLMENT] = bio_enrollment
    return found


def bio_enrollment(auth: Authenticator, params: dict, interaction: Interaction) -> dict | None:
    """authenticatorBioEnrollment (0x09)."""
    return _handle(auth, params, interaction, accept_pin_token=False)


def bio_enrollment_preview(
    auth: Authenticator, params: dict, interaction: Interaction
) -> dict | None:
    """The FIDO_2_1_PRE prototype (0x40): the same subcommands; a preview-only platform gets
    its token with getPinToken, which has no be permission (see credman's preview)."""
    return _handle(
        auth, params, interaction, accept_pin_token=auth.profile.preview_accepts_pin_token
    )


def _handle(
    auth: Authenticator, params: dict, interaction: Interaction, *, accept_pin_token: bool
) -> dict | None:
    K = BioKey
    # Take the enrollment in progress; only enrollCaptureNextSample puts it back.
    pending, auth.pending = auth.pending, None
    enrollment = pending if isinstance(pending, PendingEnrollment) else None
    modality = opt(params, K.MODALITY, int)
    sub = opt(params, K.SUB_COMMAND, int)
    sub_params = opt(params, K.SUB_COMMAND_PARAMS, dict)
    protocol = opt(params, K.PIN_UV_AUTH_PROTOCOL, int)
    auth_param = opt(params, K.PIN_UV_AUTH_PARAM, bytes)
    sensor = BuiltinUv(auth)._sensor()
    R = BioResponseKey
    if opt(params, K.GET_MODALITY, bool):
        return {R.MODALITY: MODALITY_FINGERPRINT}  # §6.7.2
    if sub is None:
        raise CtapError(Status.MISSING_PARAMETER, "subCommand (or getModality) missing")
    if modality is None:
        raise CtapError(Status.MISSING_PARAMETER, "modality missing")
    if modality != MODALITY_FINGERPRINT:
        raise CtapError(
            Status.INVALID_PARAMETER, f"modality {modality} unsupported (fingerprint is 1)"
        )
    if sub not in BioCmd._value2member_map_:
        raise CtapError(Status.INVALID_SUBCOMMAND, f"bio enrollment subcommand 0x{sub:02x}")
    timeout = opt(sub_params or {}, BioParamKey.TIMEOUT_MILLISECONDS, int)
    if timeout is not None and timeout < 0:
        raise CtapError(Status.INVALID_PARAMETER, "timeoutMilliseconds must not be negative")

    if sub == BioCmd.GET_FINGERPRINT_SENSOR_INFO:  # §6.7.3
        return {
            R.MODALITY: MODALITY_FINGERPRINT,
            R.FINGERPRINT_KIND: sensor.fingerprint_kind,
            R.MAX_CAPTURE_SAMPLES_REQUIRED_FOR_ENROLL: sensor.samples,
            R.MAX_TEMPLATE_FRIENDLY_NAME: sensor.max_template_friendly_name,
        }
    if sub == BioCmd.CANCEL_CURRENT_ENROLLMENT:
        return None  # the enrollment was taken out of auth.pending above

    if sub in _AUTHENTICATED:
        message = bytes([modality, sub])
        if sub_params is not None:
            # Our strict decoder accepts only canonical CBOR: re-encoding gives the MACed bytes.
            message += cbor.encode(sub_params)
        auth.pin_uv.authorize(
            protocol, auth_param, message, Permission.BE, accept_pin_token=accept_pin_token
        )
    builtin = BuiltinUv(auth)
    templates = builtin.templates()
    sub_params = sub_params or {}

    if sub == BioCmd.ENROLL_BEGIN:
        if len(templates) >= sensor.max_templates:
            raise CtapError(
                Status.FP_DATABASE_FULL,
                f"all {sensor.max_templates} fingerprint slots are used; remove one first",
            )
        taken = {t.template_id for t in templates}
        template_id = auth.random(TEMPLATE_ID_LEN)
        while template_id in taken:
            template_id = auth.random(TEMPLATE_ID_LEN)
        enrollment = PendingEnrollment(template_id, sensor.samples)
        response = _capture(auth, builtin, enrollment, interaction)
        return {R.TEMPLATE_ID: template_id, **response}
    if sub == BioCmd.ENROLL_CAPTURE_NEXT_SAMPLE:
        template_id = get(sub_params, BioParamKey.TEMPLATE_ID, bytes)
        if enrollment is None:
            raise CtapError(Status.NOT_ALLOWED, "no enrollment in progress: send enrollBegin")
        if template_id != enrollment.template_id:
            raise CtapError(Status.INVALID_OPTION, "templateId is not the one being enrolled")
        return _capture(auth, builtin, enrollment, interaction)
    if sub == BioCmd.ENUMERATE_ENROLLMENTS:
        if not templates:
            raise CtapError(Status.INVALID_OPTION, "no finger is enrolled")
        T = TemplateInfoKey
        return {
            R.TEMPLATE_INFOS: [
                {T.TEMPLATE_ID: t.template_id, T.TEMPLATE_FRIENDLY_NAME: t.name} for t in templates
            ]
        }
    template_id = get(sub_params, BioParamKey.TEMPLATE_ID, bytes)
    if sub == BioCmd.SET_FRIENDLY_NAME:
        name = get(sub_params, BioParamKey.TEMPLATE_FRIENDLY_NAME, str)
        if len(name.encode("utf-8")) > sensor.max_template_friendly_name:
            raise CtapError(
                Status.INVALID_PARAMETER,
                f"templateFriendlyName is longer than {sensor.max_template_friendly_name} bytes",
            )
        _find(templates, template_id)
        builtin.save_templates(
            [
                Template(t.template_id, name) if t.template_id == template_id else t
                for t in templates
            ]
        )
        return None
    # removeEnrollment
    _find(templates, template_id)
    builtin.save_templates([t for t in templates if t.template_id != template_id])
    return None


def _find(templates: list[Template], template_id: bytes) -> Template:
    for template in templates:
        if template.template_id == template_id:
            return template
    raise CtapError(Status.INVALID_OPTION, "no enrolled finger has this templateId")


def _capture(
    auth: Authenticator, builtin: BuiltinUv, enrollment: PendingEnrollment, interaction: Interaction
) -> dict[int, Any]:
    """One sample: the verifier's verdict becomes lastEnrollSampleStatus and remainingSamples;
    the last good one stores the template."""
    sensor = builtin._sensor()
    number = sensor.samples - enrollment.remaining + 1
    verdict = builtin.ask(f"enroll a fingerprint (sample {number} of {sensor.samples})", None,
                          interaction)  # fmt: skip
    if verdict is Verdict.CANCELLED:
        raise CtapError(Status.KEEPALIVE_CANCEL, "the platform cancelled the enrollment")
    status = _SAMPLE[verdict]
    if status == SampleStatus.FP_GOOD:
        enrollment.remaining -= 1
    if enrollment.remaining == 0:
        builtin.save_templates([*builtin.templates(), Template(enrollment.template_id)])
    else:
        auth.pending = enrollment
    R = BioResponseKey
    return {R.LAST_ENROLL_SAMPLE_STATUS: status, R.REMAINING_SAMPLES: enrollment.remaining}
