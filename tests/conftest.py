"""Shared fixtures: an in-memory key and python-fido2 clients bound to it."""

from __future__ import annotations

import pytest
from fido2.ctap2 import Ctap2

from softkey.authenticator import Authenticator, FakeClock
from softkey.transports.inprocess import VirtualCtapDevice


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def auth(clock: FakeClock) -> Authenticator:
    return Authenticator("ctap2.1", clock=clock)


@pytest.fixture
def ctap(auth: Authenticator) -> Ctap2:
    return Ctap2(VirtualCtapDevice(auth))
