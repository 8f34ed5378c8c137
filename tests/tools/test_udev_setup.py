"""`softkey udev`: the shipped rule prints, parses as udev rules, installs and uninstalls.

Debian 12's udevadm (systemd 252) has no `verify` (systemd 253+), so the rule is checked
against udev(7)'s grammar here, by a checker that is itself shown to reject bad rules.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from softkey.tools.cli import cli

# udev(7): a rule is comma-separated KEY[{attr}] OP "value" pairs; these are the keys it knows.
UDEV_KEYS = {
    "ACTION", "DEVPATH", "KERNEL", "KERNELS", "NAME", "SYMLINK", "SUBSYSTEM", "SUBSYSTEMS",
    "DRIVER", "DRIVERS", "ATTR", "ATTRS", "SYSCTL", "ENV", "CONST", "TAG", "TAGS", "TEST",
    "PROGRAM", "RESULT", "OWNER", "GROUP", "MODE", "SECLABEL", "RUN", "LABEL", "GOTO",
    "IMPORT", "OPTIONS", "WAIT_FOR",
}  # fmt: skip
PAIR = re.compile(r'\s*([A-Z_]+)(\{[^}]+\})?\s*(==|!=|\+=|-=|:=|=)\s*"((?:[^"\\]|\\.)*)"\s*')
MATCH_OPS = {"==", "!="}


def parse_rules(text: str) -> list[list[tuple[str, str, str]]]:
    """Parse udev rules text the way udev(7) describes it; raise ValueError on any bad line."""
    rules = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        pairs = []
        for part in _split_pairs(line):
            m = PAIR.fullmatch(part)
            if m is None:
                raise ValueError(f"line {number}: cannot parse {part!r}")
            key, _, op, value = m.groups()
            if key not in UDEV_KEYS:
                raise ValueError(f"line {number}: unknown key {key}")
            pairs.append((key, op, value))
        if not any(op in MATCH_OPS for _, op, _ in pairs):
            raise ValueError(f"line {number}: a rule without a match applies to every device")
        rules.append(pairs)
    return rules


def _split_pairs(line: str) -> list[str]:
    parts, current, quoted = [], "", False
    for char in line:
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            parts.append(current)
            current = ""
        else:
            current += char
    if quoted:
        raise ValueError(f"unterminated quote in {line!r}")
    return [*parts, current]


def softkey(*args: str) -> object:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_checker_rejects_what_udev_would() -> None:
    for bad in ('KERNEL=="uhid" MODE="0660"', 'KERNEL=="uhid", MODE=0660', 'KERNL=="uhid"',
                'MODE="0660"', 'KERNEL=="uhid'):  # fmt: skip
        with pytest.raises(ValueError):
            parse_rules(bad)


def test_print_is_the_shipped_rule_and_parses_as_udev_rules() -> None:
    result = softkey("udev", "--print")
    assert result.exit_code == 0
    rules = parse_rules(result.output)
    by_match = {tuple(sorted((k, v) for k, op, v in r if op == "==")): r for r in rules}
    uhid = by_match[(("KERNEL", "uhid"), ("SUBSYSTEM", "misc"))]
    assert ("MODE", "=", "0660") in uhid and ("TAG", "+=", "uaccess") in uhid
    hidraw = by_match[(("KERNELS", "0003:1209:5A5A.*"), ("SUBSYSTEM", "hidraw"))]
    assert ("GROUP", "=", "softkey") in hidraw
    assert softkey("udev").output == result.output  # --print is the default


def test_print_modules_load() -> None:
    result = softkey("udev", "--print-modules-load")
    lines = [x for x in result.output.splitlines() if x.strip() and not x.startswith("#")]
    assert lines == ["uhid"]


def test_install_and_uninstall_under_a_root(tmp_path: Path) -> None:
    result = softkey("udev", "--install", "--root", str(tmp_path))
    assert result.exit_code == 0, result.output
    rule = tmp_path / "etc/udev/rules.d/70-softkey-uhid.rules"
    conf = tmp_path / "etc/modules-load.d/softkey-uhid.conf"
    assert rule.read_text() == softkey("udev", "--print").output
    assert conf.read_text() == softkey("udev", "--print-modules-load").output
    assert rule.stat().st_mode & 0o777 == 0o644
    assert sorted(os.listdir(rule.parent)) == [rule.name]  # no temp file left behind

    result = softkey("udev", "--uninstall", "--root", str(tmp_path))
    assert result.exit_code == 0
    assert not rule.exists() and not conf.exists()


def test_install_replaces_a_planted_symlink_instead_of_writing_through_it(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    rules_dir = tmp_path / "root/etc/udev/rules.d"
    rules_dir.mkdir(parents=True)
    (rules_dir / "70-softkey-uhid.rules").symlink_to(victim)
    assert softkey("udev", "--install", "--root", str(tmp_path / "root")).exit_code == 0
    assert victim.read_text() == "precious\n"
    assert not (rules_dir / "70-softkey-uhid.rules").is_symlink()


def test_install_on_the_live_system_needs_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    result = softkey("udev", "--install")
    assert result.exit_code == 1
    assert "needs root" in result.output and "sudo " in result.output
    assert "udev --install" in result.output


def test_one_action_at_a_time() -> None:
    assert softkey("udev", "--install", "--uninstall").exit_code == 2


def test_sudo_hint_names_the_running_softkey_by_its_full_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # sudo's PATH rarely reaches a virtualenv: the hint must work when pasted as it is.
    from softkey.tools import udev_setup

    exe = tmp_path / "venv" / "bin" / "softkey"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\n")
    monkeypatch.setattr("sys.argv", [str(exe), "run"])
    assert udev_setup.sudo_hint() == f"sudo {exe} udev --install"
    assert udev_setup.sudo_hint("--uninstall").endswith("udev --uninstall")
