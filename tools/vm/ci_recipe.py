"""docs/ci.md's recipes as code: the marked code blocks, and the `run:` steps of recipe (c).

Stdlib only (the host side of `make e2e` and the guest both read it). A recipe is the fenced
block right after ``<!-- recipe NAME -->``; tests/packaging runs (a) and (b) from the same
marks, the VM row ci.recipe_c runs (c)'s shell steps.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

CI_DOC = Path(__file__).resolve().parents[2] / "docs" / "ci.md"


def recipe(name: str, doc: Path = CI_DOC) -> str:
    """The code block under ``<!-- recipe NAME -->``, verbatim (with a final newline)."""
    text = doc.read_text()
    m = re.search(rf"<!-- recipe {re.escape(name)} -->\n```[a-z]*\n(.*?)\n```\n", text, re.S)
    if m is None:
        raise LookupError(f"{doc} has no recipe {name!r}")
    return m.group(1) + "\n"


@dataclass(frozen=True)
class Step:
    name: str
    run: str  # the shell script, dedented
    always: bool  # `if: always()`: runs even after a failed step


_STEP = re.compile(r"^(\s*)- ")
_KEY = re.compile(r"^(\s*)(?:- )?(name|run|if|uses|with|env):\s?(.*)$")


def workflow_steps(yaml: str) -> list[Step]:
    """The steps of a GitHub Actions job that have `run:`, in order.

    Reads the subset of YAML docs/ci.md uses: `- name:`, `if:` and `run:` as one line or a
    `|` block; `uses:` steps (checkout, setup-python, upload-artifact) have no shell and are
    left to the caller. Raises ValueError on a `run:` it cannot read (a `${{ }}` expression
    the caller would have to evaluate, for instance).
    """
    lines = yaml.splitlines()
    steps: list[Step] = []
    current: dict[str, str] = {}

    def flush() -> None:
        if "run" in current:
            if "${{" in current["run"]:
                raise ValueError(f"step {current.get('name')!r} uses a ${{{{ }}}} expression")
            always = current.get("if", "").strip() == "always()"
            steps.append(Step(current.get("name", ""), current["run"], always))
        current.clear()

    i = 0
    while i < len(lines):
        line = lines[i]
        if _STEP.match(line) and current:
            flush()
        m = _KEY.match(line)
        if m is None or (m.group(2) in ("with", "env") and not _STEP.match(line)):
            i += 1
            continue
        indent, key, value = m.groups()
        if key == "run" and value.strip() == "|":
            block_indent = None
            body = []
            i += 1
            while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > len(indent)):
                if lines[i].strip():
                    block_indent = block_indent or _indent(lines[i])
                    body.append(lines[i][block_indent:])
                else:
                    body.append("")
                i += 1
            current["run"] = "\n".join(body).strip("\n") + "\n"
            continue
        current[key] = value
        i += 1
    flush()
    return steps


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def pip_packages(steps: list[Step]) -> list[str]:
    """What the steps' `pip install` lines name besides local paths (a wheel, a checkout).

    The VM has no network, so the host puts these into the recipe's venv beforehand; the
    recipe's own `pip install` then finds them satisfied and downloads nothing.
    """
    names: list[str] = []
    for step in steps:
        for line in step.run.splitlines():
            words = line.split()
            if words[:2] != ["pip", "install"]:
                continue
            for word in words[2:]:
                if word.startswith("-") or "/" in word or word.endswith(".whl"):
                    continue
                names.append(word)
    return names
