"""Every import of softkey's own code uses the `softkey.` names.

In the checkout the folders authenticator/, transports/ and tools/ sit at the top, so a stray
`from authenticator import ...` would still work here (the current directory is on sys.path)
while it breaks for every installed user, or loads a second copy of a module under another
name. This scan keeps code, tests and docs on the installed names.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
OLD_TOP_LEVEL = {"authenticator", "transports", "tools"}
SKIP_DIRS = {".git", ".venv", "build", "dist", ".hypothesis", ".pytest_cache", "__pycache__"}
DOC_IMPORT = re.compile(
    r"^\s*(?:from|import)\s+(authenticator|transports|tools)\b"
    r"|-m (?:tools|transports|authenticator)\.",
    re.M,
)


def _files(pattern: str) -> list[Path]:
    return [
        p
        for p in REPO.rglob(pattern)
        if not SKIP_DIRS & set(p.relative_to(REPO).parts) and not p.name.endswith(".egg-info")
    ]


def _old_imports(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found += [n for n in names if n.split(".")[0] in OLD_TOP_LEVEL]
    return found


def test_python_sources_import_only_softkey_names() -> None:
    offenders = {}
    sources = _files("*.py")
    assert len(sources) > 50  # the scan sees the project, not an empty tree
    for path in sources:
        found = _old_imports(ast.parse(path.read_text(), str(path)))
        if found:
            offenders[str(path.relative_to(REPO))] = found
    assert offenders == {}


def test_docs_import_only_softkey_names() -> None:
    offenders = {
        str(p.relative_to(REPO)): DOC_IMPORT.findall(p.read_text())
        for p in [*_files("*.md"), REPO / "Makefile"]
        if DOC_IMPORT.search(p.read_text())
    }
    assert offenders == {}


def test_the_scan_catches_an_old_import() -> None:
    assert _old_imports(ast.parse("from authenticator.ctap import Status\nimport tools.cli")) == [
        "authenticator.ctap",
        "tools.cli",
    ]
    assert DOC_IMPORT.search("python -m tools.cli run")


def test_nothing_loaded_under_the_old_names() -> None:
    import softkey.tools.cli  # noqa: F401 - loads the CLI, the transports and the device

    assert OLD_TOP_LEVEL.isdisjoint(sys.modules)
