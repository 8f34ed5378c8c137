"""`softkey`: the command-line interface (click).

One click group; each area registers its commands here. Errors a person sees are one
sentence saying what happened and what to do, printed by ``main``; exit codes: 0 ok,
1 operation refused, 2 usage error.
"""

from __future__ import annotations

import sys

import click


class CliError(click.ClickException):
    """An operation was refused or failed; exit status 1."""

    exit_code = 1


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="softkey")
def cli() -> None:
    """softkey: a software FIDO2/CTAP2 security key for Linux."""


@cli.command()
@click.option("--profile", default="nitrokey-fido2", show_default=True,
              help="Profile or preset to tell the story with.")
def demo(profile: str) -> None:
    """Tell the seeds' story: resident slots fill up, reset kills non-resident keys."""
    from tools.demo import run_demo

    run_demo(profile)


def main() -> None:
    try:
        cli(standalone_mode=True)
    except KeyboardInterrupt:  # pragma: no cover - interactive
        sys.exit(130)


if __name__ == "__main__":
    main()
