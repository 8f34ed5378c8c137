"""Every verb of `softkey --help` against a matrix of wrong input, as real processes.

The verbs are read from `softkey --help` (and each group's --help), so a new verb is covered
the day it is added. For each (verb, bad input) that applies, the command must: exit 1
(refused) or 2 (usage), print exactly one line on stderr that starts with "Error:", never a
traceback nor the "failed unexpectedly" last-resort line, and leave no new file anywhere under
the data directory, the runtime directory or beside the --state it was given.

Cases that need another user's view of the files (a read-only state, a read-only directory)
run as a real other uid (tests/security/users.py): root ignores file modes.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "security"))
from users import VICTIM, softkey_as  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
CREATING = {"fill", "add-credential", "init", "import", "run"}
PEM = b"""-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgevZzL1gdAFr88hb2
OF/2NxApJCzGCEDdfSp6VQO30hyhRANCAAQRWz+jn65BtOMvdyHKcvjBeBSDZH2r
1RTwjmYSi9R/zpBnuQ4EiMnCqfMPWiZqB4QdbAd0E7oH50VpuZ1P087G
-----END PRIVATE KEY-----
"""


def _softkey(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "softkey.tools.cli", *args],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
        timeout=90,
    )


def _commands(env: dict[str, str], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Leaf commands, from the help texts as a user sees them."""
    text = _softkey(*prefix, "--help", env=env).stdout
    if "Commands:" not in text:
        return [prefix]
    names = re.findall(r"^  ([a-z][a-z0-9-]*)\s", text.split("Commands:", 1)[1], re.M)
    leaves: list[tuple[str, ...]] = []
    for name in names:
        leaves += _commands(env, (*prefix, name))
    return leaves


@dataclass
class World:
    root: Path
    env: dict[str, str]
    pin_key: Path  # a key with PIN 123456
    full_key: Path  # every slot used
    export: Path
    pem: Path
    options: dict[tuple[str, ...], set[str]] = field(default_factory=dict)

    def watched(self) -> set[Path]:
        return {p for p in self.root.rglob("*")}


# What each verb needs so that only the bad input under test can make it fail.
BASE: dict[tuple[str, ...], Callable[[World], list[str]]] = {
    ("fill",): lambda w: ["--count", "1"],
    ("add-credential",): lambda w: ["--rp", "example.com", "--private-key", str(w.pem)],
    ("export",): lambda w: [str(w.root / "out" / "export.json")],
    ("import",): lambda w: [str(w.export)],
    ("credentials", "delete"): lambda w: ["--all", "--yes"],
    ("reset",): lambda w: ["--yes"],
    ("config", "set-min-pin-length"): lambda w: ["8"],
    ("run",): lambda w: ["--transport", "udp", "--port", "0", "--presence", "auto"],
    ("udev",): lambda w: ["--print"],
    ("credentials", "set-properties"): lambda w: ["c0ffee", "--backup-eligible"],
    ("fault", "add"): lambda w: ["bad_signature"],
    ("set-user-verified",): lambda w: ["true"],
}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("matrix")
    (root / "out").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOFTKEY_")}
    env.update(XDG_DATA_HOME=str(root / "data"), XDG_RUNTIME_DIR=str(root / "run"))
    (root / "run").mkdir(mode=0o700)
    keys = root / "keys"
    keys.mkdir(mode=0o700)
    pin_key = keys / "pin.sqlite3"
    assert _softkey("init", "--state", str(pin_key), env=env).returncode == 0
    set_pin = _softkey("pin", "set", "--state", str(pin_key), env={**env, "SOFTKEY_PIN": "123456"})
    assert set_pin.returncode == 0, set_pin.stderr
    full_key = keys / "full.sqlite3"
    filled = _softkey(
        "fill", "--state", str(full_key), "--profile", "nitrokey-fido2", "--until-full", env=env
    )
    assert filled.returncode == 0, filled.stderr
    export = root / "export.json"
    assert _softkey("export", "--state", str(full_key), str(export), env=env).returncode == 0
    pem = root / "key.pem"
    pem.write_bytes(PEM)
    w = World(root, env, pin_key, full_key, export, pem)
    import click

    from softkey.tools.cli import cli

    for command in _commands(env):
        obj: click.Command = cli
        for part in command:
            assert isinstance(obj, click.Group)
            obj = obj.commands[part]
        w.options[command] = {o for p in obj.params for o in getattr(p, "opts", [])}
    return w


@dataclass(frozen=True)
class Case:
    name: str
    args: Callable[[World, tuple[str, ...]], list[str] | None]
    codes: tuple[int, ...] = (1, 2)
    env: dict[str, str] = field(default_factory=dict)


def _has(w: World, command: tuple[str, ...], option: str) -> bool:
    return option in w.options[command]


def _with_base(w: World, command: tuple[str, ...], *extra: str) -> list[str]:
    base = BASE.get(command, lambda _: [])(w)
    return [*command, *extra, *base]


CASES = [
    Case("unknown option", lambda w, c: [*c, "--no-such-option"], (2,)),
    Case(
        "invalid key name",
        lambda w, c: _with_base(w, c, "--key", "../up") if _has(w, c, "--key") else None,
        (2,),
    ),
    Case(
        "missing key",
        lambda w, c: (
            _with_base(w, c, "--key", "nosuch")
            if _has(w, c, "--key") and c[0] not in CREATING
            else None
        ),
        (1,),
    ),
    Case(
        "unknown profile",
        lambda w, c: (
            _with_base(w, c, "--key", "new", "--profile", "bogus")
            if _has(w, c, "--profile") and _has(w, c, "--key")
            else ([*c, "--profile", "bogus"] if _has(w, c, "--profile") else None)
        ),
        (2,),
    ),
    Case(
        "directory as --state",
        lambda w, c: (
            _with_base(w, c, "--state", str(w.root / "out")) if _has(w, c, "--state") else None
        ),
    ),
    Case(
        "missing parent directory",
        lambda w, c: (
            _with_base(w, c, "--state", str(w.root / "nowhere" / "k.sqlite3"))
            if _has(w, c, "--state")
            else None
        ),
    ),
    Case(
        "bad ID prefix",
        lambda w, c: (
            [*c, "--state", str(w.full_key), "no.such", "--yes"]
            if c == ("credentials", "delete")
            else None
        ),
        (2,),
    ),
    Case(
        "wrong PIN",
        lambda w, c: (
            _with_base(w, c, "--state", str(w.pin_key))
            if c in {("fill",), ("pin", "change"), ("pin", "verify")} or c[0] == "config"
            else None
        ),
        (1,),
        {"SOFTKEY_PIN": "000000", "SOFTKEY_NEW_PIN": "24681357"},
    ),
    Case(
        "full slots",
        lambda w, c: (
            _with_base(w, c, "--state", str(w.full_key))
            + (["--resident", "--user-handle", "0102"] if c == ("add-credential",) else [])
            if c in {("fill",), ("add-credential",)}
            else None
        ),
        (1,),
    ),
    Case(
        "no terminal to ask on",
        lambda w, c: {
            ("pin", "set"): [*c, "--state", str(w.full_key)],
            ("pin", "change"): [*c, "--state", str(w.pin_key)],
            ("export",): [
                *c,
                "--state",
                str(w.full_key),
                str(w.root / "out" / "e.json"),
                "--passphrase",
            ],
            ("reset",): [*c, "--state", str(w.full_key)],
            ("credentials", "delete"): [*c, "--state", str(w.full_key), "--all"],
        }.get(c),
        (1,),
    ),
]


def _one_line_error(result: Any) -> None:
    """A CompletedProcess or a users.Outcome: one "Error:" line on stderr, no traceback."""
    out, err = result.stdout, result.stderr
    assert "Traceback" not in out + err
    assert "failed unexpectedly" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), err


def test_the_verbs_come_from_the_help(world: World) -> None:
    names = {" ".join(c) for c in world.options}
    # Spot-check the discovery itself (so an empty matrix cannot pass).
    assert {"info", "fill", "credentials list", "credentials delete", "pin set", "init"} <= names
    assert len(names) >= 20


def test_every_verb_refuses_bad_input_in_one_line_and_leaves_nothing(world: World) -> None:
    runs: list[tuple[str, list[str], Case]] = []
    for command in world.options:
        for case in CASES:
            args = case.args(world, command)
            if args is not None:
                runs.append((" ".join(command), args, case))
    covered = {name for name, _, _ in runs}
    assert covered == {" ".join(c) for c in world.options}  # every verb got at least one case

    before = world.watched()
    snapshot = {p: p.stat().st_mtime_ns for p in before if p.is_file()}

    def attempt(item: tuple[str, list[str], Case]) -> tuple[str, list[str], Case, Any]:
        name, args, case = item
        return name, args, case, _softkey(*args, env={**world.env, **case.env})

    # Cases on the prepared keys may write them (a wrong PIN spends a retry, a refused fill
    # holds the writer lock): run those one after another, or a second writer would rightly
    # say that it waits for the first (a second stderr line). The rest run three at a time.
    keys = str(world.pin_key.parent)
    on_keys = [r for r in runs if any(a.startswith(keys) for a in r[1])]
    others = [r for r in runs if r not in on_keys]
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(attempt, others))
    results += [attempt(r) for r in on_keys]
    failures = []
    for name, args, case, result in results:
        code = result.returncode
        try:
            assert code in case.codes, f"exit {code}"
            _one_line_error(result)
        except AssertionError as exc:
            failures.append(f"{name} [{case.name}] {args}: {exc}\n{result.stderr}")
    assert not failures, "\n".join(failures)
    assert len(runs) >= 60
    after = world.watched()
    assert not after - before, f"new files: {sorted(map(str, after - before))}"
    # The keys the cases were refused on are untouched (but for the PIN key, where a wrong PIN
    # rightly spends a retry, as on a real key).
    for path, mtime in snapshot.items():
        if path.suffix == ".sqlite3" and path != world.pin_key:
            assert path.stat().st_mtime_ns == mtime, path


@pytest.mark.parametrize(
    ("what", "args"),
    [
        ("info on a read-only state", ["info"]),
        ("fill on a read-only state", ["fill", "--count", "1"]),
        ("credentials list on a read-only state", ["credentials", "list"]),
    ],
)
def test_a_read_only_state_of_ones_own_is_one_clear_line(
    shared_base: Path, what: str, args: list[str]
) -> None:
    home = shared_base / f"home-{VICTIM}"
    state = home / "k.sqlite3"
    made = softkey_as(VICTIM, "init", "--state", str(state), home=home)
    assert made.returncode == 0, made.stderr
    state.chmod(0o400)
    result = softkey_as(VICTIM, *args, "--state", str(state), home=home)
    assert result.returncode == 1, result.stderr
    _one_line_error(result)
    assert "read-only for you" in result.stderr and f"chmod 600 {state}" in result.stderr


def test_a_read_only_directory_is_one_clear_line_and_stays_empty(shared_base: Path) -> None:
    home = shared_base / f"home-{VICTIM}"
    directory = home / "ro"
    directory.mkdir(mode=0o500)
    os.chown(directory, VICTIM, VICTIM)
    result = softkey_as(
        VICTIM, "fill", "--count", "1", "--state", str(directory / "k.sqlite3"), home=home
    )
    assert result.returncode == 1, result.stderr
    _one_line_error(result)
    assert "read-only" in result.stderr
    assert list(directory.iterdir()) == []


def test_no_terminal_for_a_pin_is_a_clear_error_not_a_getpass_warning(world: World) -> None:
    result = _softkey("pin", "set", "--state", str(world.full_key), env=world.env)
    assert result.returncode == 1
    assert "GetPassWarning" not in result.stderr
    assert "SOFTKEY_NEW_PIN" in result.stderr and "SOFTKEY_PIN" in result.stderr


def test_json_errors_are_still_one_line_on_stderr_and_nothing_on_stdout(world: World) -> None:
    result = _softkey("info", "--key", "nosuch", "--json", env=world.env)
    assert result.returncode == 1 and result.stdout == ""
    _one_line_error(result)
    status = _softkey("status", "--key", "nosuch", "--json", env=world.env)
    assert status.returncode == 1
    assert json.loads(status.stdout)["running"] is False
