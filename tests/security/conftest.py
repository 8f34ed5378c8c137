"""A real `softkey run --transport udp` process for the security tests.

``key_process(tmp_path, ...)`` starts one (optionally through a small wrapper that turns on
DEBUG logging for every logger, and with a chosen umask), waits until its control socket
answers, and stops it at the end of the test. Output goes to files next to the state, so a
test can read everything the process ever printed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from softkey.tools import paths
from softkey.transports import control

REPO = Path(__file__).resolve().parents[2]

# `softkey` with logging.basicConfig(level=DEBUG): everything any logger says reaches stderr.
DEBUG_WRAPPER = """
import logging, sys
logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
from softkey.tools.cli import cli
cli.main(sys.argv[1:], prog_name="softkey")
"""


@dataclass
class KeyProcess:
    proc: subprocess.Popen[bytes]
    state: Path
    socket: Path
    port: int
    stdout: Path
    stderr: Path
    env: dict[str, str] = field(default_factory=dict)

    def cli(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """Another `softkey` verb against this key (it goes through the control socket)."""
        return subprocess.run(
            [sys.executable, "-m", "softkey.tools.cli", *args, "--state", str(self.state)],
            cwd=REPO,
            env={**self.env, **(env or {})},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=False,
            timeout=60,
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def output(self) -> bytes:
        return self.stdout.read_bytes() + self.stderr.read_bytes()


def _wait(condition: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    pause = threading.Event()
    waited = 0.0
    while waited < timeout:
        value = condition()
        if value:
            return value
        pause.wait(0.05)
        waited += 0.05
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def key_process() -> Iterator[Callable[..., KeyProcess]]:
    started: list[KeyProcess] = []

    def start(
        directory: Path,
        *extra: str,
        debug: bool = False,
        umask: int | None = None,
        state_name: str = "key.sqlite3",
    ) -> KeyProcess:
        directory.mkdir(parents=True, exist_ok=True)
        state = directory / state_name
        env = {k: v for k, v in os.environ.items() if not k.startswith("SOFTKEY_")}
        env.update({"XDG_DATA_HOME": str(directory / "xdg"), "PYTHONUNBUFFERED": "1"})
        program = ["-c", DEBUG_WRAPPER] if debug else ["-m", "softkey.tools.cli"]
        stdout, stderr = directory / "run.stdout", directory / "run.stderr"
        args = ["run", "--transport", "udp", "--port", "0", "--state", str(state), *extra]
        with stdout.open("wb") as out, stderr.open("wb") as err:
            proc = subprocess.Popen(
                [sys.executable, *program, *args],
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                preexec_fn=(lambda: os.umask(umask)) if umask is not None else None,  # noqa: PLW1509
            )
        sock = paths.control_socket_path(state)

        def ready() -> dict[str, Any] | None:
            if proc.poll() is not None:
                raise AssertionError(f"softkey run exited {proc.returncode}: {stderr.read_text()}")
            try:
                return control.call(sock, "status")
            except control.ControlError:
                return None

        status = _wait(ready, "softkey run to answer on its control socket")
        key = KeyProcess(proc, state, sock, status["udp"]["port"], stdout, stderr, env)
        started.append(key)
        return key

    yield start
    for key in started:
        key.stop()


# Acting as other uids (users.py); the fixture is registered here for every security test.
sys.path.insert(0, str(Path(__file__).parent))
from users import shared_base  # noqa: E402, F401
