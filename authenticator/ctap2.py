"""authenticatorMakeCredential, GetAssertion, GetNextAssertion, GetInfo, Selection, Reset.

CTAP 2.1 §6.1-§6.6. Handlers take the decoded request map and the ``Authenticator`` (the
environment: profile, store, key wrapper, clock, presence) and return the response map.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import backup, cbor, cose, ctap1, events, persistent_token, pin_complexity
from . import extensions as ext
from .attestation import SUPPORTED_FORMATS
from .ctap import (
    FLAG_AT,
    FLAG_ED,
    FLAG_UP,
    FLAG_UV,
    MAX_MSG_SIZE,
    CtapError,
    GetAssertionKey,
    GetAssertionResponseKey,
    InfoKey,
    MakeCredentialKey,
    MakeCredentialResponseKey,
    Status,
)
from .environment import Interaction
from .keywrap import MAX_ID_LEN, CredentialSecrets
from .params import (
    descriptor_list,
    get,
    get_client_data_hash,
    get_icon,
    get_name,
    get_rp_id,
    get_user_handle,
    opt,
    options_map,
)
from .profiles import CTAP2_0, CTAP2_1, CTAP2_2
from .store import ResidentCredential

if TYPE_CHECKING:
    from .device import Authenticator

# getNextAssertion must follow within 30 s (CTAP 2.1 §6.3).
NEXT_ASSERTION_TIMEOUT = 30.0

CRED_PROTECT_NAMES = {
    1: "userVerificationOptional",
    2: "userVerificationOptionalWithCredentialIDList",
    3: "userVerificationRequired",
}


def rp_id_hash(rp_id: str) -> bytes:
    return hashlib.sha256(rp_id.encode("utf-8")).digest()


def auth_data(
    rp_hash: bytes,
    flags: int,
    counter: int,
    attested: bytes = b"",
    extensions: dict[str, Any] | None = None,
) -> bytes:
    if attested:
        flags |= FLAG_AT
    ext = b""
    if extensions:
        flags |= FLAG_ED
        ext = cbor.encode(extensions)
    return rp_hash + bytes([flags]) + struct.pack(">I", counter) + attested + ext


@dataclass
class Candidate:
    """A credential located for a getAssertion: its ID, unwrapped secrets, resident record."""

    credential_id: bytes
    secrets: CredentialSecrets
    resident: ResidentCredential | None = None


@dataclass
class PendingAssertions:
    """State between getAssertion and getNextAssertion; cleared by any other command.

    A cursor, not a list: the next credential is the RP's most recent one older than
    ``after`` (its insertion order) that the credProtect filter lets through, read and
    unwrapped only when getNextAssertion asks for it."""

    rp_hash: bytes
    client_data_hash: bytes
    flags: int
    uv: bool
    after: int
    left: int
    expires: float
    extensions: ext.GetAssertionExtensions | None = None


# -- makeCredential ------------------------------------------------------------------------


def make_credential(auth: Authenticator, params: dict, interaction: Interaction) -> dict:
    K = MakeCredentialKey
    # Field sizes (params.py "Field sizes"): clientDataHash exactly 32 bytes, rp.id 1-253
    # bytes, user.id 1-64 bytes, else INVALID_LENGTH (CTAP 2.1 §8.2); names are truncated to
    # 64 bytes (CTAP 2.1 §6.1, WebAuthn §6.4.1), so no oversized value reaches the store.
    client_data_hash = get_client_data_hash(params, K.CLIENT_DATA_HASH)
    rp = get(params, K.RP, dict)
    user = get(params, K.USER, dict)
    cred_params = get(params, K.PUB_KEY_CRED_PARAMS, list)
    exclude_ids = descriptor_list(params, K.EXCLUDE_LIST)
    extensions = opt(params, K.EXTENSIONS, dict) or {}
    options = options_map(params, K.OPTIONS)
    pin_uv_auth_param = opt(params, K.PIN_UV_AUTH_PARAM, bytes)
    pin_uv_auth_protocol = opt(params, K.PIN_UV_AUTH_PROTOCOL, int)
    enterprise_request = opt(params, K.ENTERPRISE_ATTESTATION, int)
    formats_preference = opt(params, K.ATTESTATION_FORMATS_PREFERENCE, list)

    rp_id = get_rp_id(rp, "id")
    rp_name = get_name(rp, "name")
    user_id = get_user_handle(user)
    user_name = get_name(user, "name")
    user_display_name = get_name(user, "displayName")
    user_icon = None
    if auth.profile.icons:
        # Text members in CTAP 2.0 §5.1 (rp, user); user.icon is stored with the user entity
        # (step 10). rp.icon is only checked: no response carries it. Profile.icons says why
        # 2.1 profiles ignore both.
        get_icon(rp)
        user_icon = get_icon(user)

    # Step 3: choose the first supported algorithm, in the platform's order of preference.
    alg = None
    for entry in cred_params:
        if not isinstance(entry, dict):
            raise CtapError(Status.CBOR_UNEXPECTED_TYPE, "pubKeyCredParams entry must be a map")
        entry_alg = get(entry, "alg", int)
        entry_type = get(entry, "type", str)
        if alg is None and entry_type == "public-key" and entry_alg in auth.algorithms:
            alg = entry_alg
    if alg is None:
        raise CtapError(
            Status.UNSUPPORTED_ALGORITHM,
            f"none of the requested algorithms {[e.get('alg') for e in cred_params]} "
            f"is offered by this key ({list(auth.algorithms)})",
        )
    if auth.profile.option_rules == CTAP2_0 and "up" in options:
        # CTAP 2.0 §5.1 gives makeCredential only the options rk and uv: "up" is known but
        # not valid for this command, so INVALID_OPTION whatever its value (options step,
        # before the pinAuth checks). Profile.option_rules has the 2.1 rules.
        raise CtapError(Status.INVALID_OPTION, "up is not a makeCredential option in CTAP 2.0")
    # Step 8: validate enterpriseAttestation; decide now whether this one gets it (step 17).
    enterprise = auth.attestation.check_enterprise_request(enterprise_request, rp_id)

    uv = auth.pin_uv.check_request(
        "mc",
        rp_id,
        client_data_hash,
        pin_uv_auth_param,
        pin_uv_auth_protocol,
        options,
        interaction,
        rk=options.get("rk", False),
    )

    rk = options.get("rk", False)
    if options.get("up") is False:
        # makeCredential always needs presence (CTAP 2.1 §6.1.2 step 5.2).
        raise CtapError(Status.INVALID_OPTION, "up=false is not allowed in makeCredential")

    rp_hash = rp_id_hash(rp_id)

    # Step 11: excludeList. Level-3 credProtect credentials are not disclosed without UV.
    for cred_id in exclude_ids:
        found = auth.locate(cred_id, rp_hash)
        if found is None:
            continue
        if found.secrets.cred_protect == 3 and not uv:
            continue
        auth.confirm_presence(
            "makeCredential (excluded credential)", rp_id, interaction, allow_denied=True
        )
        raise CtapError(
            Status.CREDENTIAL_EXCLUDED,
            f"a credential in excludeList already exists on this key for {rp_id}",
        )

    # Step 13: extensions (extensions.py), validated before the touch.
    requested = ext.parse_make_credential(auth, extensions, rk=rk)
    cred_protect = requested.cred_protect

    # Through pin_uv: on 2.1 a pinUvAuthToken used for presence is consumed (§6.1.2 s. 14).
    auth.pin_uv.collect_presence("makeCredential", rp_id, interaction, user_name=user_name)

    private_key, key = cose.generate_key(alg)
    secrets = CredentialSecrets(
        alg=alg,
        private_key=private_key,
        discoverable=rk,
        cred_protect=cred_protect,
        cred_random=auth.random(32),
        cred_blob=requested.stored_cred_blob,
        hmac_secret=requested.hmac_secret,
        third_party_payment=requested.third_party_payment,
    )
    credential_id = auth.wrapper.wrap(secrets, rp_hash)
    large_blob_key = auth.random(ext.LARGE_BLOB_KEY_LEN) if requested.large_blob_key else None
    public_key = cbor.encode(cose.public_cose(alg, key))

    if rk:
        capacity = auth.profile.rk_capacity
        stored = auth.store.put_resident(
            ResidentCredential(
                credential_id=credential_id,
                rp_id=rp_id,
                rp_id_hash=rp_hash,
                user_id=user_id,
                rp_name=rp_name,
                user_name=user_name,
                user_display_name=user_display_name,
                user_icon=user_icon,
                cred_protect=cred_protect,
                large_blob_key=large_blob_key,
                # Kept for credential management, which then lists without unwrapping.
                public_key=public_key,
                third_party_payment=secrets.third_party_payment,
            ),
            capacity,
        )
        if not stored:
            raise CtapError(
                Status.KEY_STORE_FULL,
                f"all {capacity} discoverable-credential slots are in use",
            )

    flags = FLAG_UP | (FLAG_UV if uv else 0)
    attested = (
        auth.profile.aaguid + struct.pack(">H", len(credential_id)) + credential_id + public_key
    )
    ext_out = requested.outputs(auth, secrets, uv, rp_id)
    # BE/BS (backup.py): the profile's default for a new credential, off on every preset.
    flags |= backup.flags(auth, credential_id)
    data = auth_data(rp_hash, flags, 0, attested, ext_out or None)
    # attestationFormatsPreference (0x0B) is a CTAP 2.2 member (§6.1); earlier profiles ignore
    # it as an unknown member.
    fmt = auth.attestation.choose_format(
        formats_preference if auth.profile.at_least(CTAP2_2) else None
    )
    response = auth.attestation.statement(
        data, client_data_hash, alg, key, fmt=fmt, enterprise=enterprise
    )
    if large_blob_key is not None:
        response[MakeCredentialResponseKey.LARGE_BLOB_KEY] = large_blob_key
    events.credential_added(auth.events, rp_id, credential_id, data, resident=rk)
    return response


# -- getAssertion ----------------------------------------------------------------------------


def _user_entity(cred: ResidentCredential, uv: bool) -> dict[str, Any]:
    # Identifiable user information only after user verification (CTAP 2.1 §6.2.2 step 12).
    entity: dict[str, Any] = {"id": cred.user_id}
    if uv:
        if cred.user_name is not None:
            entity["name"] = cred.user_name
        if cred.user_display_name is not None:
            entity["displayName"] = cred.user_display_name
        # Stored only on profiles that keep it; identifiable like the names (CTAP 2.0 §5.2
        # user member: "name, DisplayName, icon" only after user verification).
        if cred.user_icon is not None:
            entity["icon"] = cred.user_icon
    return entity


def _assertion(
    auth: Authenticator,
    cand: Candidate,
    rp_hash: bytes,
    client_data_hash: bytes,
    flags: int,
    uv: bool,
    number_of_credentials: int | None,
    extensions: ext.GetAssertionExtensions | None = None,
) -> dict:
    ext_out, large_blob_key = ext.assertion_outputs(extensions, cand, uv)
    counter = auth.next_counter(cand.credential_id)
    flags |= backup.flags(auth, cand.credential_id)  # BE/BS as set for this credential
    data = auth_data(rp_hash, flags, counter, extensions=ext_out or None)
    signature = cose.sign(cand.secrets.alg, cand.secrets.private_key, data + client_data_hash)
    R = GetAssertionResponseKey
    response: dict[Any, Any] = {
        R.CREDENTIAL: {"id": cand.credential_id, "type": "public-key"},
        R.AUTH_DATA: data,
        R.SIGNATURE: signature,
    }
    if cand.resident is not None:
        response[R.USER] = _user_entity(cand.resident, uv)
    if number_of_credentials is not None:
        response[R.NUMBER_OF_CREDENTIALS] = number_of_credentials
    if large_blob_key is not None:
        response[R.LARGE_BLOB_KEY] = large_blob_key
    return response


def get_assertion(auth: Authenticator, params: dict, interaction: Interaction) -> dict:
    K = GetAssertionKey
    # The same sizes as makeCredential (params.py "Field sizes"; CTAP 2.1 §6.2, §8.2).
    rp_id = get_rp_id(params, K.RP_ID)
    client_data_hash = get_client_data_hash(params, K.CLIENT_DATA_HASH)
    allow_ids = descriptor_list(params, K.ALLOW_LIST)
    extensions = opt(params, K.EXTENSIONS, dict) or {}
    options = options_map(params, K.OPTIONS)
    pin_uv_auth_param = opt(params, K.PIN_UV_AUTH_PARAM, bytes)
    pin_uv_auth_protocol = opt(params, K.PIN_UV_AUTH_PROTOCOL, int)

    if "rk" in options:
        # CTAP 2.1 §6.2.2 step 5: UNSUPPORTED_OPTION. CTAP 2.0 §5.2 gives getAssertion only up
        # and uv: "rk" is known but not valid for this command, INVALID_OPTION.
        if auth.profile.option_rules == CTAP2_0:
            raise CtapError(Status.INVALID_OPTION, "rk is not a getAssertion option")
        raise CtapError(Status.UNSUPPORTED_OPTION, "rk is not an option of getAssertion")

    uv = auth.pin_uv.check_request(
        "ga",
        rp_id,
        client_data_hash,
        pin_uv_auth_param,
        pin_uv_auth_protocol,
        options,
        interaction,
    )
    up = options.get("up", True)
    rp_hash = rp_id_hash(rp_id)

    candidates: list[Candidate] = []
    if allow_ids:
        # Pick the first ID this device can unwrap; IDs of other keys are simply skipped.
        for cred_id in allow_ids:
            found = auth.locate(cred_id, rp_hash)
            if found is None:
                continue
            if found.secrets.cred_protect == 3 and not uv:
                continue
            candidates = [found]
            break
        number = None
    else:
        # Discoverable credentials, most recent first (CTAP 2.1 §6.2.2 step 7: the first
        # one is "the most recently created"). Only the one answered now is unwrapped; the
        # count comes from the stored credProtect column (levels 2 and 3 are not
        # discoverable without UV, §12.1), which is the level inside the ID.
        total, unprotected = auth.store.rp_counts(rp_hash)
        first_found = _next_discoverable(auth, rp_hash, None, uv)
        candidates = [first_found] if first_found is not None else []
        number = (total if uv else unprotected) if candidates else None

    if not candidates:
        if allow_ids:
            reason = (
                f"none of the {len(allow_ids)} credential IDs in allowList was made by this "
                f"key for {rp_id} (or it was reset since)"
            )
        else:
            reason = (
                f"empty allowList and no discoverable credential for {rp_id}: this key has "
                "only non-resident credentials for it, if any; send their IDs in "
                "allowCredentials"
            )
        raise CtapError(Status.NO_CREDENTIALS, reason)

    # Step 8: extensions (extensions.py), validated before the touch.
    requested = ext.parse_get_assertion(auth, extensions)

    if up:
        auth.pin_uv.collect_presence("getAssertion", rp_id, interaction)
    flags = (FLAG_UP if up else 0) | (FLAG_UV if uv else 0)

    first = candidates[0]
    if number is not None and number > 1 and first.resident is not None:
        auth.pending = PendingAssertions(
            rp_hash=rp_hash,
            client_data_hash=client_data_hash,
            flags=flags,
            uv=uv,
            after=first.resident.created,
            left=number - 1,
            expires=auth.clock.monotonic() + NEXT_ASSERTION_TIMEOUT,
            extensions=requested,
        )
    response = _assertion(auth, first, rp_hash, client_data_hash, flags, uv, number, requested)
    data = response[GetAssertionResponseKey.AUTH_DATA]
    events.credential_asserted(auth.events, rp_id, first.credential_id, data)
    return response


def _next_discoverable(
    auth: Authenticator, rp_hash: bytes, after: int | None, uv: bool
) -> Candidate | None:
    """The RP's most recent discoverable credential older than ``after`` that this request
    may use, unwrapped; None when there is none left."""
    while True:
        resident = auth.store.next_resident(rp_hash, after, protected=uv)
        if resident is None:
            return None
        after = resident.created
        secrets = auth.secrets_of(resident.credential_id, rp_hash)
        # A row whose ID does not open (or whose level disagrees with the column) is skipped,
        # as before; a consistent store never has one.
        if secrets is None or not secrets.discoverable or (secrets.cred_protect >= 2 and not uv):
            continue
        return Candidate(resident.credential_id, secrets, resident)


def get_next_assertion(auth: Authenticator, params: dict, interaction: Interaction) -> dict:
    pending = auth.pending
    if not isinstance(pending, PendingAssertions) or pending.left <= 0:
        auth.pending = None
        raise CtapError(Status.NOT_ALLOWED, "no getAssertion with more credentials pending")
    if auth.clock.monotonic() > pending.expires:
        auth.pending = None
        raise CtapError(Status.NOT_ALLOWED, "getNextAssertion came more than 30 s later")
    cand = _next_discoverable(auth, pending.rp_hash, pending.after, pending.uv)
    if cand is None or cand.resident is None:  # only if rows went behind the cursor's back
        auth.pending = None
        raise CtapError(Status.NOT_ALLOWED, "no more credentials for this getAssertion")
    pending.left -= 1
    pending.after = cand.resident.created
    if pending.left <= 0:
        auth.pending = None
    response = _assertion(
        auth,
        cand,
        pending.rp_hash,
        pending.client_data_hash,
        pending.flags,
        pending.uv,
        None,
        pending.extensions,
    )
    # Only discoverable credentials come one by one, so the record names the RP.
    rp_id = cand.resident.rp_id if cand.resident is not None else None
    data = response[GetAssertionResponseKey.AUTH_DATA]
    events.credential_asserted(auth.events, rp_id, cand.credential_id, data)
    return response


# -- getInfo, selection, reset ----------------------------------------------------------------


def get_info(auth: Authenticator) -> dict:
    profile = auth.profile
    K = InfoKey
    options: dict[str, bool] = {"rk": True, "up": True, "plat": False}
    options.update(auth.pin_uv.info_options())
    options.update(auth.extra_info_options())
    options.update(persistent_token.info_options(auth))
    info: dict[Any, Any] = {
        # alwaysUv switches U2F off (it cannot verify the user): stop announcing it.
        K.VERSIONS: [v for v in profile.versions if v != "U2F_V2" or ctap1.enabled(auth)],
        K.AAGUID: profile.aaguid,
        K.OPTIONS: options,
        K.MAX_MSG_SIZE: MAX_MSG_SIZE,
    }
    if auth.extensions:
        info[K.EXTENSIONS] = list(auth.extensions)
    protocols = auth.pin_uv.protocols()
    if protocols:
        info[K.PIN_UV_AUTH_PROTOCOLS] = list(protocols)
    if profile.ctap != CTAP2_0:
        # Members 0x07-0x0A appeared with FIDO_2_1_PRE.
        info[K.MAX_CREDENTIAL_COUNT_IN_LIST] = profile.max_cred_count_in_list
        # An imported credential's ID (imported.py) may be longer than the key's own: say
        # so, or platforms drop it from allowList (python-fido2 filters by this length).
        info[K.MAX_CREDENTIAL_ID_LENGTH] = max(MAX_ID_LEN, auth.store.longest_imported_id())
        info[K.TRANSPORTS] = ["usb"]
        info[K.ALGORITHMS] = [{"alg": a, "type": "public-key"} for a in auth.algorithms]
    if profile.at_least(CTAP2_1):
        info[K.FIRMWARE_VERSION] = profile.firmware_version
        remaining = auth.remaining_discoverable()
        if remaining is not None:
            info[K.REMAINING_DISCOVERABLE_CREDENTIALS] = remaining
    if profile.at_least(CTAP2_2):
        # CTAP 2.2 §6.4. No uvCountSinceLastPinEntry (0x17): there is no built-in UV.
        info[K.ATTESTATION_FORMATS] = list(SUPPORTED_FORMATS)
        info[K.LONG_TOUCH_FOR_RESET] = False  # reset takes an ordinary touch
        info[K.TRANSPORTS_FOR_RESET] = ["usb"]  # the one transport this key presents
        info.update(persistent_token.info_members(auth))  # encIdentifier
        info.update(pin_complexity.info_members(auth))  # pinComplexityPolicy, maxPINLength
    info.update(auth.pin_uv.info_members())
    info.update(ext.info_members(auth))
    return info


def selection(auth: Authenticator, params: dict, interaction: Interaction) -> dict | None:
    auth.confirm_presence("selection", None, interaction)
    return None


def reset(auth: Authenticator, params: dict, interaction: Interaction) -> dict | None:
    # CTAP 2.1 §6.6: only within the window after power-up, and only with presence.
    elapsed = auth.clock.monotonic() - auth.powered_up_at
    if elapsed > auth.profile.reset_window:
        raise CtapError(
            Status.NOT_ALLOWED,
            f"reset is only allowed within {auth.profile.reset_window:g} s of plugging the key "
            f"in ({elapsed:.0f} s have passed); replug it and retry",
        )
    auth.confirm_presence("reset", None, interaction)
    auth.factory_reset()
    return None
