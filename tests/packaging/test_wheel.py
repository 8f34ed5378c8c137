"""softkey as a dependency: the sdist and wheel `python -m build` makes, installed into a fresh
virtualenv beside a relying-party project that has its own `authenticator` and `tools`
packages, and docs/ci.md's recipes (a) and (b) run there exactly as the document gives them.

Slow-ish (two isolated builds and a virtualenv, about a minute): everything is built once per
module. The fresh virtualenv takes softkey's dependencies from the package index, as a user's
would; nothing from this checkout or its .venv is on its path.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]

# docs/ci.md's recipes, read by the same stdlib module the VM row ci.recipe_c uses.
_spec = importlib.util.spec_from_file_location("_ci_recipe", REPO / "tools/vm/ci_recipe.py")
assert _spec is not None and _spec.loader is not None
ci_recipe = sys.modules["_ci_recipe"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ci_recipe)
recipe = ci_recipe.recipe

UDEV_FILES = ("70-softkey-uhid.rules", "softkey-uhid.conf")
COPY_IGNORE = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", ".hypothesis", ".pytest_cache", "__pycache__"
)


def _run(argv: list[str | Path], **kw: Any) -> subprocess.CompletedProcess[str]:
    cmd = [str(a) for a in argv]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kw)
    assert proc.returncode == 0, f"{argv} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """(wheel, sdist, build output) from a copy of the checkout (the repo stays untouched)."""
    work = tmp_path_factory.mktemp("build")
    source = work / "softkey"
    shutil.copytree(REPO, source, ignore=COPY_IGNORE, symlinks=True)
    proc = _run([sys.executable, "-m", "build", "--outdir", work / "dist", source])
    (wheel,) = (work / "dist").glob("softkey-*.whl")
    (sdist,) = (work / "dist").glob("softkey-*.tar.gz")
    return wheel, sdist, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A relying party's repository with its own `authenticator` and `tools` packages."""
    project = tmp_path_factory.mktemp("rp") / "rp"
    for package in ("authenticator", "tools"):
        (project / package).mkdir(parents=True)
        (project / package / "__init__.py").write_text('WHOSE = "the relying party\'s"\n')
    return project


@pytest.fixture(scope="module")
def venv(built: tuple[Path, Path, str], project: Path) -> Path:
    """The project's fresh virtualenv (.venv inside it) with the wheel, pytest, py_webauthn."""
    wheel = built[0]
    env_dir = project / ".venv"
    _run([sys.executable, "-m", "venv", env_dir])
    _run([env_dir / "bin/python", "-m", "pip", "install", "-q", wheel, "pytest", "webauthn"])
    return env_dir


def _env(venv: Path, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["PATH"] = f"{venv / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
    env["XDG_DATA_HOME"] = str(home / "data")
    env["VIRTUAL_ENV"] = str(venv)
    return env


# -- what the wheel holds ------------------------------------------------------------------------


def test_wheel_adds_exactly_one_import_package_and_carries_the_udev_files(built) -> None:
    wheel = built[0]
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {
        "softkey",
        wheel.name.split("-py3")[0] + ".dist-info",
    }
    for name in UDEV_FILES:
        assert f"softkey/tools/udev/{name}" in names
    # Only what users run: no tests, no dev drivers (bench, fuzz), no VM harness.
    packages = {n.rsplit("/", 1)[0] for n in names if n.startswith("softkey/")}
    assert packages == {
        "softkey/authenticator",
        "softkey/transports",
        "softkey/tools",
        "softkey/tools/udev",
        "softkey/playwright",  # transports/playwright_api/ in the checkout
    }
    assert "softkey/transports/webauthn_bridge.js" in names  # the page script it injects
    entry_points = (
        zipfile.ZipFile(wheel)
        .read(next(n for n in names if n.endswith("entry_points.txt")))
        .decode()
    )
    assert "softkey = softkey.tools.cli:main" in entry_points
    assert "softkey = softkey.transports.pytest_plugin" in entry_points


def test_sdist_carries_what_develops_softkey(built) -> None:
    names = set(tarfile.open(built[1]).getnames())
    root = built[1].name.removesuffix(".tar.gz")
    for path in ("tests/packaging/test_wheel.py", "tools/vm/e2e.py", "tools/dev/bench.py",
                 "docs/ci.md", "Makefile", "MANIFEST.in"):  # fmt: skip
        assert f"{root}/{path}" in names


def test_build_prints_no_deprecation_warning(built) -> None:
    assert "deprecat" not in built[2].lower(), built[2]


# -- the wheel in a relying party's project ------------------------------------------------------

RP_OWN_PACKAGES = """
import authenticator
import tools

import softkey.authenticator as softkey_authenticator


def test_own_packages_are_not_shadowed(softkey):
    assert authenticator.WHOSE == "the relying party's" and tools.WHOSE == "the relying party's"
    assert isinstance(softkey.authenticator, softkey_authenticator.Authenticator)
"""


def test_rp_project_with_its_own_authenticator_and_tools_runs_the_recipes(
    project: Path, venv: Path, tmp_path: Path
) -> None:
    tests = project / "tests"
    tests.mkdir()
    (tests / "test_py_webauthn.py").write_text(recipe("a: py_webauthn"))
    (tests / "test_fido2server.py").write_text(recipe("a: Fido2Server"))
    (tests / "test_own_packages.py").write_text(RP_OWN_PACKAGES)

    proc = _run(
        [venv / "bin/python", "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=project,
        env=_env(venv, tmp_path),
    )
    assert re.search(r"^3 passed", proc.stdout, re.M), proc.stdout


def test_installed_cli_prints_the_shipped_udev_files(venv: Path, tmp_path: Path) -> None:
    env = _env(venv, tmp_path)
    rules = _run([venv / "bin/softkey", "udev", "--print"], env=env).stdout
    assert rules == (REPO / "tools/udev/70-softkey-uhid.rules").read_text()
    modules = _run([venv / "bin/softkey", "udev", "--print-modules-load"], env=env).stdout
    assert modules == (REPO / "tools/udev/softkey-uhid.conf").read_text()


def test_recipe_b_runs_as_written(venv: Path, tmp_path: Path) -> None:
    proc = _run(["bash", "-e", "-c", recipe("b")], cwd=tmp_path, env=_env(venv, tmp_path))
    assert "FIDO_2_1" in proc.stdout, proc.stdout + proc.stderr
    trace = (tmp_path / "trace.log").read_text()
    assert "getInfo" in trace  # the key served the request (its own trace says so)


def test_pip_installs_from_a_checkout(built, tmp_path: Path) -> None:
    checkout = built[0].parent.parent / "softkey"  # the copy the wheel was built from
    env_dir = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", env_dir])
    _run([env_dir / "bin/python", "-m", "pip", "install", "-q", checkout])
    env = _env(env_dir, tmp_path)
    code = (
        "import softkey.authenticator, softkey.transports.udp, softkey.playwright; "
        "assert 'navigator.credentials' in softkey.playwright.bridge_script(); "
        "print(softkey.__path__)"
    )
    out = _run([env_dir / "bin/python", "-c", code], cwd=tmp_path, env=env).stdout
    assert "site-packages" in out and str(checkout) not in out  # a real copy, not a link
    rules = _run([env_dir / "bin/softkey", "udev", "--print"], env=env).stdout
    assert rules == (REPO / "tools/udev/70-softkey-uhid.rules").read_text()


def test_pipx_installs_the_cli_from_the_wheel(built, venv: Path, tmp_path: Path) -> None:
    env = _env(venv, tmp_path)
    env.update(PIPX_HOME=str(tmp_path / "pipx"), PIPX_BIN_DIR=str(tmp_path / "bin"))
    _run([venv / "bin/python", "-m", "pip", "install", "-q", "pipx"], env=env)
    _run([venv / "bin/python", "-m", "pipx", "install", built[0]], env=env)
    out = _run([tmp_path / "bin/softkey", "profiles", "--json"], env=env).stdout
    assert '"yubikey-5"' in out
