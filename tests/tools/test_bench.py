"""`make bench` in its smoke mode: it runs, and it reports every target as met or MISSED.

Nothing here is timed: whether a target is met depends on the machine; that every target is
measured and printed with its verdict does not. The document's own prose carries no figure
(every number in docs/benchmarks.md comes from the run).
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from softkey.tools.dev import bench

QUICK_N = 300  # the N of --quick (bench.main)


DOC = bench.ROOT / "docs" / "benchmarks.md"


@pytest.fixture(scope="module")
def quick_output() -> str:
    """`make bench BENCH_ARGS=--quick`: the Makefile passes --write as well."""
    before = DOC.read_bytes()
    done = subprocess.run(
        [sys.executable, "-m", "softkey.tools.dev.bench", "--write", "--quick"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=bench.ROOT,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # A smoke run never replaces the document a full run wrote.
    assert DOC.read_bytes() == before
    assert "--quick: docs/benchmarks.md left as it is" in done.stdout
    return done.stdout


def test_quick_run_prints_every_target_with_its_verdict(quick_output: str) -> None:
    targets = bench.make_targets(QUICK_N)
    header = re.search(r"^Targets \((\d+) of (\d+) met\):$", quick_output, re.M)
    assert header is not None, quick_output[-2000:]
    assert int(header.group(2)) == len(targets)
    lines = quick_output[header.end() :].strip().split("\n\n")[0].splitlines()
    assert len(lines) == len(targets)
    met = 0
    for target, line in zip(targets.values(), lines, strict=True):
        label = target.label.format(limit=bench._amount(target.limit, target.unit))
        assert line.startswith(f"- issue {target.issue}: {label}: "), line
        assert line.endswith(("— met", "— MISSED")), line
        assert "not measured" not in line, line  # every target was measured
        met += line.endswith("— met")
    assert met == int(header.group(1))


def test_quick_run_shows_machine_load_and_the_side_by_side_rows(quick_output: str) -> None:
    assert re.search(r"^Machine: .*Python \d", quick_output, re.M)
    assert re.search(
        r"^Load average \(1/5/15 min\): [\d.]+ / [\d.]+ / [\d.]+ before", quick_output, re.M
    )
    for row in (
        "PING round trip, 16 bytes — reference server",
        "getAssertion (allowList) round trip, lean client — reference server",
        "getAssertion (allowList) round trip, lean client — softkey run",
        "makeCredential (non-resident) round trip, lean client — softkey run",
        "getAssertion (allowList) — python-fido2 against a canned-reply stub",
        "cold start: `softkey run --transport udp` to the first INIT reply, CPU",
        f"handle_cbor usernameless getAssertion over {QUICK_N} credentials",
        f"peak RSS of a running key after a usernameless walk over {QUICK_N}",
    ):
        assert f"| {row} |" in quick_output, row


def test_a_target_not_measured_is_reported_missed() -> None:
    target = bench.make_targets(QUICK_N)["cold"]
    assert not target.met()
    line = target.line()
    assert line.endswith("— MISSED") and "not measured" in line
    target.value = target.limit
    assert target.met() and target.line().endswith("— met")
    target.value = target.limit * 1.01
    assert target.line().endswith("— MISSED")


def test_the_document_has_no_figure_of_its_own() -> None:
    # Placeholders are filled from the run; code spans (`t(N) - t(1)`) and names with digits
    # (CTAP2, U2F, python-fido2) are not figures; any other number would be.
    prose = re.sub(r"\{[a-z_]+\}|`[^`]*`", "", bench.PROSE)
    assert re.findall(r"(?<![A-Za-z_-])\d[\d.,]*", prose) == []
    run = bench.Run(n=QUICK_N, repeat=3, inner=5, quick=True, targets=bench.make_targets(QUICK_N))
    text = bench.document(run, "TABLE", "SUMMARY", "CONTEXT", 0)
    assert "TABLE" in text and "SUMMARY" in text and "CONTEXT" in text
    assert f"({0} of {len(run.targets)} met)" in text
