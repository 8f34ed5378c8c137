"""``Authenticator``: the one object transports talk to, and the admin API the CLI uses.

``handle_cbor(request) -> response`` is bytes in, bytes out (CTAP 2.1 §6: a command byte and
a CBOR map in; a status byte and a CBOR map out). Every failure becomes a status byte; no
exception escapes. Multi-call state (getNextAssertion, credential-management cursors) lives
in ``pending`` and is cleared by any command that does not continue it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import (
    bio_enrollment,
    cbor,
    config,
    cose,
    counters,
    credman,
    ctap1,
    ctap2,
    extensions,
    imported,
    large_blobs,
)
from .attestation import DEFAULT_MODE as DEFAULT_ATTESTATION
from .attestation import Attestation
from .builtin_uv import ScriptedVerifier, UserVerifier
from .ctap import MAX_MSG_SIZE, Cmd, CtapError, Status
from .environment import (
    AutoPresence,
    Clock,
    Interaction,
    NoInteraction,
    Presence,
    PresenceRequest,
    RandomSource,
    SystemClock,
    Verdict,
    system_random,
)
from .events import EventBus
from .faults import Faults, Hold
from .keywrap import MASTER_KEY_LEN, CredentialSecrets, KeyWrapper
from .params import request_map
from .pin import PinUv, client_pin
from .profiles import DEFAULT_PROFILE, Profile, get_profile
from .store import ResidentCredential, StateError, Store

log = logging.getLogger("softkey.authenticator")

Handler = Callable[["Authenticator", dict, Interaction], "dict | None"]


@dataclass(frozen=True)
class Outcome:
    """What one request did, for decoded traces (never contains secrets)."""

    command: int
    status: Status
    reason: str
    # Injected faults that changed this answer (labels, faults.py) and what the transport
    # must do with it (a delay, or no answer at all).
    faults: tuple[str, ...] = ()
    hold: Hold | None = None


class Authenticator:
    """A virtual FIDO2 security key.

    ``profile``: a profile/preset name or ``Profile``; None uses the one the state was created
    with (or ctap2.1 for new state). ``state``: None for in-memory, else a SQLite file path.
    """

    def __init__(
        self,
        profile: str | Profile | None = None,
        state: str | os.PathLike[str] | None = None,
        *,
        presence: Presence | None = None,
        clock: Clock | None = None,
        random: RandomSource = system_random,
        attestation: str = DEFAULT_ATTESTATION,
        counter_mode: str | None = None,
        verifier: UserVerifier | None = None,
    ) -> None:
        # Runtime only, never stored: what the key did (events.py) and what it is told to get
        # wrong (faults.py).
        self.events = EventBus()
        self.faults = Faults()
        self.store = Store(state)
        self.clock: Clock = clock or SystemClock()
        self.presence: Presence = presence or AutoPresence()
        # Fingerprint checks (profiles with a sensor, builtin_uv.py); by default they are
        # asked like a touch, of ``presence``.
        self.verifier: UserVerifier = verifier or ScriptedVerifier()
        self.random = random
        self.profile = self._resolve_profile(profile)
        master = self.store.get_meta("master_key")
        if master is None:
            master = self._new_master_key()
        self.wrapper = KeyWrapper(master, random)
        # "batch" (default, like a real key) or "self"; see attestation.py.
        self.attestation = Attestation(self.store, self.profile, attestation)
        self.counter_mode = counters.resolve_mode(self.store, counter_mode)
        self.pin_uv = PinUv(self)
        self.pending: Any = None
        self.last_outcome: Outcome | None = None
        self.powered_up_at = self.clock.monotonic()
        self._handlers: dict[int, Handler] = {
            Cmd.MAKE_CREDENTIAL: ctap2.make_credential,
            Cmd.GET_ASSERTION: ctap2.get_assertion,
            Cmd.GET_NEXT_ASSERTION: ctap2.get_next_assertion,
            Cmd.RESET: ctap2.reset,
        }
        if self.profile.ctap != "2.0":
            self._handlers[Cmd.SELECTION] = ctap2.selection
        self._handlers[Cmd.CLIENT_PIN] = client_pin
        credman_handlers = credman.handlers(self.profile)
        self._handlers.update(credman_handlers)
        self._handlers.update(config.handlers(self.profile))
        large_blob_handlers = large_blobs.handlers(self.profile)
        self._handlers.update(large_blob_handlers)
        bio_handlers = bio_enrollment.handlers(self.profile)
        self._handlers.update(bio_handlers)
        # Which command continues which pending state (all others clear it). Credential
        # management clears it itself unless the subcommand is the matching getNext*;
        # largeBlobs keeps only its own write in progress; bio enrollment only its capture.
        self._continuations = {
            Cmd.GET_NEXT_ASSERTION,
            *credman_handlers,
            *large_blob_handlers,
            *bio_handlers,
        }

    # -- construction -------------------------------------------------------------------

    def _resolve_profile(self, profile: str | Profile | None) -> Profile:
        stored = self.store.get_meta("profile")
        if profile is None:
            resolved = get_profile(stored.decode() if stored else DEFAULT_PROFILE)
        elif isinstance(profile, Profile):
            resolved = profile
        else:
            resolved = get_profile(profile)
        if stored is not None and stored.decode() != resolved.name:
            raise StateError(
                f"this state belongs to a {stored.decode()!r} key, not {resolved.name!r}; "
                "use a different --state path (or omit --profile)"
            )
        if stored is None:
            self.store.set_meta("profile", resolved.name.encode())
        return resolved

    def _new_master_key(self) -> bytes:
        master = self.random(MASTER_KEY_LEN)
        self.store.set_meta("master_key", master)
        return master

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Authenticator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- what transports call -------------------------------------------------------------

    def handle_cbor(self, request: bytes, interaction: Interaction | None = None) -> bytes:
        """One CTAP2 request (command byte + CBOR) to one response (status + CBOR).

        Injected faults (faults.py) sit in front of the device while any is set."""
        interaction = interaction or NoInteraction()
        if self.faults.active:
            return self.faults.handle(self, request, interaction, self._handle_cbor)
        return self._handle_cbor(request, interaction)

    def _handle_cbor(self, request: bytes, interaction: Interaction) -> bytes:
        command = request[0] if request else -1
        try:
            if not self.profile.ctap2:
                # Its transports never pass CTAPHID_CBOR on (no CBOR capability, CTAP 2.1
                # §11.2.9.1.3); a direct caller gets the same answer: no such command.
                raise CtapError(Status.INVALID_COMMAND, "a U2F-only key speaks no CTAP2")
            if not request:
                raise CtapError(Status.INVALID_LENGTH, "empty CTAP2 message")
            if len(request) > MAX_MSG_SIZE:
                raise CtapError(Status.INVALID_LENGTH, "message larger than maxMsgSize")
            if command not in self._continuations:
                self.pending = None
            result = self._dispatch(command, request[1:], interaction)
            response = b"\x00" + (cbor.encode(result) if result is not None else b"")
            self.last_outcome = Outcome(command, Status.SUCCESS, "")
            return response
        except CtapError as exc:
            self.last_outcome = Outcome(command, exc.status, exc.reason)
            return bytes([exc.status])
        except Exception:  # a bug must not take the device down with a traceback
            log.exception("internal error handling command 0x%02x", command & 0xFF)
            self.last_outcome = Outcome(command, Status.OTHER, "internal error")
            return bytes([Status.OTHER])

    def _dispatch(self, command: int, payload: bytes, interaction: Interaction) -> dict | None:
        if command == Cmd.GET_INFO:
            if payload:
                raise CtapError(Status.INVALID_LENGTH, "getInfo takes no parameters")
            return ctap2.get_info(self)
        handler = self._handlers.get(command)
        if handler is None:
            raise CtapError(Status.INVALID_COMMAND, f"command 0x{command:02x} not supported")
        return handler(self, request_map(payload), interaction)

    def handle_u2f(self, apdu: bytes, interaction: Interaction | None = None) -> bytes:
        """One CTAP1/U2F request APDU to response data + status word (ctap1.py)."""
        self.pending = None  # a U2F message is "any other command" too
        try:
            data, sw, _reason = ctap1.handle(self, bytes(apdu), interaction or NoInteraction())
        except Exception:  # a bug must not take the device down with a traceback
            log.exception("internal error handling a U2F message")
            data, sw = b"", ctap1.SW.UNKNOWN
        return data + sw.to_bytes(2, "big")

    def power_cycle(self) -> None:
        """Unplug and replug: volatile state goes, the reset window reopens."""
        self.pending = None
        self.powered_up_at = self.clock.monotonic()
        self.pin_uv.power_cycle()

    def wink(self) -> None:
        log.info("wink")

    # -- shared helpers for command handlers -----------------------------------------------

    @property
    def extensions(self) -> tuple[str, ...]:
        """The extensions this key implements: exactly what getInfo lists."""
        return extensions.supported(self.profile)

    @property
    def algorithms(self) -> tuple[int, ...]:
        """What getInfo lists and makeCredential accepts, in the profile's order: its
        algorithms that this installation's cryptography can run (ML-DSA needs OpenSSL >=
        3.5) and whose makeCredential response always fits maxMsgSize."""
        return tuple(
            a for a in self.profile.algorithms if a in cose.SUPPORTED and self.attestation.fits(a)
        )

    def extra_info_options(self) -> dict[str, bool]:
        return {
            **self.attestation.info_options(),
            **credman.info_options(self),
            **config.info_options(self),
            **extensions.info_options(self),
        }

    def confirm_presence(
        self,
        purpose: str,
        rp_id: str | None,
        interaction: Interaction,
        *,
        user_name: str | None = None,
        allow_denied: bool = False,
    ) -> None:
        """Ask the person; raise the spec's status unless they approved."""
        self.events.emit("presenceRequested", rp_id=rp_id, purpose=purpose)
        verdict = self.presence.confirm(PresenceRequest(purpose, rp_id, user_name), interaction)
        if verdict is Verdict.APPROVED:
            self.events.emit("presenceApproved", rp_id=rp_id, purpose=purpose)
            return
        self.events.emit("presenceDenied", rp_id=rp_id, purpose=purpose, verdict=verdict.value)
        if verdict is Verdict.CANCELLED:
            raise CtapError(Status.KEEPALIVE_CANCEL, "the platform cancelled the request")
        if allow_denied:
            return
        if verdict is Verdict.TIMEOUT:
            raise CtapError(Status.USER_ACTION_TIMEOUT, "nobody touched the key in time")
        raise CtapError(Status.OPERATION_DENIED, "the user declined")

    def locate(self, credential_id: bytes, rp_hash: bytes) -> ctap2.Candidate | None:
        """A credential of this device for this RP, or None ("not mine")."""
        secrets = self.secrets_of(credential_id, rp_hash)
        if secrets is None:
            return None
        resident = None
        if secrets.discoverable:
            # A deleted or overwritten resident credential must stop working even though
            # its ID would still unwrap.
            resident = self.store.get_resident(credential_id)
            if resident is None:
                return None
        return ctap2.Candidate(credential_id, secrets, resident)

    def secrets_of(self, credential_id: bytes, rp_hash: bytes) -> CredentialSecrets | None:
        """The secrets of one of this key's IDs for this RP: its own format first, then an
        imported credential's (any ID, imported.py); None if neither."""
        secrets = self.wrapper.unwrap(credential_id, rp_hash)
        if secrets is None:
            secrets = imported.unseal(self, credential_id, rp_hash)
        return secrets

    def next_counter(self, credential_id: bytes) -> int:
        return counters.next_value(self.store, self.counter_mode, credential_id)

    def remaining_discoverable(self) -> int | None:
        capacity = self.profile.rk_capacity
        if capacity is None:
            return None
        return max(0, capacity - self.store.resident_count())

    def factory_reset(self) -> None:
        """Wipe everything and make a new master key: every old credential ID dies."""
        self.store.wipe()
        self.wrapper = KeyWrapper(self._new_master_key(), self.random)
        self.pending = None
        self.pin_uv = PinUv(self)
        self.events.emit("reset")

    # -- admin API (CLI, tests) --------------------------------------------------------------

    def credentials(self, rp_id: str | None = None) -> list[ResidentCredential]:
        """Resident credentials, most recent first."""
        return self.store.list_resident(ctap2.rp_id_hash(rp_id) if rp_id else None)

    def set_counter(self, credential_id: bytes, value: int) -> None:
        """Set a credential's signature counter (the next signature carries value + 1), so
        an RP's clone detection can be tested. In counter mode "global" this sets the one
        device counter; in mode "zero" it is refused (ValueError)."""
        counters.set_value(self.store, self.counter_mode, credential_id, value)

    def counter(self, credential_id: bytes) -> int:
        """The counter value the credential's last signature carried."""
        return counters.current_value(self.store, self.counter_mode, credential_id)

    def delete_credential(self, credential_id: bytes) -> bool:
        self.pending = None
        record = self.store.get_resident(credential_id)
        deleted = self.store.delete_resident(credential_id)
        if deleted:
            rp_id = record.rp_id if record is not None else None
            self.events.emit("credentialDeleted", rp_id=rp_id, credential_id=credential_id)
        return deleted

    def set_pin(self, pin: str) -> None:
        """Set the first PIN (offline; same policy as clientPIN setPIN). Raises CtapError."""
        if not self.profile.ctap2:  # no clientPIN command, so a PIN could never be used
            raise CtapError(Status.INVALID_COMMAND, "a U2F-only key has no PIN")
        self.pin_uv.admin_set_pin(pin)

    def change_pin(self, old: str, new: str) -> None:
        """Change the PIN; a wrong ``old`` spends a retry exactly as over CTAP."""
        self.pin_uv.admin_change_pin(old, new)

    def pin_status(self) -> dict[str, Any]:
        """{"set", "retries", "force_change", "min_length"}."""
        return self.pin_uv.status()

    def info(self) -> dict[str, Any]:
        """getInfo, decoded with names (for people and --json). A U2F-only key has no
        getInfo (a CTAP2 command): only its versions, as U2F VERSION tells them."""
        if not self.profile.ctap2:
            return {"versions": list(self.profile.versions)}
        raw = ctap2.get_info(self)
        return {ctap2.InfoKey(k).name.lower(): v for k, v in raw.items()}
