#!/usr/bin/env python3
"""`make e2e`: softkey over real UHID, judged by real clients, inside a qemu VM.

The host kernel here has no CONFIG_UHID, so this boots Debian's own kernel (uhid is a module
there) under qemu TCG with a tiny busybox initramfs. The guest sees the host's root read-only
over 9p with a tmpfs overlay on top, so it runs this very checkout and its .venv, plus the
host's fido2-tools, OpenSSH and Chromium. The guest writes results and logs to a writable 9p
share (a run directory in the cache); this script prints them as a pass/fail table and exits
non-zero if any row failed or never ran.

Stdlib only. Steps (each one says what it does; all downloads are cached):
  1. apt-get install the host packages the VM borrows (skipped when already installed)
  2. apt-get download Debian's kernel image package, keep vmlinuz + the needed modules
  3. build the initramfs (static busybox, modules in dependency order, tools/vm/init.sh);
     for docs/ci.md recipe (c): a wheel of this checkout and an offline venv for it
  4. boot qemu, stream the guest console, collect results from the run directory

See docs/e2e.md.
"""

from __future__ import annotations

import argparse
import gzip
import json
import lzma
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rows import ROW_IDS, ROWS  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent

# Debian package -> a file that proves it is installed (checked before asking apt).
HOST_PACKAGES: dict[str, str] = {
    "qemu-system-x86": "/usr/bin/qemu-system-x86_64",
    "busybox-static": "",  # checked with dpkg: a dynamic busybox would not work in initramfs
    "cpio": "/usr/bin/cpio",
    "fido2-tools": "/usr/bin/fido2-token",
    "openssh-client": "/usr/bin/ssh-keygen",
    "chromium": "/usr/bin/chromium",
    "firefox-esr": "/usr/bin/firefox-esr",  # the second browser (authenticator-rs)
    # desktop.prompt: a notification server and a session bus (dbus-x11 brings dbus-daemon
    # and dbus-send, which dunstctl uses; in one apt run it satisfies dunst's bus dependency)
    "dunst": "/usr/bin/dunst",
    "dbus-x11": "/usr/bin/dbus-launch",
    "xvfb": "/usr/bin/Xvfb",
    "imagemagick": "/usr/bin/import",
    "xdotool": "/usr/bin/xdotool",
    "fonts-dejavu-core": "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "kmod": "/usr/bin/kmod",  # modprobe/depmod: docs/ci.md recipe (c) runs `sudo modprobe uhid`
    "xauth": "/usr/bin/xauth",  # xvfb-run, in recipe (c)
}

# What the guest needs; dependencies are resolved from each module's .modinfo.
WANTED_MODULES = ("virtio_pci", "9pnet_virtio", "9p", "overlay", "hid_generic", "uhid")

DEFAULT_TIMEOUT = 22 * 60  # the whole VM run; the budget is 25 minutes
RUNS_KEPT = 5


STARTED = time.monotonic()


def log(msg: str) -> None:
    print(f"[e2e +{time.monotonic() - STARTED:4.0f}s] {msg}", flush=True)


class E2EError(Exception):
    """A setup step failed; the message says what to do."""


def default_cache() -> Path:
    env = os.environ.get("SOFTKEY_VM_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "softkey-vm"


# -- 1. host packages ---------------------------------------------------------------------------


def _dpkg_installed(pkg: str) -> bool:
    res = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True, check=False
    )
    # "install ok installed"; a package dpkg only remembers reads "unknown ok not-installed",
    # which also ends in "installed" (the bug that left cpio out on a fresh machine).
    return res.returncode == 0 and res.stdout.split() == ["install", "ok", "installed"]


def ensure_packages(allow_apt: bool) -> None:
    missing = [
        pkg
        for pkg, probe in HOST_PACKAGES.items()
        if not (probe and os.path.exists(probe)) and not _dpkg_installed(pkg)
    ]
    if not missing:
        log("host packages: all present")
        return
    if not shutil.which("apt-get"):
        raise E2EError(f"missing packages {missing} and no apt-get: install them by hand")
    if not allow_apt:
        raise E2EError(f"missing packages {missing}; rerun without --no-apt or install them")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    if sudo and not shutil.which("sudo"):
        raise E2EError(f"missing packages {missing}; run as root or install sudo")
    log(f"host packages: installing {' '.join(missing)} (apt-get update first)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (
        [*sudo, "apt-get", "update", "-q"],
        [*sudo, "apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
    ):
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            raise E2EError(f"`{' '.join(cmd)}` failed:\n{res.stdout[-2000:]}{res.stderr[-2000:]}")


# -- 2. kernel --------------------------------------------------------------------------------


def kernel_package() -> str | None:
    """The image package linux-image-amd64 currently points at (None if apt can't say)."""
    res = subprocess.run(
        ["apt-cache", "depends", "linux-image-amd64"], capture_output=True, text=True, check=False
    )
    match = re.search(r"Depends:\s*(linux-image-\S+)", res.stdout)
    return match.group(1) if match else None


def _ko_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    if path.name.endswith(".xz"):
        return lzma.decompress(data)
    if path.name.endswith(".zst"):
        res = subprocess.run(["zstd", "-dc", str(path)], capture_output=True, check=False)
        if res.returncode != 0:
            raise E2EError(f"cannot decompress {path}: install zstd")
        return res.stdout
    return data


def _modinfo_depends(ko: bytes) -> list[str]:
    match = re.search(rb"(?:^|\x00)depends=([^\x00]*)\x00", ko)
    if not match or not match.group(1):
        return []
    return [name.decode() for name in match.group(1).split(b",") if name]


def resolve_modules(moddir: Path) -> list[tuple[str, bytes]]:
    """WANTED_MODULES plus their dependencies, dependencies first: [(name, ko bytes)]."""
    index: dict[str, Path] = {}
    for path in moddir.rglob("*.ko*"):
        name = re.sub(r"\.ko(\.xz|\.zst|\.gz)?$", "", path.name).replace("-", "_")
        index[name] = path
    ordered: list[tuple[str, bytes]] = []
    seen: set[str] = set()

    def visit(name: str, chain: tuple[str, ...]) -> None:
        name = name.replace("-", "_")
        if name in seen:
            return
        if name in chain:
            raise E2EError(f"module dependency cycle: {' -> '.join(chain + (name,))}")
        path = index.get(name)
        if path is None:
            raise E2EError(f"kernel module {name} not found under {moddir}")
        ko = _ko_bytes(path)
        for dep in _modinfo_depends(ko):
            visit(dep, chain + (name,))
        seen.add(name)
        ordered.append((name, ko))

    for want in WANTED_MODULES:
        visit(want, ())
    return ordered


def ensure_kernel(cache: Path) -> Path:
    """Return a directory holding vmlinuz and modules/<name>.ko + modules.order."""
    kroot = cache / "kernel"
    kroot.mkdir(parents=True, exist_ok=True)
    pkg = kernel_package()
    if pkg is None:
        cached = sorted(p for p in kroot.iterdir() if (p / "vmlinuz").exists())
        if not cached:
            raise E2EError(
                "`apt-cache depends linux-image-amd64` names no kernel package and none is "
                "cached: run `apt-get update` (this needs a Debian/Ubuntu amd64 host)"
            )
        log(f"kernel: apt can't say which is current; using cached {cached[-1].name}")
        return cached[-1]
    kdir = kroot / pkg
    if (kdir / "vmlinuz").exists() and (kdir / "modules.order").exists():
        log(f"kernel: {pkg} (cached in {kdir})")
        return kdir
    log(f"kernel: downloading {pkg} with apt-get download")
    with tempfile.TemporaryDirectory(dir=kroot) as tmp:
        res = subprocess.run(
            ["apt-get", "download", pkg], cwd=tmp, capture_output=True, text=True, check=False
        )
        debs = list(Path(tmp).glob("*.deb"))
        if res.returncode != 0 or not debs:
            raise E2EError(f"`apt-get download {pkg}` failed:\n{res.stderr[-2000:]}")
        tree = Path(tmp) / "tree"
        subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(tree)], check=True)
        vmlinuz = sorted(tree.glob("boot/vmlinuz-*"))
        moddirs = sorted(tree.glob("lib/modules/*")) + sorted(tree.glob("usr/lib/modules/*"))
        if not vmlinuz or not moddirs:
            raise E2EError(f"{debs[0].name} has no boot/vmlinuz-* or lib/modules/*")
        modules = resolve_modules(moddirs[0])
        staging = Path(tmp) / "out"
        (staging / "modules").mkdir(parents=True)
        shutil.copy(vmlinuz[0], staging / "vmlinuz")
        order = []
        for name, ko in modules:
            (staging / "modules" / f"{name}.ko").write_bytes(ko)
            order.append(f"{name}.ko")
        (staging / "modules.order").write_text("\n".join(order) + "\n")
        (staging / "version").write_text(moddirs[0].name + "\n")
        if kdir.exists():
            shutil.rmtree(kdir)
        staging.rename(kdir)
    log(f"kernel: {pkg}, modules {' '.join(n for n, _ in modules)}")
    return kdir


# -- 3. initramfs -------------------------------------------------------------------------------


def _is_static_elf(path: str) -> bool:
    """True if the ELF file has no PT_INTERP program header (needs no dynamic loader)."""
    import struct

    with open(path, "rb") as fh:
        head = fh.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2:  # 64-bit ELF only (amd64 hosts)
            return False
        (phoff,) = struct.unpack_from("<Q", head, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", head, 0x36)
        fh.seek(phoff)
        table = fh.read(phentsize * phnum)
    return all(
        struct.unpack_from("<I", table, i * phentsize)[0] != 3  # PT_INTERP
        for i in range(phnum)
    )


def build_initramfs(kdir: Path, work: Path) -> Path:
    busybox = shutil.which("busybox") or "/bin/busybox"
    if not os.path.exists(busybox) or not _is_static_elf(busybox):
        raise E2EError(f"{busybox} is missing or not statically linked: install busybox-static")
    root = work / "initramfs"
    if root.exists():
        shutil.rmtree(root)
    for d in ("bin", "dev", "proc", "sys", "modules"):
        (root / d).mkdir(parents=True)
    shutil.copy(busybox, root / "bin" / "busybox")
    shutil.copy(HERE / "init.sh", root / "init")
    os.chmod(root / "init", 0o755)
    for ko in (kdir / "modules").iterdir():
        shutil.copy(ko, root / "modules" / ko.name)
    shutil.copy(kdir / "modules.order", root / "modules.order")
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    res = subprocess.run(
        ["cpio", "-o", "-H", "newc", "--quiet"],
        cwd=root,
        input="\n".join(files).encode(),
        capture_output=True,
        check=False,
    )
    if res.returncode != 0:
        raise E2EError(f"cpio failed: {res.stderr.decode(errors='replace')}")
    out = work / "initrd.gz"
    out.write_bytes(gzip.compress(res.stdout, compresslevel=1))
    shutil.rmtree(root)
    return out


# -- 3b. what recipe (c) of docs/ci.md installs ---------------------------------------------------

CI_COPY_IGNORE = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", ".hypothesis", ".pytest_cache", "__pycache__"
)


def prepare_ci_recipe(cache: Path) -> dict[str, str]:
    """A wheel of this checkout and a venv holding its dependencies (the guest is offline).

    The row ci.recipe_c runs the recipe's `pip install ./ci/<wheel>` in the guest for real;
    with the dependencies already in the venv it needs no network. The wheel is built from a
    copy of the checkout, so the checkout stays untouched.
    """
    out = cache / "ci-recipe"
    python = REPO / ".venv" / "bin" / "python"
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "softkey"
        shutil.copytree(REPO, source, ignore=CI_COPY_IGNORE, symlinks=True)
        dist = out / "dist"
        shutil.rmtree(dist, ignore_errors=True)
        _checked([str(python), "-m", "build", "--wheel", "--outdir", str(dist), str(source)])
    (wheel,) = dist.glob("softkey-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        meta = zf.read(next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA")))
    deps = [
        line.split(":", 1)[1].strip()
        for line in meta.decode().splitlines()
        if line.startswith("Requires-Dist:") and "extra ==" not in line
    ]
    # ... and what the recipe's own `pip install` names (pytest, playwright): the guest is
    # offline, so they must be there already. Playwright's browsers are not downloaded: the
    # recipe's test drives the system Chromium.
    from ci_recipe import pip_packages, recipe, workflow_steps

    deps += pip_packages(workflow_steps(recipe("c")))
    venv = out / "venv"
    stamp = venv / ".softkey-deps"
    if not stamp.exists() or stamp.read_text() != "\n".join(deps):
        shutil.rmtree(venv, ignore_errors=True)
        _checked([str(python), "-m", "venv", str(venv)])
        _checked([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *deps])
        stamp.write_text("\n".join(deps))
    log(f"recipe (c): {wheel.name}, venv with {', '.join(deps)}")
    return {"wheel": str(wheel), "venv": str(venv)}


def _checked(cmd: list[str]) -> None:
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise E2EError(f"`{shlex.join(cmd)}` failed:\n{res.stdout[-2000:]}{res.stderr[-2000:]}")


# -- 4. run -------------------------------------------------------------------------------------


def new_run_dir(cache: Path) -> Path:
    runs = cache / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    old = sorted(p for p in runs.iterdir() if p.is_dir() and p.name.startswith("run-"))
    for stale in old[: max(0, len(old) - (RUNS_KEPT - 1))]:
        shutil.rmtree(stale, ignore_errors=True)
    run = runs / time.strftime("run-%Y%m%d-%H%M%S")
    run.mkdir()
    (run / "logs").mkdir()
    latest = cache / "latest"
    if latest.is_symlink() or latest.exists():
        latest.unlink()
    latest.symlink_to(run.relative_to(cache))
    return run


def write_guest_entry(run: Path, config: dict) -> None:
    (run / "config.json").write_text(json.dumps(config, indent=2))
    python = REPO / ".venv" / "bin" / "python"
    entry = f"""#!/bin/sh
# Written by tools/vm/e2e.py; runs inside the guest as root.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root TMPDIR=/tmp LANG=C.UTF-8 TERM=dumb
cd {shlex.quote(str(REPO))} || exit 90
exec {shlex.quote(str(python))} -u tools/vm/guest_main.py /e2e-out
"""
    (run / "guest-entry.sh").write_text(entry)


def boot(kdir: Path, initrd: Path, run: Path, timeout: float, memory: int, cpus: int) -> int:
    qemu = shutil.which("qemu-system-x86_64")
    if not qemu:
        raise E2EError("qemu-system-x86_64 not found: apt-get install qemu-system-x86")
    # TCG on purpose: on these machines KVM's -cpu host aborts (MSR 0x10a); see
    # ../shared/notes/uhid-vm.md. TCG with -smp 2 is multi-threaded, fast enough.
    cmd = [
        qemu, "-accel", "tcg", "-m", str(memory), "-smp", str(cpus),
        "-nographic", "-no-reboot", "-nic", "none",
        "-kernel", str(kdir / "vmlinuz"), "-initrd", str(initrd),
        # The checkout's path lets /init keep it visible when it lies under a directory the
        # guest mounts afresh (/tmp, /run): CI clones into such places.
        "-append", f"console=ttyS0 quiet loglevel=3 panic=-1 softkey_checkout={REPO}",
        "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,"
        "multidevs=remap",
        "-virtfs", f"local,path={run},mount_tag=e2eout,security_model=none,multidevs=remap",
    ]  # fmt: skip
    (run / "qemu-cmd.txt").write_text(shlex.join(cmd) + "\n")
    log(f"booting qemu (TCG, {cpus} CPUs, {memory} MiB); console -> {run / 'console.log'}")
    started = time.monotonic()
    with open(run / "console.log", "wb") as console:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        assert proc.stdout is not None
        os.set_blocking(proc.stdout.fileno(), False)
        pending = b""
        while True:
            if time.monotonic() - started > timeout:
                proc.kill()
                proc.wait()
                log(f"VM timed out after {timeout:.0f} s and was killed")
                return -1
            chunk = proc.stdout.read()
            if chunk:
                console.write(chunk)
                console.flush()
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    text = line.decode(errors="replace").rstrip("\r")
                    # The guest marks what is worth showing live; the rest stays in the log.
                    if text.startswith(("E2E ", "e2e-init:")) or "Kernel panic" in text:
                        print(f"  | {text}", flush=True)
            elif proc.poll() is not None:
                break
            else:
                time.sleep(0.2)
    log(f"VM exited with status {proc.returncode} after {time.monotonic() - started:.0f} s")
    return proc.returncode


def read_results(run: Path) -> dict[str, dict]:
    results: dict[str, dict] = {}
    path = run / "results.jsonl"
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            results[rec["id"]] = rec
    return results


def print_table(results: dict[str, dict], why_missing: str) -> int:
    width_id = max(len(r.id) for r in ROWS)
    width_title = max(len(r.title) for r in ROWS)
    failures = 0
    print()
    print(f"{'row':<{width_id}}  {'what':<{width_title}}  result  detail")
    print(f"{'-' * width_id}  {'-' * width_title}  ------  ------")
    for row in ROWS:
        rec = results.get(row.id)
        if rec is None:
            status, detail = "FAIL", why_missing
        else:
            status, detail = rec["status"], rec.get("detail", "")
            if rec.get("seconds") is not None:
                detail = f"{detail} ({rec['seconds']:.1f}s)"
        if status != "PASS":
            failures += 1
        print(f"{row.id:<{width_id}}  {row.title:<{width_title}}  {status:<6}  {detail}")
    unknown = sorted(set(results) - set(ROW_IDS))
    for rid in unknown:  # the guest reported something the plan lacks: count it, loudly
        failures += 1
        print(f"{rid:<{width_id}}  {'(not in rows.py)':<{width_title}}  FAIL    {results[rid]}")
    print()
    passed = len(ROWS) - failures + len(unknown)
    print(f"{passed}/{len(ROWS)} rows passed")
    return failures


def update_docs(run: Path, results: dict[str, dict]) -> None:
    """Copy the run's browser screenshots into docs/ (only from a run where they passed)."""
    copies = {
        "browser-screenshot.png": ("browser.screenshot", "e2e-browser.png"),
        "browser-pin-dialog.png": ("browser.pin_uv", "e2e-browser-pin.png"),
        "firefox-screenshot.png": ("firefox.pin_uv", "e2e-firefox.png"),
    }
    for name, (rid, target) in copies.items():
        if results.get(rid, {}).get("status") == "PASS" and (run / name).exists():
            shutil.copy(run / name, REPO / "docs" / target)
            log(f"copied {name} to docs/{target}")
        else:
            log(f"not copying {name}: row {rid} did not pass")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--cache",
        type=Path,
        default=default_cache(),
        help="VM work dir (default: $SOFTKEY_VM_CACHE or ${XDG_CACHE_HOME:-~/.cache}/softkey-vm)",
    )
    parser.add_argument(
        "--no-apt",
        action="store_true",
        help="never call apt-get install; fail if a package is missing",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help="seconds before the VM is killed (default %(default)s)",
    )
    parser.add_argument("--memory", type=int, default=2048, help="guest MiB")
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--profile", default="ctap2.1", help="softkey profile in the guest")
    parser.add_argument(
        "--device-cmd",
        default=None,
        help="debug: command that creates the UHID device instead of "
        "`softkey run --transport uhid` ({state} is replaced)",
    )
    parser.add_argument(
        "--update-docs",
        action="store_true",
        help="after a run whose browser rows passed, copy its screenshots to docs/",
    )
    parser.add_argument(
        "--wrong-root",
        action="store_true",
        help="check: the relying parties trust another key's attestation root, so the rows "
        "that verify attestation must FAIL (the run exits non-zero)",
    )
    parser.add_argument(
        "--only",
        default=None,
        help="debug: comma-separated row-id prefixes to run; the rest are "
        "reported as FAIL (not run), so a partial run never passes",
    )
    args = parser.parse_args(argv)  # fmt: skip

    started = time.monotonic()
    # TCG speed depends on how busy the host is; say so, it explains slow runs.
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    log(f"host load average (1/5/15 min): {load} on {os.cpu_count()} CPUs")
    cache: Path = args.cache.resolve()
    if not (REPO / ".venv" / "bin" / "python").exists():
        log(f"no {REPO / '.venv'}: run `make venv` (the guest runs softkey from it)")
        return 2
    try:
        cache.mkdir(parents=True, exist_ok=True)
        ensure_packages(allow_apt=not args.no_apt)
        kdir = ensure_kernel(cache)
        initrd = build_initramfs(kdir, cache)
        ci_recipe = prepare_ci_recipe(cache)
        run = new_run_dir(cache)
        log(f"run directory: {run}")
        write_guest_entry(run, {
            "repo": str(REPO),
            "profile": args.profile,
            "device_cmd": shlex.split(args.device_cmd) if args.device_cmd else None,
            "only": args.only.split(",") if args.only else None,
            "wrong_root": args.wrong_root,
            "kernel": (kdir / "version").read_text().strip(),
            "kernel_dir": str(kdir),
            "ci_recipe": ci_recipe,
        })  # fmt: skip
        status = boot(kdir, initrd, run, args.timeout, args.memory, args.cpus)
    except E2EError as exc:
        log(f"setup failed: {exc}")
        return 2
    except FileNotFoundError as exc:  # a host tool a step runs is missing: one line, no trace
        log(
            f"setup failed: {exc.filename or exc} is not installed on this host; install it "
            "(a Debian package of that name usually) or rerun without --no-apt"
        )
        return 2
    results = read_results(run)
    why_missing = "not reached: the VM timed out" if status == -1 else "not reached"
    if results.get("vm.boot") is None:
        why_missing = f"not reached: the guest never started (see {run / 'console.log'})"
    failures = print_table(results, why_missing)
    print(f"logs: {run}/logs/   console: {run / 'console.log'}")
    for extra in ("browser-screenshot.png", "browser-pin-dialog.png", "browser-result.json"):
        if (run / extra).exists():
            print(f"      {run / extra}")
    if args.update_docs:
        update_docs(run, results)
    log(f"total {time.monotonic() - started:.0f} s")
    if args.only:
        log("partial run (--only): never counts as a pass")
        return 1
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
