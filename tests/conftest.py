"""Shared fixtures: an in-memory key and python-fido2 clients bound to it.

Hypothesis profiles: "ci" (selected when CI=true, as CI sets it) is derandomized, so every CI
run tries the same examples and a red run reproduces; "dev" (the default elsewhere) draws new
examples each run, to keep finding new cases. Both have no deadline: several properties drive
whole CTAP exchanges whose time depends on the machine's load, not on the code.
To replay a failure: hypothesis prints `@reproduce_failure(...)` and the falsifying example
(print_blob), and stores it in .hypothesis/ so the next local run tries it first; or rerun
with `make test ARGS="--hypothesis-profile ci"` (or `--hypothesis-seed N`) to get CI's draw.
"""

from __future__ import annotations

import os

import pytest
from fido2.ctap2 import Ctap2
from hypothesis import settings

from softkey.authenticator import Authenticator, FakeClock
from softkey.transports.inprocess import VirtualCtapDevice

settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("dev", deadline=None, print_blob=True)
settings.load_profile("ci" if os.environ.get("CI", "").lower() in ("1", "true", "yes") else "dev")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def auth(clock: FakeClock) -> Authenticator:
    return Authenticator("ctap2.1", clock=clock)


@pytest.fixture
def ctap(auth: Authenticator) -> Ctap2:
    return Ctap2(VirtualCtapDevice(auth))
