"""Row ci.recipe_c: docs/ci.md's GitHub Actions recipe (c), its shell steps run in the guest.

What a runner gives and the guest has to stand in for, and nothing else:
- `actions/checkout` + `actions/setup-python`: a workspace holding `ci/<the wheel>` (built on
  the host from this checkout) and the recipe's browser test file (the `c-test` block of
  docs/ci.md, verbatim, as tests/browser/test_security_key.py), and a Python on PATH whose venv
  already has softkey's dependencies and the packages the recipe's `pip install` names (the
  guest has no network; `pip install` then needs none);
- `sudo`: the guest runs as root, so a pass-through `sudo` first on PATH; USER=root;
- a kernel modules directory for `modprobe`: the guest kernel's modules (already loaded from
  the initramfs) are copied to /lib/modules/VERSION and indexed with depmod;
- your site: the recipe's test opens http://localhost:8000/demo, which this row serves (the
  relying party of guest_browser.py: a sign-up and a sign-in button, both ceremonies verified
  by python-fido2's Fido2Server) for the length of the steps.
Every step runs as written, the test step included (Playwright for Python drives the system
Chromium, headed under the recipe's own `sg softkey -c 'xvfb-run -a ...'`), with bash -eo
pipefail as Actions does. The guest has no udevd, so the rule `softkey udev --install` writes
is not applied here (root needs none).
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

TEST_FILE = Path("tests/browser/test_security_key.py")


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
    (work / TEST_FILE).parent.mkdir(parents=True)
    (work / TEST_FILE).write_text(recipe("c-test"))
    # Debian's /usr/bin/chromium adds the flags files in /etc/chromium.d/ set (the guest's /etc
    # is its own overlay): Chromium's device log, with its FIDO lines, on stderr.
    Path("/etc/chromium.d/zz-softkey-e2e-logging").write_text(
        'export CHROMIUM_FLAGS="$CHROMIUM_FLAGS --enable-logging=stderr '
        '--vmodule=device_event_log*=1"\n'
    )
    venv = Path(cfg["venv"])
    return {
        "PATH": f"{shims}:{venv / 'bin'}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin",
        "VIRTUAL_ENV": str(venv),
        "HOME": str(work / "home"),
        "USER": "root",
        "LANG": "C.UTF-8",
        "TMPDIR": "/tmp",
        # Diagnostics only, as a runner's job-level `env:` would set: Playwright copies the
        # browser's stderr into the test's output, where the FIDO log lines enabled in
        # /etc/chromium.d (below) say what Chromium's WebAuthn code did.
        "DEBUG": "pw:browser",
    }


def row_recipe_c(s: Any) -> str:
    s.end_group()  # an earlier browser or RP server must not hold the display or port 8000
    if s.device is not None:  # the earlier rows' key: this recipe plugs in its own
        s.device.stop()
    work = Path("/tmp/e2e/ci-recipe")
    env = _prepare_workspace(s, work)
    (work / "home").mkdir()
    steps = workflow_steps(recipe("c"))
    import guest_browser

    site = guest_browser.BrowserRun(
        s.out, s.out / "logs" / "rp-server-recipe.log", name="Chromium (Playwright)",
        result_file="recipe-result.json",
    )  # fmt: skip
    s.cleanups.append(site.stop)
    site.serve(None, None)
    failed: str | None = None
    for number, step in enumerate(steps, 1):
        if failed and not step.always:
            s.log(f"-- step {number} skipped after the failure")
            continue
        script = step.run
        s.log(f"-- step {number} {step.name or ''}\n{script}")
        started = time.monotonic()
        res = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
            cwd=work, env=env, capture_output=True, text=True, timeout=600,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        seconds = time.monotonic() - started
        s.log(f"exit {res.returncode} after {seconds:.1f} s\n{res.stdout}{res.stderr}")
        if res.returncode != 0 and failed is None:
            title = step.name or step.run.splitlines()[0]
            failed = f"step {number} ({title}) exited {res.returncode}"
    site.stop()
    if failed:
        raise Fail(failed + " (see the row log)")
    signed_up = site.result.get("register_none", {})
    signed_in = site.result.get("login", {})
    if not signed_up.get("verified") or not signed_in.get("verified"):
        raise Fail(f"the site did not verify a sign-up and a sign-in: {site.result}")

    status = json.loads((work / "softkey-status.json").read_text())
    hidraw = status.get("uhid", {}).get("hidraw")
    if not hidraw:
        raise Fail(f"softkey-status.json names no hidraw node: {status}")
    listed = json.loads((work / "credentials.json").read_text())
    rps = [c["rp_id"] for c in listed.get("credentials", [])]
    if "credentials" not in listed or rps:
        # The demo's credential is non-resident (see rp_demo.html): it takes no slot.
        raise Fail(f"credentials.json lists {rps or listed}, expected no resident credential")
    trace = (work / "softkey-trace.log").read_text()
    if "makeCredential rp=localhost" not in trace or "getAssertion rp=localhost" not in trace:
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
        f"{len(steps)} run steps and the test file as written (sudo as root); key up at "
        f"{hidraw} via `softkey status --wait`; Playwright with the system Chromium headed "
        "under xvfb-run signed up and signed in on the demo site, "
        "Fido2Server verified both; the trace shows the makeCredential and getAssertion for "
        "localhost, credentials.json (no resident one) was written; unplugged on kill"
    )
