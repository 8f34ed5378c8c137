"""The CLI imports a command's module only when it is used: a `softkey run` does not pay for
`softkey udev`, `softkey service` or python-fido2 (cold start, docs/benchmarks.md)."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

from click.testing import CliRunner

from softkey.tools import cli as cli_module
from softkey.tools.run import COMMANDS as RUN_COMMANDS


def test_every_lazy_entry_names_the_command_it_loads() -> None:
    for group, entries in cli_module.LAZY_COMMANDS.items():
        for name, where in entries.items():
            module, _, attribute = where.partition(":")
            command = getattr(importlib.import_module(module), attribute)
            assert command.name == name, (group, name, where)
    # A new control verb in tools/run.py must be registered too.
    assert {c.name for c in RUN_COMMANDS} <= set(cli_module.LAZY_COMMANDS[""])


def test_the_run_path_imports_neither_other_verbs_nor_python_fido2() -> None:
    probe = (
        "import json, sys\n"
        "from softkey.tools.cli import cli\n"
        "assert cli.get_command(None, 'run') is not None\n"
        "import softkey.transports.udp\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = set(json.loads(done.stdout))
    assert "softkey.tools.run" in loaded
    for module in (
        "softkey.tools.udev_setup",
        "softkey.tools.service_cli",
        "softkey.tools.events_cli",
        "softkey.tools.config_cli",
        "softkey.tools.webdriver_cli",
        "softkey.transports.udp_client",
        "fido2",
    ):
        assert module not in loaded, module


def test_help_lists_the_lazy_commands_and_they_run() -> None:
    runner = CliRunner()
    shown = runner.invoke(cli_module.cli, ["--help"])
    assert shown.exit_code == 0
    for name in cli_module.LAZY_COMMANDS[""]:
        assert f"  {name} " in shown.output, name
    pin_help = runner.invoke(cli_module.cli, ["pin", "--help"])
    assert "  verify " in pin_help.output
    udev = runner.invoke(cli_module.cli, ["udev", "--print"])
    assert udev.exit_code == 0 and "uhid" in udev.output


def test_lazy_commands_behave_as_a_dict() -> None:
    commands = cli_module.LazyCommands({}, {"udev": "softkey.tools.udev_setup:udev"})
    assert "udev" in commands and len(commands) == 1
    assert commands.get("nope") is None
    assert commands["udev"].name == "udev"
    assert list(commands) == ["udev"]
