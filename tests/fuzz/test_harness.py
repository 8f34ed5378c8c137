"""The fuzz harness of `make fuzz` (tools/dev/fuzz.py), bounded, in the default suite.

Replays the seed corpus and every saved regression input through all invariants, runs a
few hundred structure-aware mutations, and shows that the harness does catch each kind of
broken invariant (a harness that cannot fail would make `make fuzz` meaningless).
"""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from softkey.authenticator import Authenticator, Status
from softkey.tools.dev import fuzz
from softkey.tools.dev.fuzz import FuzzFailure, Harness, Target, WorldKind

SEEDS = fuzz.seed_corpus()
REGRESSIONS = fuzz.regression_inputs()


@pytest.fixture(scope="module")
def harness() -> Harness:
    return Harness()


def test_seed_corpus_covers_every_target_and_command() -> None:
    targets = {Target(data[0] & 7) for data in SEEDS.values()}
    assert targets == set(Target)
    commands = {
        data[1] for data in SEEDS.values() if data[0] & 7 in (Target.CTAP2, Target.CTAP2_AUTHED)
    }
    assert commands >= {0x01, 0x02, 0x04, 0x06, 0x07, 0x08, 0x0A, 0x0B, 0x0C, 0x0D, 0x41}


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_seed_passes_every_invariant(harness: Harness, name: str) -> None:
    harness.run(SEEDS[name])


@pytest.mark.parametrize(
    ("name", "status"),
    [
        # The harness's pinUvAuthParam gets fuzzed requests past authentication...
        ("authed-credman-metadata", Status.SUCCESS),
        ("authed-config-min-pin", Status.SUCCESS),
        ("authed-large-blobs-set", Status.SUCCESS),
        ("authed-mc-extensions", Status.SUCCESS),
        ("authed-mc-hmac-secret-mc", Status.SUCCESS),  # real keyAgreement/saltEnc/saltAuth
        ("authed-ga-extensions", Status.SUCCESS),
        # ...which the same requests without it do not get.
        ("ctap2-credman-metadata", Status.PUAT_REQUIRED),
        ("ctap2-large-blobs-set", Status.PUAT_REQUIRED),
        ("ctap2-ga-extensions", Status.PIN_AUTH_INVALID),  # saltAuth of zeros
        # Placeholders become the key's real credentials.
        ("ctap2-ga-allow", Status.SUCCESS),
        ("ctap2-mc-exclude", Status.CREDENTIAL_EXCLUDED),
    ],
)
def test_seeds_reach_deep_code(harness: Harness, name: str, status: Status) -> None:
    assert harness.run(SEEDS[name]).status == status


def test_a_successful_delete_of_the_resident_credential_is_a_legitimate_loss(
    harness: Harness,
) -> None:
    result = harness.run(SEEDS["authed-credman-delete-rk"])
    assert result.status == Status.SUCCESS
    assert "deleted" in result.detail  # the key is rebuilt, not reported as broken
    harness.run(SEEDS["ctap2-ga-rk"])  # the next case gets a fresh key


@pytest.mark.parametrize("name", sorted(REGRESSIONS))
def test_regression_inputs_stay_fixed(harness: Harness, name: str) -> None:
    """Inputs that once broke an invariant (tests/fuzz/regressions/, one file each)."""
    harness.run(REGRESSIONS[name])


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(seed=st.sampled_from(sorted(SEEDS)), rng_seed=st.integers(0, 2**32 - 1), n=st.integers(1, 6))
def test_mutated_corpus(harness: Harness, seed: str, rng_seed: int, n: int) -> None:
    data = SEEDS[seed]
    rng = random.Random(rng_seed)
    for _ in range(n):
        data = fuzz.mutate(data, rng)
    harness.run(data)


def test_mutator_keeps_ctap2_requests_canonical() -> None:
    rng = random.Random(7)
    structural = 0
    for _ in range(300):
        data = fuzz.mutate(SEEDS["authed-mc-extensions"], rng)
        if data[0] == SEEDS["authed-mc-extensions"][0] and len(data) > 2:
            try:
                fuzz.ccbor.decode(data[2:])
                structural += 1
            except fuzz.CtapError:
                pass
    assert structural > 100  # most mutations keep a decodable request to reach handlers


# -- the harness can fail ----------------------------------------------------------------------

PIN_WORLD = WorldKind("ctap2.1", True, False)


def test_internal_error_is_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    harness = Harness()

    def broken(auth, params, interaction):  # type: ignore[no-untyped-def]
        raise RuntimeError("bug")

    monkeypatch.setitem(harness.world(PIN_WORLD).auth._handlers, 0x0B, broken)
    with pytest.raises(FuzzFailure, match="internal error logged") as excinfo:
        harness.run(SEEDS["ctap2-selection"])
    assert excinfo.value.data == SEEDS["ctap2-selection"]


@pytest.mark.parametrize(
    "response",
    [
        bytes([Status.OTHER]),  # CTAP1_ERR_OTHER
        b"\x99",  # not a status
        bytes([Status.NO_CREDENTIALS]) + b"\xa0",  # error with a body
        b"\x00\xa2\x02\x00\x01\x00",  # keys out of canonical order
        b"\x00\x81\x00",  # not a map
        b"\x00\xa1\x01\xf9\x3c\x00",  # a float
    ],
)
def test_bad_replies_are_failures(monkeypatch: pytest.MonkeyPatch, response: bytes) -> None:
    harness = Harness()
    auth = harness.world(PIN_WORLD).auth
    real = auth.handle_cbor
    monkeypatch.setattr(
        auth, "handle_cbor", lambda req, i=None: response if req[:1] == b"\x0b" else real(req, i)
    )
    with pytest.raises(FuzzFailure):
        harness.run(SEEDS["ctap2-selection"])


def test_unparseable_success_is_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    harness = Harness()
    auth = harness.world(PIN_WORLD).auth
    real = auth.handle_cbor
    monkeypatch.setattr(
        auth,
        "handle_cbor",
        lambda req, i=None: b"\x00\xa1\x01\x02" if req[:1] == b"\x04" else real(req, i),
    )
    with pytest.raises(FuzzFailure, match="python-fido2 cannot parse"):
        harness.run(SEEDS["ctap2-getInfo"])


def test_losing_a_credential_is_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    harness = Harness()
    world = harness.world(PIN_WORLD)
    real = world.auth.handle_cbor

    def forgetful(request: bytes, interaction=None) -> bytes:  # type: ignore[no-untyped-def]
        if request[:1] == b"\x0b":
            world.auth.store.delete_resident(world.rk_id)  # a bug that loses a slot
        return real(request, interaction)

    monkeypatch.setattr(world.auth, "handle_cbor", forgetful)
    with pytest.raises(FuzzFailure, match="no longer asserts"):
        harness.run(SEEDS["ctap2-selection"])


def test_a_forgotten_master_key_is_a_failure() -> None:
    harness = Harness()
    world = harness.world(PIN_WORLD)
    world.auth.factory_reset()  # as if a bug reset the key outside authenticatorReset
    with pytest.raises(FuzzFailure):
        harness.run(SEEDS["ctap2-getInfo"])


def test_escaping_exception_is_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    harness = Harness()
    auth = harness.world(PIN_WORLD).auth

    def crash(apdu: bytes, interaction=None) -> bytes:  # type: ignore[no-untyped-def]
        raise KeyError("escaped")

    monkeypatch.setattr(auth, "handle_u2f", crash)
    with pytest.raises(FuzzFailure, match="exception escaped"):
        harness.run(SEEDS["u2f-version"])


def test_u2f_internal_error_status_is_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    harness = Harness()
    auth = harness.world(PIN_WORLD).auth
    monkeypatch.setattr(auth, "handle_u2f", lambda apdu, interaction=None: b"\x6f\x00")
    with pytest.raises(FuzzFailure, match="6f00"):
        harness.run(SEEDS["u2f-version"])


def test_a_wedged_ctaphid_engine_is_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    from softkey.transports import ctaphid

    harness = Harness()
    harness.world(PIN_WORLD)
    # An engine that never answers INIT would leave hosts unable to find the key.
    monkeypatch.setattr(ctaphid.CtapHidEngine, "_init", lambda self, cid, length, nonce: [])
    with pytest.raises(FuzzFailure, match="INIT"):
        harness.run(SEEDS["hid-getinfo"])


def test_fresh_world_has_its_credentials() -> None:
    world = fuzz.World(PIN_WORLD)
    assert isinstance(world.auth, Authenticator)
    world.check_credentials()
    assert world.auth.pin_status()["set"]
    assert {c.credential_id for c in world.auth.credentials()} == {world.rk_id}


def test_mutations_never_change_the_mutator_itself() -> None:
    """Regression (found by `make fuzz`): the mutator handed out the very [] and {} of its
    table of interesting values; later mutations grew them, even into themselves, until
    encoding a request recursed without end and libFuzzer died."""
    import copy

    before = copy.deepcopy(fuzz._INTERESTING)
    rng = random.Random(3)
    for _ in range(3000):
        data = SEEDS[rng.choice(sorted(SEEDS))]
        for _ in range(rng.randint(1, 12)):
            data = fuzz.mutate(data, rng)
    assert fuzz._INTERESTING == before
