"""`make mutate`: mutation testing of the spec- and security-critical modules (cosmic-ray).

cosmic-ray finds the mutants (its operators: comparisons, numbers, boolean and binary
operators, exceptions ...) and applies each one; this driver decides which run, runs each
module's own tests against it, and reports the score and the surviving mutants with their
diffs. Equivalent mutants (no test could tell them apart: the behaviour is the same) are listed
in tools/dev/mutate-equivalent.txt with the reason, and are left out of the score; so are
mutants inside type annotations, which `from __future__ import annotations` never evaluates.

Safe for a working tree: every mutant is applied to a copy under build/mutate/tree (the three
package folders, tests/ and docs/, with a softkey/ folder of links on PYTHONPATH, so
`softkey.authenticator` is the copy's), never to the checkout.

    python -m softkey.tools.dev.mutate                          # every module, every mutant
    python -m softkey.tools.dev.mutate --modules keywrap,cbor   # some modules
    python -m softkey.tools.dev.mutate --sample 40 --minutes 10 # a time-boxed random sample
"""

from __future__ import annotations

import argparse
import ast
import os
import random
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WORK = ROOT / "build" / "mutate"
EQUIVALENT = Path(__file__).resolve().parent / "mutate-equivalent.txt"

# module -> the tests that own its rules (the whole suite would be minutes per mutant).
TARGETS: dict[str, tuple[str, ...]] = {
    "authenticator/keywrap.py": (
        "tests/authenticator/test_keywrap.py",
        "tests/security/test_credential_ids.py",
    ),
    "authenticator/cbor.py": (
        "tests/authenticator/test_cbor.py",
        "tests/authenticator/test_malformed.py",
        "tests/security/test_cbor_key_types.py",
    ),
    "authenticator/pin.py": (
        "tests/authenticator/test_pin.py",
        "tests/authenticator/test_pin_requests.py",
        "tests/security/test_pin_crash.py",
    ),
    "authenticator/credman.py": ("tests/authenticator/test_credman.py",),
    "authenticator/ctap2.py": (
        "tests/authenticator/test_ctap2.py",
        "tests/authenticator/test_reset.py",
        "tests/authenticator/test_cred_protect.py",
        "tests/authenticator/test_interop.py",
        "tests/security/test_request_field_sizes.py",
    ),
    "authenticator/store.py": (
        "tests/authenticator/test_store.py",
        "tests/authenticator/test_counter.py",
        "tests/authenticator/test_reset.py",
    ),
    "transports/ctaphid.py": (
        "tests/transports/test_ctaphid_engine.py",
        "tests/transports/test_ctaphid_fuzz.py",
        "tests/security/test_ctaphid_peers.py",
    ),
}
COPIED = ("authenticator", "transports", "tools", "tests", "docs")


@dataclass
class Outcome:
    module: str
    killed: int = 0
    survived: list[tuple[str, str, str]] = field(default_factory=list)  # (line:col, op, diff)
    equivalent: int = 0
    in_annotations: int = 0
    not_run: int = 0
    incompetent: int = 0

    @property
    def score(self) -> float | None:
        judged = self.killed + len(self.survived)
        return self.killed / judged if judged else None


def make_tree() -> Path:
    tree = WORK / "tree"
    shutil.rmtree(tree, ignore_errors=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis")
    for name in COPIED:
        shutil.copytree(ROOT / name, tree / name, ignore=ignore)
    shutil.copy(ROOT / "pyproject.toml", tree / "pyproject.toml")
    (tree / "softkey").mkdir()
    for package in ("authenticator", "transports", "tools"):
        (tree / "softkey" / package).symlink_to(Path("..") / package)
    return tree


def load_equivalent() -> set[tuple[str, str, str]]:
    """(module, "line:col", operator) of mutants known to be equivalent (the file's header)."""
    known = set()
    for raw in EQUIVALENT.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        location, operator = line.split()
        module, where = location.split(":", 1)
        known.add((module, where, operator))
    return known


def annotation_spans(path: Path) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Where a module's annotations are, if they are never evaluated (PEP 563)."""
    tree = ast.parse(path.read_text())
    lazy = any(
        isinstance(node, ast.ImportFrom)
        and node.module == "__future__"
        and any(alias.name == "annotations" for alias in node.names)
        for node in tree.body
    )
    if not lazy:
        return []
    spans = []
    for node in ast.walk(tree):
        found: list[ast.expr | None] = []
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            found.append(node.returns)
        elif isinstance(node, ast.arg | ast.AnnAssign):
            found.append(node.annotation)
        for ann in found:
            if ann is not None and ann.end_lineno is not None and ann.end_col_offset is not None:
                spans.append(((ann.lineno, ann.col_offset), (ann.end_lineno, ann.end_col_offset)))
    return spans


def test_command(tests: tuple[str, ...]) -> str:
    return (
        f"{sys.executable} -m pytest -x -q -p no:randomly -p no:cacheprovider "
        f"--timeout 120 {' '.join(tests)}"
    )


def run(args: argparse.Namespace) -> int:
    from cosmic_ray.commands.init import _all_work_items
    from cosmic_ray.mutating import mutate_and_test
    from cosmic_ray.work_item import TestOutcome, WorkerOutcome

    modules = [m for m in TARGETS if not args.modules or Path(m).stem in args.modules]
    if not modules:
        print(f"no such module; choose from {', '.join(Path(m).stem for m in TARGETS)}")
        return 2
    tree = make_tree()
    os.chdir(tree)
    os.environ.update(PYTHONPATH=str(tree), CI="true", PYTHONDONTWRITEBYTECODE="1")
    equivalent = load_equivalent()
    rng = random.Random(args.seed)
    deadline = time.monotonic() + args.minutes * 60 if args.minutes else None
    outcomes = []
    for module in modules:
        outcome = Outcome(module)
        outcomes.append(outcome)
        command = test_command(TARGETS[module])
        baseline = subprocess.run(command.split(), capture_output=True, text=True, check=False)
        if baseline.returncode != 0:
            print(f"{module}: its tests fail without any mutant; fix that first\n"
                  f"{baseline.stdout[-3000:]}")  # fmt: skip
            return 1
        items = list(_all_work_items([Path(module)], {}))
        annotations = annotation_spans(Path(module))
        if args.sample and len(items) > args.sample:
            chosen = set(id(i) for i in rng.sample(items, args.sample))
            outcome.not_run += len(items) - args.sample
            items = [i for i in items if id(i) in chosen]
        print(f"{module}: {len(items)} mutants, tests: {' '.join(TARGETS[module])}", flush=True)
        for number, item in enumerate(items, 1):
            (spec,) = item.mutations
            where = f"{spec.start_pos[0]}:{spec.start_pos[1]}"
            if any(start <= tuple(spec.start_pos) < end for start, end in annotations):
                outcome.in_annotations += 1
                continue
            if (module, where, spec.operator_name) in equivalent:
                outcome.equivalent += 1
                continue
            if deadline is not None and time.monotonic() > deadline:
                outcome.not_run += 1
                continue
            result = mutate_and_test(item.mutations, command, args.timeout)
            if result.worker_outcome == WorkerOutcome.NO_TEST:
                outcome.equivalent += 1  # nothing to mutate at that occurrence
            elif result.test_outcome == TestOutcome.SURVIVED:
                outcome.survived.append((where, spec.operator_name, result.diff or ""))
                print(f"  survived {module}:{where} {spec.operator_name}", flush=True)
            elif result.test_outcome == TestOutcome.INCOMPETENT:
                outcome.incompetent += 1
            else:
                outcome.killed += 1
            if number % 25 == 0:
                print(f"  {number}/{len(items)}", flush=True)
    return report(outcomes, args)


def report(outcomes: list[Outcome], args: argparse.Namespace) -> int:
    print("\nmodule                      killed  survived  score   equivalent  annotation  not run")
    killed = survived = 0
    for o in outcomes:
        score = "   -" if o.score is None else f"{o.score:6.1%}"
        print(f"{o.module:<27} {o.killed:6d}  {len(o.survived):8d}  {score}  {o.equivalent:10d}"
              f"  {o.in_annotations:10d}  {o.not_run:7d}")  # fmt: skip
        killed += o.killed
        survived += len(o.survived)
    total = killed / (killed + survived) if killed + survived else None
    print(f"\nscore: {killed} of {killed + survived} non-equivalent mutants killed"
          + ("" if total is None else f" ({total:.1%}); target 95%: "
             + ("met" if total >= 0.95 else "MISSED")))  # fmt: skip
    if any(o.not_run for o in outcomes):
        print("partial run (--sample / --minutes): the score covers only the mutants run")
    for o in outcomes:
        for where, operator, diff in o.survived:
            print(f"\nsurvivor {o.module}:{where} {operator}\n{diff.strip()}")
    print(f"\nequivalent mutants are listed in {EQUIVALENT.relative_to(ROOT)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--modules",
        type=lambda s: set(s.split(",")),
        default=None,
        help="comma-separated module names (keywrap,pin,...); default: all",
    )
    parser.add_argument(
        "--sample", type=int, default=0, help="run at most N randomly chosen mutants per module"
    )
    parser.add_argument(
        "--minutes",
        type=float,
        default=0,
        help="stop starting new mutants after this long (0: no limit)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of --sample")
    parser.add_argument(
        "--timeout",
        type=float,
        default=300,
        help="seconds one test run may take before it counts as killed",
    )
    args = parser.parse_args(argv)  # fmt: skip
    try:
        import cosmic_ray  # noqa: F401
    except ImportError:
        print("cosmic-ray is not installed: pip install 'cosmic-ray>=8.7' (make mutate does)")
        return 2
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
