"""PIN/UV gatekeeping for makeCredential and getAssertion.

This first version has no clientPIN (the PIN issue adds authenticatorClientPIN, PIN/UV auth
protocols 1 and 2 and pinUvAuthTokens here). It already answers what a key without a PIN
answers: the zero-length pinUvAuthParam "touch probe" waits for presence and then reports
PIN_NOT_SET, and uv=true is refused because there is no built-in user verification.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .ctap import CtapError, Status
from .environment import Interaction
from .profiles import CTAP2_1

if TYPE_CHECKING:
    from .device import Authenticator


class PinUv:
    def __init__(self, auth: Authenticator) -> None:
        self.auth = auth

    def protocols(self) -> tuple[int, ...]:
        return ()

    def info_options(self) -> dict[str, bool]:
        return {}

    def info_members(self) -> dict[int, Any]:
        return {}

    def power_cycle(self) -> None:
        return None

    def check_request(
        self,
        permission: str,
        rp_id: str,
        client_data_hash: bytes,
        pin_uv_auth_param: bytes | None,
        pin_uv_auth_protocol: int | None,
        options: dict[str, bool],
        interaction: Interaction,
        rk: bool = False,
    ) -> bool:
        """Validate PIN/UV parts of a request; True if the user was verified."""
        if pin_uv_auth_param is not None:
            if len(pin_uv_auth_param) == 0:
                # Touch probe used by platforms to pick a key (CTAP 2.1 §6.1.2 step 1).
                self.auth.confirm_presence("select this key", rp_id, interaction)
                raise CtapError(Status.PIN_NOT_SET, "this key has no PIN")
            if pin_uv_auth_protocol is None:
                raise CtapError(Status.MISSING_PARAMETER, "pinUvAuthProtocol missing")
            if pin_uv_auth_protocol not in self.protocols():
                raise CtapError(Status.INVALID_PARAMETER, "unsupported pinUvAuthProtocol")
            raise CtapError(Status.PIN_NOT_SET, "this key has no PIN")
        if options.get("uv"):
            status = (
                Status.INVALID_OPTION
                if self.auth.profile.ctap == CTAP2_1
                else Status.UNSUPPORTED_OPTION
            )
            raise CtapError(status, "this key has no built-in user verification")
        return False
