"""Enroll a finger on an in-process key as a platform would (CTAP 2.1 §6.7).

The pytest plugin's ``enrolled=True`` and `softkey init --enrolled` use this: python-fido2's
``ClientPin`` gets a pinUvAuthToken with the be permission from the PIN, then its
``FPBioEnrollment`` runs enrollBegin / enrollCaptureNextSample until no sample remains and
names the template, all through the key's own ``handle_cbor``. The operator's finger gives
good samples: the key's user verifier is set to approve for the enrollment only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from softkey.authenticator import Authenticator

DEFAULT_FINGER_NAME = "finger 1"
# The PIN `enrolled=True` (pytest plugin) and `softkey init --enrolled` set when given none: a
# bio key needs a PIN before a finger can be enrolled (CTAP 2.1 §6.7: a be token).
DEFAULT_PIN = "123456"


def enroll_finger(auth: Authenticator, pin: str, name: str = DEFAULT_FINGER_NAME) -> bytes:
    """Enroll one finger on ``auth`` (a bio profile with ``pin`` set); its template ID.

    Raises python-fido2's ``CtapError`` with the key's answer (a wrong PIN, a full sensor...).
    """
    from fido2.ctap2 import ClientPin, Ctap2
    from fido2.ctap2.bio import FPBioEnrollment

    from softkey.authenticator import Verdict
    from softkey.authenticator.builtin_uv import ScriptedVerifier
    from softkey.transports.inprocess import VirtualCtapDevice

    if auth.profile.bio is None:
        raise ValueError(
            f"the {auth.profile.name} profile has no fingerprint sensor; pick one that has "
            "(yubikey-bio)"
        )
    limit = auth.profile.bio.max_template_friendly_name
    if len(name.encode("utf-8")) > limit:
        raise ValueError(f"a finger's name has at most {limit} bytes; {name!r} is longer")
    saved = auth.verifier
    auth.verifier = ScriptedVerifier(default=Verdict.APPROVED)
    try:
        ctap = Ctap2(VirtualCtapDevice(auth))
        client_pin = ClientPin(ctap)
        token = client_pin.get_pin_token(pin, ClientPin.PERMISSION.BIO_ENROLL)
        bio = FPBioEnrollment(ctap, client_pin.protocol, token)
        context = bio.enroll()
        template_id = None
        while template_id is None:
            template_id = context.capture()
        if name:
            bio.set_name(template_id, name)
        return bytes(template_id)
    finally:
        auth.verifier = saved
