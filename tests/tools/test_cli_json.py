"""Every `--json` output parses, and carries every field the README documents for it.

The README's list between `<!-- json-fields: begin -->` and `<!-- json-fields: end -->` is
parsed (a bullet per verb: "- `VERB`: `field`, `field` {`nested`}, ..."); each verb is then run
for real and its JSON must contain each named field (at any depth: nested objects and list
items count) plus the common `key`, `state` and `running` at the top.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
PEM = (Path(__file__).parent / "test_cli_matrix.py").read_text().split('PEM = b"""', 1)[1]
PEM = PEM.split('"""', 1)[0]


def documented() -> dict[str, set[str]]:
    text = (REPO / "README.md").read_text()
    block = text.split("<!-- json-fields: begin -->", 1)[1].split("<!-- json-fields: end -->")[0]
    fields: dict[str, set[str]] = {}
    for bullet in re.split(r"\n- ", "\n" + block.strip())[1:]:
        bullet = " ".join(bullet.split())
        # "`pin set`: a, b. `pin change`: c" holds two verbs: split at each "`verb`:".
        parts = re.split(r"(?:^|(?<=\. ))`([a-z][a-z -]*[a-z])`(?: \([^)]*\))?:", bullet)
        for verb, body in zip(parts[1::2], parts[2::2], strict=True):
            body = re.sub(r"\([^)]*\)", "", body)  # value examples and remarks
            body = re.sub(r"\*[^*]*\*", "", body)  # *Changed*: notes
            fields[verb] = set(re.findall(r"`([a-z_0-9]+)`", body))
    return fields


def _keys(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in _keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in _keys(v)}
    return set()


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    root = tmp_path_factory.mktemp("json")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOFTKEY_")}
    env.update(XDG_DATA_HOME=str(root / "data"), XDG_RUNTIME_DIR=str(root / "run"))
    (root / "pem").write_text(PEM)

    def run(*args: str, **extra: str) -> dict[str, Any]:
        result = subprocess.run(
            [sys.executable, "-m", "softkey.tools.cli", *args, "--json"],
            cwd=REPO,
            env={**env, **extra},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
            timeout=90,
        )
        assert "Traceback" not in result.stderr
        document = json.loads(result.stdout)  # parses, whatever the exit status
        assert isinstance(document, dict)
        return document

    k = ["--key", "k"]
    out = {
        "init": run("init", *k),
        "fill": run("fill", *k, "--count", "2"),
        "add-credential": run(
            "add-credential",
            *k,
            "--rp",
            "example.com",
            "--private-key",
            str(root / "pem"),
            "--resident",
            "--user-handle",
            "0a0b",
        ),
        "info": run("info", *k),
        "keys": run("keys"),
        "profiles": run("profiles"),
        "credentials list": run("credentials", "list", *k),
        # WebDriver-style: an imported credential with an ID of our choosing, every stored
        # credential with private keys, and backup flags (tools/webdriver_ops.py).
        "add-credential --credential-id": run(
            "add-credential",
            *k,
            "--rp",
            "example.com",
            "--private-key",
            str(root / "pem"),
            "--credential-id",
            "c0ffee",
        ),
        "credentials list --all": run("credentials", "list", *k, "--all", "--private-keys"),
        "credentials set-properties": run(
            "credentials", "set-properties", *k, "c0ffee", "--backup-eligible"
        ),
        "export": run("export", *k, str(root / "e.json")),
        "import": run("import", "--key", "k2", str(root / "e.json")),
        "attestation export-ca": run("attestation", "export-ca", *k),
        "pin status": run("pin", "status", *k),
        "pin set": run("pin", "set", *k, SOFTKEY_NEW_PIN="24680"),
        "pin verify": run("pin", "verify", *k, SOFTKEY_PIN="24680"),
        "pin change": run("pin", "change", *k, SOFTKEY_PIN="24680", SOFTKEY_NEW_PIN="13579"),
        "config toggle-always-uv": run("config", "toggle-always-uv", *k, SOFTKEY_PIN="13579"),
        "config set-min-pin-length": run(
            "config", "set-min-pin-length", *k, "5", SOFTKEY_PIN="13579"
        ),
        "credentials delete": run("credentials", "delete", *k, "--all", "--yes"),
        "reset": run("reset", *k, "--yes"),
    }
    out.update(_running_key_outputs(env, run))
    return out


def _running_key_outputs(env: dict[str, str], run: Any) -> dict[str, dict[str, Any]]:
    """`run --ready-json`, then status / touch / deny / replug against that running key."""
    from fido2.ctap import CtapError
    from fido2.ctap2 import Ctap2

    from softkey.transports.udp import open_udp_device

    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "softkey.tools.cli",
            "run",
            "--key",
            "r",
            "--transport",
            "udp",
            "--port",
            "0",
            "--presence",
            "wait",
            "--ready-json",
        ],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"softkey run did not come up: {proc.stderr.read()}")
        ready = json.loads(line)
        port = ready["address"]["port"]
        out = {"run": ready, "status": run("status", "--key", "r")}

        def ask() -> None:
            ctap = Ctap2(open_udp_device("127.0.0.1", port, timeout=30))
            with contextlib.suppress(CtapError):
                ctap.make_credential(
                    os.urandom(32),
                    {"id": "example.com"},
                    {"id": b"u", "name": "u"},
                    [{"type": "public-key", "alg": -7}],
                )

        for verb in ("touch", "deny"):
            asking = threading.Thread(target=ask)
            asking.start()
            out[verb] = run(verb, "--key", "r", "--wait", "20")
            asking.join(30)
        out["replug"] = run("replug", "--key", "r")
        # Injected faults and the event log exist only on a running key.
        out["fault add"] = run("fault", "add", "bad_signature", "--key", "r")
        out["fault list"] = run("fault", "list", "--key", "r")
        out["fault clear"] = run("fault", "clear", "--key", "r")
        out["events"] = _event_lines(env, ["--key", "r"])
        return out
    finally:
        proc.terminate()
        proc.wait(30)


def _event_lines(env: dict[str, str], key: list[str]) -> dict[str, Any]:
    """`softkey events --json` prints JSON lines, one object per event: each must parse, and
    the check below looks at them all (the first line's top level has key/state/running)."""
    result = subprocess.run(
        [sys.executable, "-m", "softkey.tools.cli", "events", *key, "--json"],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
        timeout=90,
    )
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines and all(isinstance(line, dict) for line in lines)
    return {**lines[0], "lines": lines}


def test_the_readme_documents_every_json_verb_it_lists(outputs: dict[str, Any]) -> None:
    docs = documented()
    assert len(docs) >= 22
    missing = set(docs) - set(outputs)
    assert not missing, f"documented but not exercised here: {missing}"


@pytest.mark.parametrize("verb", sorted(documented()))
def test_documented_fields_are_in_the_real_output(
    outputs: dict[str, dict[str, Any]], verb: str
) -> None:
    document = outputs[verb]
    if verb not in ("keys", "profiles", "run"):
        assert {"key", "state", "running"} <= set(document), document
    absent = documented()[verb] - _keys(document)
    assert not absent, f"`{verb} --json` lacks documented fields {sorted(absent)}: {document}"


def test_slot_counts_use_one_vocabulary(outputs: dict[str, dict[str, Any]]) -> None:
    for verb, document in outputs.items():
        text = json.dumps(document)
        assert "remaining" not in text, verb
        slots = document.get("resident_credentials")
        if isinstance(slots, dict):
            assert set(slots) == {"used", "capacity", "free"}, verb
