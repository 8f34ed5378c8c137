"""An export file is untrusted input: its scrypt header must not make softkey allocate without
bound, and key-derivation failures are one-line errors (issue: local trust boundary, Low)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from softkey.authenticator import Authenticator
from softkey.tools import state_export

REPO = Path(__file__).resolve().parents[2]


def _encrypted_export(tmp_path: Path) -> Path:
    state = tmp_path / "key.sqlite3"
    Authenticator(state=state).close()
    out = tmp_path / "enc.json"
    state_export.export_state(state, out, passphrase="pw")
    return out


def test_new_exports_use_at_least_n_2_17(tmp_path: Path) -> None:
    header = json.loads(_encrypted_export(tmp_path).read_text())["encryption"]
    assert header["n"] >= 2**17 and header["r"] >= 8
    assert 128 * header["r"] * header["n"] <= state_export.MAX_SCRYPT_MEMORY


@pytest.mark.parametrize(
    ("n", "r", "p", "words"),
    [
        (2**30, 8, 1, "MiB of memory"),  # 128 GiB: once a MemoryError traceback
        (2**18, 16, 1, "MiB of memory"),  # 512 MiB: just over the bound
        (2**20, 8, 1, "MiB of memory"),
        (3, 8, 1, "malformed"),  # not a power of two
        (True, 8, 1, "malformed"),  # a JSON true is not the number 1
        ("16384", 8, 1, "malformed"),
    ],
)
def test_unreasonable_kdf_headers_are_refused_before_deriving(
    tmp_path: Path, n: object, r: int, p: int, words: str
) -> None:
    export = _encrypted_export(tmp_path)
    doc = json.loads(export.read_text())
    doc["encryption"].update(n=n, r=r, p=p)
    export.write_text(json.dumps(doc))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOFTKEY_")}
    env["SOFTKEY_PASSPHRASE"] = "pw"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "softkey.tools.cli",
            "import",
            "--state",
            str(tmp_path / "new"),
            str(export),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 1, result.stderr
    assert words in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "new").exists()


def test_kdf_failure_is_an_export_error_not_a_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    class Exploding:
        def __init__(self, **kwargs: object) -> None:
            pass

        def derive(self, data: bytes) -> bytes:
            raise MemoryError

    monkeypatch.setattr(state_export, "Scrypt", Exploding)
    with pytest.raises(state_export.ExportError, match="cannot derive"):
        state_export._kdf("pw", b"s" * 16, 2**14, 8, 1)
