"""pytest plugin: a virtual security key for relying-party test suites.

Installed with softkey (entry point ``pytest11``), so any project that has softkey installed
gets two fixtures:

``softkey``
    A ``SoftKey``: an in-memory ``Authenticator`` reached through python-fido2's
    ``Fido2Client`` (the same client code a desktop app would use), bound to an origin.
    ``softkey.client.make_credential(options.public_key)`` and
    ``softkey.client.get_assertion(options.public_key)`` take what ``Fido2Server`` produces.

``softkey_factory``
    ``softkey_factory(profile=..., origin=..., ...)`` makes as many keys as a test needs
    (a user with two security keys); all are closed at teardown.

For relying parties that speak WebAuthn JSON (py_webauthn's ``options_to_json``):
``softkey.create(options_json)`` / ``softkey.get(options_json)`` run the ceremony through the
same client and return the credential as the browser's ``toJSON()`` dict, which
``verify_registration_response(credential=...)`` / ``verify_authentication_response`` and
Fido2Server's ``register_complete`` / ``authenticate_complete`` take as they are.

Errors are python-fido2's ``ClientError`` (same codes) with a message naming what the key
answered (``KEY_STORE_FULL: all 25 discoverable-credential slots are in use ...``) and, where a
fixture setting fixes it, which one (transports/rp_client.py).

Configuration, most specific first:

1. indirect parametrization: ``@pytest.mark.parametrize("softkey", ["ctap2.0", "yubikey-5"],
   indirect=True)`` (a profile name or a dict of ``softkey_factory`` arguments);
2. the marker ``@pytest.mark.softkey(profile="yubikey-5", origin="https://rp.test",
   presence="deny", pin="1234")``;
3. command-line options ``--softkey-origin`` / ``--softkey-profile`` / ``--softkey-pin``;
4. ini options ``softkey_origin`` / ``softkey_profile`` / ``softkey_pin``;
5. defaults: origin ``https://example.com``, profile ``ctap2.1``, no PIN (a new key).

Presence (the person touching the key) is controlled per key: ``softkey.approve()``,
``softkey.deny()``, ``softkey.timeout()`` set what every following request gets;
``softkey.next_verdicts("deny", "approve")`` scripts the next ones; ``softkey.presence_requests``
records what was asked. Time is a ``FakeClock`` (``softkey.clock.advance(11)``), never sleeps.
``pin=`` sets a PIN the client then supplies (``softkey.pin``); ``template=PATH`` starts each
test from a copy of a known state file. docs/ci.md has a complete example.

Relying-party negative tests (transports/fault_methods.py): ``softkey.inject_fault(
"bad_signature", count=1)`` (also up_flag/uv_flag, counter, counter_regression, rp_id_hash,
aaguid, attestation_cert, error, delay, no_answer) breaks the next answers that reach the user;
``softkey.faults`` / ``softkey.clear_faults()``. ``softkey.events`` lists what the key did.

Browser tests (softkey.playwright): ``softkey_context`` is pytest-playwright's ``context`` with
the ``softkey`` key behind ``navigator.credentials`` in its pages.

Built-in user verification (a profile with a fingerprint sensor, ``yubikey-bio``):
``enrolled=True`` sets the PIN (``pin=``, else ``123456``) and enrolls one finger, so a
UV-required ceremony runs through the sensor with no PIN entry. ``softkey.set_user_verified(
False)`` (WebDriver's setUserVerified) makes every following fingerprint check fail
(CTAP2_ERR_UV_INVALID, counting uvRetries down until the client falls back to the PIN);
``softkey.next_uv_verdicts("fail", "timeout", "approve")`` scripts the next ones;
``softkey.uv_requests`` records them; ``softkey.enroll_finger(name)`` enrolls another finger.

WebDriver's credential commands (transports/webdriver.py): ``softkey.add_credential(
credential_id, rp_id, private_key, user_handle=None, sign_count=0, resident=False,
large_blob=None)`` with any credential ID, ``get_credentials(include_private_keys=False)``,
``remove_credential(id)``, ``remove_all_credentials()``, ``set_credential_properties(id,
backup_eligible=None, backup_state=None)`` (the BE/BS flags of authenticatorData).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from softkey.transports.fault_methods import FaultMethods
from softkey.transports.webdriver import VirtualAuthenticatorMethods

if TYPE_CHECKING:
    from fido2.ctap2 import Ctap2

    from softkey.authenticator import Authenticator, FakeClock, PresenceRequest, ScriptedPresence
    from softkey.authenticator.builtin_uv import ScriptedVerifier
    from softkey.transports.inprocess import VirtualCtapDevice
    from softkey.transports.rp_client import RpClient

DEFAULT_ORIGIN = "https://example.com"
DEFAULT_PROFILE = "ctap2.1"
_VERDICT_NAMES = ("approve", "deny", "timeout", "cancel")

_FACTORY_ARGS = ("profile", "origin", "presence", "pin", "state", "template", "enrolled")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("softkey", "softkey virtual security key")
    group.addoption(
        "--softkey-origin",
        dest="softkey_origin",
        default=None,
        help=f"origin the softkey fixture's client runs in (default {DEFAULT_ORIGIN})",
    )
    group.addoption(
        "--softkey-profile",
        dest="softkey_profile",
        default=None,
        help=f"profile/preset of the softkey fixture (default {DEFAULT_PROFILE}); "
        "see `softkey profiles`",
    )
    group.addoption(
        "--softkey-pin",
        dest="softkey_pin",
        default=None,
        help="give every softkey fixture key this PIN, for userVerification "
        "'preferred'/'required' (default: no PIN, as a new key)",
    )
    parser.addini("softkey_origin", "origin of the softkey fixture's client", default=None)
    parser.addini("softkey_profile", "profile of the softkey fixture", default=None)
    parser.addini("softkey_pin", "PIN every softkey fixture key is given", default=None)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "softkey(profile=None, origin=None, presence='approve', pin=None, state=None, "
        "template=None, enrolled=False): configure the softkey fixture",
    )


def _verdict(name: str) -> Any:
    from softkey.authenticator import Verdict

    mapping = {
        "approve": Verdict.APPROVED,
        "deny": Verdict.DENIED,
        "timeout": Verdict.TIMEOUT,
        "cancel": Verdict.CANCELLED,
    }
    try:
        return mapping[name]
    except KeyError:
        raise ValueError(
            f"unknown presence {name!r}; use one of {', '.join(_VERDICT_NAMES)}"
        ) from None


def _uv_verdict(name: str) -> Any:
    from softkey.authenticator.builtin_uv import VERDICT_NAMES

    try:
        return VERDICT_NAMES[name]
    except KeyError:
        raise ValueError(
            f"unknown fingerprint verdict {name!r}; use one of {', '.join(VERDICT_NAMES)}"
        ) from None


class _Interaction:
    """python-fido2 ``UserInteraction``: supplies the PIN the key was given, if any."""

    def __init__(self, key: SoftKey) -> None:
        self._key = key

    def prompt_up(self) -> None:
        return None

    def request_pin(self, permissions: Any, rp_id: str | None) -> str | None:
        return self._key.pin

    def request_uv(self, permissions: Any, rp_id: str | None) -> bool:
        return True


class SoftKey(VirtualAuthenticatorMethods, FaultMethods):
    """One virtual key as a relying-party test sees it.

    WebDriver's credential commands (add_credential, get_credentials, remove_credential,
    remove_all_credentials, set_credential_properties) come from transports/webdriver.py."""

    def __init__(
        self,
        authenticator: Authenticator,
        presence: ScriptedPresence,
        clock: FakeClock,
        origin: str,
        pin: str | None = None,
    ) -> None:
        from softkey.transports.inprocess import VirtualCtapDevice

        self.authenticator = authenticator
        self.clock = clock
        self.origin = origin
        self.pin = pin
        self._presence = presence
        self.device: VirtualCtapDevice = VirtualCtapDevice(authenticator)
        self._interaction = _Interaction(self)
        self.client: RpClient = self.client_for(origin)

    # -- what a test drives ------------------------------------------------------------------

    def client_for(self, origin: str) -> RpClient:
        """Another client on this same key, running in a different origin."""
        from fido2.client import DefaultClientDataCollector

        from softkey.transports.rp_client import RpClient

        return RpClient(
            self.device,
            client_data_collector=DefaultClientDataCollector(origin),
            user_interaction=self._interaction,  # type: ignore[arg-type]
            authenticator=self.authenticator,
        )

    def create(self, options: Any) -> dict[str, Any]:
        """Register: ``navigator.credentials.create`` in this origin, the result ``toJSON()``.

        ``options``: py_webauthn's ``options_to_json(...)`` text (or it parsed), or
        Fido2Server's ``register_begin`` result. Returns the RegistrationResponseJSON dict
        that py_webauthn's ``verify_registration_response(credential=...)`` and Fido2Server's
        ``register_complete`` take.
        """
        return self.client.create(options)

    def get(self, options: Any, *, index: int = 0) -> dict[str, Any]:
        """Log in: ``navigator.credentials.get``, the result ``toJSON()`` (see ``create``).

        ``index`` picks among several discoverable credentials (most recent first)."""
        return self.client.get(options, index=index)

    @property
    def ctap2(self) -> Ctap2:
        """Raw CTAP2 access (python-fido2 ``Ctap2``) for authenticator-level assertions."""
        from fido2.ctap2 import Ctap2

        return Ctap2(self.device)

    @property
    def profile(self) -> str:
        return self.authenticator.profile.name

    @property
    def rp_id(self) -> str:
        """The origin's host: the RP ID a page at this origin would normally use."""
        from urllib.parse import urlparse

        return urlparse(self.origin).hostname or ""

    # -- presence -------------------------------------------------------------------------------

    def approve(self) -> None:
        """Every following presence request is approved (the default)."""
        self._set_default("approve")

    def deny(self) -> None:
        """Every following presence request is declined (OPERATION_DENIED)."""
        self._set_default("deny")

    def timeout(self) -> None:
        """Nobody touches the key (USER_ACTION_TIMEOUT)."""
        self._set_default("timeout")

    def next_verdicts(self, *verdicts: str) -> None:
        """Script the next presence answers (then the default applies again)."""
        self._presence.verdicts.extend(_verdict(v) for v in verdicts)

    @contextmanager
    def denying(self) -> Iterator[None]:
        """``with softkey.denying(): ...`` declines presence inside the block only."""
        saved = self._presence.default
        self.deny()
        try:
            yield
        finally:
            self._presence.default = saved

    @property
    def presence_requests(self) -> list[PresenceRequest]:
        """Every presence request the key made, in order (purpose, rp_id, user_name)."""
        return self._presence.requests

    def _set_default(self, name: str) -> None:
        self._presence.default = _verdict(name)

    # -- built-in user verification (profiles with a fingerprint sensor) ---------------------

    def set_user_verified(self, verified: bool) -> None:
        """WebDriver's setUserVerified: every following fingerprint check matches (True:
        UV and presence in one touch) or does not (False: CTAP2_ERR_UV_INVALID, a uvRetry
        spent; the last one blocks the sensor until the PIN is entered). The default is True.
        """
        if not isinstance(verified, bool):
            raise TypeError("set_user_verified takes True or False")
        self._uv_verifier().default = _uv_verdict("approve" if verified else "fail")

    def next_uv_verdicts(self, *verdicts: str) -> None:
        """Script the next fingerprint checks: "approve", "fail", "timeout", "cancel" (then
        the set_user_verified setting applies again). While enrolling, approve is a good
        sample, fail a poor one, timeout no finger."""
        self._uv_verifier().verdicts.extend(_uv_verdict(v) for v in verdicts)

    @property
    def uv_requests(self) -> list[PresenceRequest]:
        """Every fingerprint check the key made, in order (purpose, rp_id)."""
        return self._uv_verifier().requests

    def enroll_finger(self, name: str = "finger 1") -> bytes:
        """Enroll one more finger as a platform would (PIN token with be, then the capture
        loop); needs the PIN set (``pin=``). Returns the template ID."""
        from softkey.transports.bio_enroll import enroll_finger

        if self.pin is None:
            raise ValueError("enrolling a finger needs the key's PIN: make the key with pin=")
        return enroll_finger(self.authenticator, self.pin, name)

    def _uv_verifier(self) -> ScriptedVerifier:
        from softkey.authenticator.builtin_uv import ScriptedVerifier

        verifier = self.authenticator.verifier
        if self.authenticator.profile.bio is None or not isinstance(verifier, ScriptedVerifier):
            raise ValueError(
                f"the {self.profile} profile has no fingerprint sensor (built-in UV); its user "
                "verification is the PIN (pin=...). Use a profile with one: yubikey-bio"
            )
        return verifier

    # -- the key itself ------------------------------------------------------------------------

    def credentials(self, rp_id: str | None = None) -> list[Any]:
        """Resident credentials on the key (``ResidentCredential`` records)."""
        return self.authenticator.credentials(rp_id)

    def set_pin(self, pin: str) -> None:
        """Set a PIN through ClientPIN (as a platform would); the client then uses it."""
        from fido2.ctap2 import ClientPin

        ClientPin(self.ctap2).set_pin(pin)
        self.pin = pin

    def power_cycle(self) -> None:
        """Unplug and replug (volatile state goes; the reset window reopens)."""
        self.authenticator.power_cycle()

    def reset(self) -> None:
        """Factory reset as the operator: every credential made so far stops working."""
        self.authenticator.factory_reset()

    def close(self) -> None:
        self.authenticator.close()

    def __repr__(self) -> str:
        return f"<SoftKey profile={self.profile} origin={self.origin}>"


def make_softkey(
    profile: str | None = None,
    origin: str | None = None,
    presence: str = "approve",
    pin: str | None = None,
    state: str | os.PathLike[str] | None = None,
    template: str | os.PathLike[str] | None = None,
    enrolled: bool = False,
    *,
    workdir: Path | None = None,
) -> SoftKey:
    """Build a ``SoftKey`` (what the fixtures call).

    ``state``: a state file used in place (None: in memory). ``template``: a state file
    (e.g. made by `softkey import`) copied into ``workdir`` for this key alone, so every test
    starts from the same known key and none can change it for the next. ``enrolled``: on a
    profile with a fingerprint sensor, set the PIN (``pin``, else ``DEFAULT_PIN``) and enroll
    one finger, so UV-required ceremonies run through built-in UV with no PIN entry.
    """
    from softkey.authenticator import Authenticator, FakeClock, ScriptedPresence, Verdict
    from softkey.authenticator.builtin_uv import ScriptedVerifier
    from softkey.authenticator.profiles import get_profile
    from softkey.transports.bio_enroll import DEFAULT_PIN

    if enrolled and profile is not None and get_profile(profile).bio is None:
        raise ValueError(
            f"enrolled=True needs a profile with a fingerprint sensor (yubikey-bio), not {profile}"
        )
    clock = FakeClock()
    scripted = ScriptedPresence(default=_verdict(presence))
    if template is not None:
        if state is not None:
            raise TypeError("give state or template, not both")
        if workdir is None:
            raise TypeError("template needs a workdir to copy into")
        state = workdir / "softkey.sqlite3"
        copy_state(Path(template), state)
    # Fingerprint checks (bio profiles) match unless a test says otherwise.
    verifier = ScriptedVerifier(default=Verdict.APPROVED)
    auth = Authenticator(profile, state, presence=scripted, clock=clock, verifier=verifier)
    key = SoftKey(auth, scripted, clock, origin or DEFAULT_ORIGIN, pin=None)
    try:
        if enrolled and auth.profile.bio is None:
            raise ValueError(
                "enrolled=True needs a profile with a fingerprint sensor (yubikey-bio), not "
                f"{auth.profile.name}"
            )
        if enrolled and pin is None and not auth.pin_status()["set"]:
            pin = DEFAULT_PIN
        if pin is not None:
            if auth.pin_status()["set"]:
                key.pin = pin  # a template/state that has its PIN: the client just types it
            else:
                key.set_pin(pin)
        if enrolled and not auth.pin_uv.builtin.enrolled:
            key.enroll_finger()
    except BaseException:
        auth.close()
        raise
    return key


def copy_state(source: Path, target: Path) -> None:
    """A consistent copy of a state file (SQLite backup API: safe even if a key runs on it)."""
    import sqlite3
    import urllib.parse

    if not source.is_file():
        raise FileNotFoundError(f"softkey template {source} does not exist")
    # The copy holds a master key: created 0600, never through a planted link (private_files).
    from softkey.authenticator.private_files import open_private

    fd = open_private(target, what="state file")
    os.ftruncate(fd, 0)
    os.close(fd)
    src = sqlite3.connect(
        "file:" + urllib.parse.quote(str(source.absolute())) + "?mode=ro", uri=True
    )
    dst = sqlite3.connect(str(target))
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()


def _config_value(config: pytest.Config, name: str) -> str | None:
    value = config.getoption(name, default=None)
    if value:
        return str(value)
    ini = config.getini(name)
    return str(ini) if ini else None


@pytest.fixture
def softkey_factory(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., SoftKey]]:
    """Make keys: ``softkey_factory(profile="yubikey-5", origin=..., presence="deny")``."""
    config = request.config
    default_origin = _config_value(config, "softkey_origin")
    default_profile = _config_value(config, "softkey_profile")
    default_pin = _config_value(config, "softkey_pin")
    made: list[SoftKey] = []

    def factory(**kwargs: Any) -> SoftKey:
        unknown = set(kwargs) - set(_FACTORY_ARGS)
        if unknown:
            raise TypeError(
                f"softkey_factory() got unknown arguments {sorted(unknown)}; "
                f"use {', '.join(_FACTORY_ARGS)}"
            )
        kwargs.setdefault("origin", default_origin)
        kwargs.setdefault("pin", default_pin)
        if kwargs.get("profile") is None:
            # A state file or template already knows its profile.
            stored = kwargs.get("state") is not None or kwargs.get("template") is not None
            kwargs["profile"] = None if stored else (default_profile or DEFAULT_PROFILE)
        key = make_softkey(**kwargs, workdir=tmp_path_factory.mktemp("softkey"))
        made.append(key)
        return key

    yield factory
    for key in made:
        key.close()


@pytest.fixture
def softkey(request: pytest.FixtureRequest, softkey_factory: Callable[..., SoftKey]) -> SoftKey:
    """A virtual security key + python-fido2 client (see the module docstring)."""
    settings: dict[str, Any] = {}
    marker = request.node.get_closest_marker("softkey")
    if marker is not None:
        if marker.args:
            settings["profile"] = marker.args[0]
        settings.update(marker.kwargs)
    param = getattr(request, "param", None)
    if isinstance(param, str):
        settings["profile"] = param
    elif isinstance(param, dict):
        settings.update(param)
    elif param is not None:
        raise TypeError("parametrize softkey with a profile name or a dict of settings")
    return softkey_factory(**settings)


@pytest.fixture
def softkey_context(context: Any, softkey: SoftKey) -> Any:
    """pytest-playwright's ``context`` with this test's ``softkey`` behind
    ``navigator.credentials`` in every page (softkey.playwright.attach; sync API). Needs
    pytest-playwright, whose ``context`` fixture this wraps; its ``page`` fixture is a page
    of the same context, so ``def test_login(softkey_context, page)`` just works."""
    from softkey.playwright import attach

    attach(context, softkey=softkey)
    return context
