"""CBOR request decoding of every CTAP2 command, fuzzed with well-formed CBOR.

Random bytes rarely decode (tests/authenticator/test_malformed.py covers those); here every
request is canonical CBOR whose members have the right keys and, mostly, plausible shapes,
so each command's own parameter checks run. Half the cases carry a valid pinUvAuthParam
(the fuzz harness computes it) so credential management, config and largeBlobs get past
authentication. Every reply must be a spec status or a valid response, and the keys'
credentials made beforehand must still assert (tools/dev/fuzz.py checks both).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from softkey.authenticator import Authenticator, Status
from softkey.authenticator.cbor import encode
from softkey.tools.dev.fuzz import (
    MARK_NR,
    MARK_RK,
    MARK_RP_HASH,
    PROFILES,
    Harness,
    Target,
    WorldKind,
)

ANY = st.recursive(
    st.one_of(
        st.integers(-(2**64) + 1, 2**64 - 1),
        st.binary(max_size=70),
        st.text(max_size=12),
        st.booleans(),
        st.none(),
    ),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.integers(-3, 12) | st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


# True 19 times in 20 (sampled_from draws uniformly; a plain integer range would not, as
# hypothesis favours its bounds).
MOSTLY = st.sampled_from([True] * 19 + [False])


@st.composite
def _fixed_map(
    draw: st.DrawFn, members: dict[Any, st.SearchStrategy[Any]], required: tuple[Any, ...]
) -> dict:
    result: dict[Any, Any] = {}
    for key, value in members.items():
        # Required members are there 19 times in 20, optional ones every other time...
        if draw(MOSTLY) if key in required else draw(st.booleans()):
            # ...and of a plausible shape 19 times in 20, else anything at all.
            result[key] = draw(value if draw(MOSTLY) else ANY)
    if not draw(MOSTLY):  # sometimes a member the command does not define
        result[draw(st.integers(-3, 20) | st.text(max_size=5))] = draw(ANY)
    return result


def fixed_map(
    members: dict[Any, st.SearchStrategy[Any]], required: tuple[Any, ...] = ()
) -> st.SearchStrategy[dict]:
    """A map with ``members`` (mostly plausible values), maybe a stray key."""
    return _fixed_map(members, required)


HASH = st.binary(min_size=32, max_size=32) | st.just(MARK_RP_HASH)
CRED_ID = st.sampled_from([MARK_NR, MARK_RK]) | st.binary(max_size=80)
RP_ID = st.sampled_from(["example.com", "precious.example", ""]) | st.text(max_size=10)
PROTOCOL = st.sampled_from([1, 2]) | st.integers(-2, 5)
DESCRIPTOR = fixed_map(
    {"type": st.sampled_from(["public-key", "public-key", "x"]), "id": CRED_ID}, ("type", "id")
)
OPTIONS = st.dictionaries(st.sampled_from(["rk", "up", "uv", "plat", "x"]), st.booleans())
COSE_KEY = fixed_map(
    {
        1: st.just(2),
        3: st.just(-25),
        -1: st.just(1),
        -2: st.binary(min_size=32, max_size=32),
        -3: st.binary(min_size=32, max_size=32),
    },
    (1, 3, -1, -2, -3),
)
MC_EXTENSIONS = fixed_map(
    {
        "credProtect": st.integers(0, 4),
        "hmac-secret": st.booleans(),
        "hmac-secret-mc": fixed_map({1: COSE_KEY, 2: st.binary(), 3: st.binary(), 4: PROTOCOL}),
        "credBlob": st.binary(max_size=70),
        "largeBlobKey": st.booleans(),
        "minPinLength": st.booleans(),
    }
)
GA_EXTENSIONS = fixed_map(
    {
        "hmac-secret": fixed_map({1: COSE_KEY, 2: st.binary(), 3: st.binary(), 4: PROTOCOL}),
        "credBlob": st.booleans(),
        "largeBlobKey": st.booleans(),
        "appid": st.text(max_size=20),
    }
)

# The members of each command's request map (CTAP 2.1 §6), with plausible values.
REQUESTS: dict[int, st.SearchStrategy[dict]] = {
    0x01: fixed_map(
        {
            1: st.binary(min_size=32, max_size=32),
            2: fixed_map({"id": RP_ID, "name": st.text(max_size=8)}, ("id",)),
            3: fixed_map(
                {
                    "id": st.binary(min_size=1, max_size=65),
                    "name": st.text(max_size=8),
                    "displayName": st.text(max_size=8),
                },
                ("id",),
            ),
            4: st.lists(
                fixed_map(
                    {"type": st.just("public-key"), "alg": st.sampled_from([-7, -8, -35, -257])},
                    ("type", "alg"),
                ),
                min_size=1,
                max_size=3,
            ),
            5: st.lists(DESCRIPTOR, max_size=3),
            6: MC_EXTENSIONS,
            7: OPTIONS,
            8: st.binary(max_size=33),
            9: PROTOCOL,
            0x0A: st.integers(0, 3),
            0x0B: st.lists(st.sampled_from(["packed", "none", "tpm", "x"]), max_size=3),
        },
        (1, 2, 3, 4),
    ),
    0x02: fixed_map(
        {
            1: RP_ID,
            2: st.binary(min_size=32, max_size=32),
            3: st.lists(DESCRIPTOR, max_size=3),
            4: GA_EXTENSIONS,
            5: OPTIONS,
            6: st.binary(max_size=33),
            7: PROTOCOL,
        },
        (1, 2),
    ),
    0x06: fixed_map(
        {
            1: PROTOCOL,
            2: st.integers(0, 10),
            3: COSE_KEY,
            4: st.binary(max_size=48),
            5: st.binary(max_size=96),
            6: st.binary(max_size=48),
            9: st.integers(0, 0x7F),
            0x0A: RP_ID,
        },
        (1, 2),
    ),
    0x0A: fixed_map(
        {
            1: st.integers(0, 8),
            2: fixed_map(
                {
                    1: HASH,
                    2: DESCRIPTOR,
                    3: fixed_map({"id": st.binary(max_size=20), "name": st.text(max_size=8)}),
                }
            ),
            3: PROTOCOL,
            4: st.binary(max_size=33),
        },
        (1,),
    ),
    0x0C: fixed_map(
        {
            1: st.integers(0, 2000),
            2: st.binary(max_size=100),
            3: st.integers(0, 2000),
            4: st.integers(0, 2000),
            5: st.binary(max_size=33),
            6: PROTOCOL,
        },
        (3,),
    ),
    0x0D: fixed_map(
        {
            1: st.sampled_from([1, 2, 3, 0xFF]) | st.integers(0, 300),
            2: fixed_map(
                {
                    1: st.integers(0, 70),
                    2: st.lists(st.text(max_size=12), max_size=3),
                    3: st.booleans(),
                }
            ),
            3: PROTOCOL,
            4: st.binary(max_size=33),
        },
        (1,),
    ),
}
REQUESTS[0x41] = REQUESTS[0x0A]
# Commands without parameters still get maps: they must be ignored or refused properly.
for _command in (0x04, 0x07, 0x08, 0x0B, 0x09, 0x40, 0x42):
    REQUESTS[_command] = fixed_map({})

KINDS = st.builds(
    WorldKind, st.sampled_from(PROFILES), st.booleans(), st.sampled_from([False, False, True])
)


@pytest.fixture(scope="module")
def harness() -> Harness:
    return Harness()


@settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    kind=KINDS,
    authed=st.booleans(),
    command=st.sampled_from(sorted(REQUESTS)),
    data=st.data(),
)
def test_well_formed_requests_of_every_command(
    harness: Harness, kind: WorldKind, authed: bool, command: int, data: st.DataObject
) -> None:
    params = data.draw(REQUESTS[command], label="params")
    target = Target.CTAP2_AUTHED if authed else Target.CTAP2
    payload = b"" if not params and command in (0x04, 0x08) else encode(params)
    harness.run(bytes([kind.byte(target), command]) + payload)


@pytest.mark.parametrize("profile", PROFILES)
def test_every_command_byte_without_parameters(profile: str) -> None:
    auth = Authenticator(profile)
    spec = {s.value for s in Status} - {Status.OTHER}
    for command in range(256):
        for payload in (b"", b"\xa0"):
            response = auth.handle_cbor(bytes([command]) + payload)
            assert response[0] in spec, (hex(command), payload, response)
            if response[0] == Status.SUCCESS and len(response) > 1:
                assert command == 0x04 and payload == b""  # only getInfo answers with a map
            elif response[0] != Status.SUCCESS:
                assert len(response) == 1
