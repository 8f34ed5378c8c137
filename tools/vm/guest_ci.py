"""Row ci.recipe_c: docs/ci.md's GitHub Actions recipe (c), its shell steps run in the guest.

What a runner gives and the guest has to stand in for, and nothing else:
- `actions/checkout` + `actions/setup-python`: a workspace holding `ci/<the wheel>` (built on
  the host from this checkout) and a Python on PATH whose venv already has softkey's
  dependencies (the guest has no network; `pip install` of the wheel then needs none);
- `sudo`: the guest runs as root, so a pass-through `sudo` first on PATH; USER=root;
- a kernel modules directory for `modprobe`: the guest kernel's modules (already loaded from
  the initramfs) are copied to /lib/modules/VERSION and indexed with depmod;
- the one step that runs *your* browser tests: `npx playwright test --headed` inside it is
  replaced by BROWSER_CHECK (python-fido2 registers and logs in over the key's hidraw node,
  Fido2Server verifies), under the recipe's own `sg softkey -c 'xvfb-run -a ...'` wrapper.
Every other line runs as written, with bash -eo pipefail as Actions does. The guest has no
udevd, so the rule `softkey udev --install` writes is not applied here (root needs none).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ci_recipe import recipe, workflow_steps  # noqa: E402
from rows import RowFailed as Fail  # noqa: E402

YOUR_TESTS = "npx playwright test --headed"

BROWSER_CHECK = r"""
from fido2.client import DefaultClientDataCollector, Fido2Client, UserInteraction
from fido2.hid import CtapHidDevice
from fido2.server import Fido2Server
from fido2.webauthn import (
    PublicKeyCredentialRpEntity, PublicKeyCredentialUserEntity, ResidentKeyRequirement,
    UserVerificationRequirement,
)
DISCOURAGED = UserVerificationRequirement.DISCOURAGED

(device,) = list(CtapHidDevice.list_devices())
client = Fido2Client(
    device, DefaultClientDataCollector("https://example.com"), user_interaction=UserInteraction()
)
server = Fido2Server(PublicKeyCredentialRpEntity(id="example.com", name="Example"))
user = PublicKeyCredentialUserEntity(id=b"ci-user", name="ci", display_name="CI")
options, state = server.register_begin(
    user, resident_key_requirement=ResidentKeyRequirement.REQUIRED, user_verification=DISCOURAGED
)
registration = client.make_credential(options.public_key)
credential = server.register_complete(state, registration).credential_data
request, state = server.authenticate_begin([credential], user_verification=DISCOURAGED)
assertion = client.get_assertion(request.public_key).get_response(0)
server.authenticate_complete(state, [credential], assertion)
print("registered and logged in over", device.descriptor.path)
"""


def _modules_dir(s: Any) -> None:
    version = os.uname().release
    target = Path("/lib/modules") / version / "extra"
    target.mkdir(parents=True, exist_ok=True)
    for ko in (Path(s.config["kernel_dir"]) / "modules").glob("*.ko"):
        (target / ko.name).write_bytes(ko.read_bytes())
    res = subprocess.run(["depmod", version], capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise Fail(f"depmod {version} failed: {res.stderr.strip()}")


def _prepare_workspace(s: Any, work: Path) -> dict[str, str]:
    cfg = s.config["ci_recipe"]
    _modules_dir(s)
    (work / "ci").mkdir(parents=True)
    wheel = Path(cfg["wheel"])
    (work / "ci" / wheel.name).write_bytes(wheel.read_bytes())
    shims = work / ".shims"
    shims.mkdir()
    (shims / "sudo").write_text(
        '#!/bin/sh\n# root in the guest: sudo is a pass-through\nexec "$@"\n'
    )
    (shims / "sudo").chmod(0o755)
    (work / "browser_check.py").write_text(BROWSER_CHECK)
    venv = Path(cfg["venv"])
    return {
        "PATH": f"{shims}:{venv / 'bin'}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin",
        "VIRTUAL_ENV": str(venv),
        "HOME": str(work / "home"),
        "USER": "root",
        "LANG": "C.UTF-8",
        "TMPDIR": "/tmp",
    }


def row_recipe_c(s: Any) -> str:
    if s.device is not None:  # the earlier rows' key: this recipe plugs in its own
        s.device.stop()
    work = Path("/tmp/e2e/ci-recipe")
    env = _prepare_workspace(s, work)
    (work / "home").mkdir()
    steps = workflow_steps(recipe("c"))
    swapped = [st for st in steps if YOUR_TESTS in st.run]
    if len(swapped) != 1:
        raise Fail(f"recipe (c) should have one step running `{YOUR_TESTS}`, has {len(swapped)}")
    failed: str | None = None
    for number, step in enumerate(steps, 1):
        if failed and not step.always:
            s.log(f"-- step {number} skipped after the failure")
            continue
        script = step.run.replace(YOUR_TESTS, "python browser_check.py")
        s.log(f"-- step {number} {step.name or ''}\n{script}")
        started = time.monotonic()
        res = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
            cwd=work, env=env, capture_output=True, text=True, timeout=180,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        seconds = time.monotonic() - started
        s.log(f"exit {res.returncode} after {seconds:.1f} s\n{res.stdout}{res.stderr}")
        if res.returncode != 0 and failed is None:
            title = step.name or step.run.splitlines()[0]
            failed = f"step {number} ({title}) exited {res.returncode}"
    if failed:
        raise Fail(failed + " (see the row log)")

    status = json.loads((work / "softkey-status.json").read_text())
    hidraw = status.get("uhid", {}).get("hidraw")
    if not hidraw:
        raise Fail(f"softkey-status.json names no hidraw node: {status}")
    listed = json.loads((work / "credentials.json").read_text())
    rps = [c["rp_id"] for c in listed.get("credentials", [])]
    if rps != ["example.com"]:
        raise Fail(f"credentials.json lists {rps}, expected the one example.com credential")
    trace = (work / "softkey-trace.log").read_text()
    if "makeCredential rp=example.com" not in trace or "getAssertion rp=example.com" not in trace:
        raise Fail("softkey-trace.log lacks the makeCredential/getAssertion lines")
    pid = int((work / "softkey.pid").read_text())
    for _ in range(100):  # the cleanup step's SIGTERM unplugs and ends softkey run
        if not Path(f"/proc/{pid}").exists():
            break
        time.sleep(0.1)
    else:
        raise Fail(f"softkey run (pid {pid}) still runs after the cleanup step's kill -TERM")
    if os.path.exists(hidraw):
        raise Fail(f"{hidraw} still exists after softkey run ended (not unplugged)")
    return (
        f"{len(steps)} run steps as written (sudo as root); key up at {hidraw} via "
        "`softkey status --wait`; the test step's command swapped for a python-fido2 "
        "register+login under its sg/xvfb-run wrapper; credentials.json and trace checked; "
        "unplugged on kill"
    )
