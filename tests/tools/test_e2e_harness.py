"""The host side of `make e2e` (tools/vm/): the logic that runs without a VM.

The VM run itself is `make e2e`; these tests guard the parts that would otherwise only fail
there: module load order, the honesty of the table, and the guest plan matching rows.py.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

VM_DIR = Path(__file__).resolve().parents[2] / "tools" / "vm"


@pytest.fixture(scope="module")
def vm(monkeypatch_module: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch_module.syspath_prepend(str(VM_DIR))
    for name in ("e2e", "rows", "guest_main", "guest_browser"):
        sys.modules.pop(name, None)
    return importlib.import_module("e2e")


@pytest.fixture(scope="module")
def monkeypatch_module():  # type: ignore[no-untyped-def]
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def _ko(path: Path, depends: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Just enough of a module: .modinfo strings are NUL-separated key=value pairs.
    path.write_bytes(b"\x7fELF...\x00license=GPL\x00depends=" + depends.encode() + b"\x00x")


def test_modules_load_dependencies_first(vm, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    k = tmp_path / "kernel"
    _ko(k / "drivers/virtio/virtio_ring.ko", "")
    _ko(k / "drivers/virtio/virtio.ko", "")
    _ko(k / "drivers/virtio/virtio_pci.ko", "virtio_ring,virtio")
    _ko(k / "net/9p/9pnet.ko", "")
    _ko(k / "net/9p/9pnet_virtio.ko", "9pnet,virtio_ring,virtio")
    _ko(k / "fs/netfs/netfs.ko", "")
    _ko(k / "fs/9p/9p.ko", "9pnet,netfs")
    _ko(k / "fs/overlayfs/overlay.ko", "")
    _ko(k / "drivers/hid/hid.ko", "")
    _ko(k / "drivers/hid/hid-generic.ko", "hid")  # file name with '-', module name with '_'
    _ko(k / "drivers/hid/uhid.ko", "hid")
    order = [name for name, _ in vm.resolve_modules(tmp_path)]
    assert sorted(order) == sorted(set(order)), "a module would be loaded twice"
    for module, deps in {
        "virtio_pci": ["virtio_ring", "virtio"],
        "9pnet_virtio": ["9pnet", "virtio"],
        "9p": ["9pnet", "netfs"],
        "hid_generic": ["hid"],
        "uhid": ["hid"],
    }.items():
        for dep in deps:
            assert order.index(dep) < order.index(module), (dep, module, order)


def test_a_missing_module_is_a_clear_error(vm, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _ko(tmp_path / "kernel/drivers/hid/uhid.ko", "hid")
    with pytest.raises(vm.E2EError, match="kernel module"):
        vm.resolve_modules(tmp_path)


def test_rows_the_guest_never_reported_fail(vm, capsys) -> None:  # type: ignore[no-untyped-def]
    from rows import ROWS

    everything = {r.id: {"id": r.id, "status": "PASS", "detail": "ok"} for r in ROWS}
    assert vm.print_table(everything, "not reached") == 0

    missing_one = dict(everything)
    del missing_one[ROWS[-1].id]
    assert vm.print_table(missing_one, "not reached: the VM timed out") == 1
    assert "not reached: the VM timed out" in capsys.readouterr().out

    # A row the plan does not know is counted as a failure, not ignored.
    extra = dict(everything, surprise={"id": "surprise", "status": "PASS"})
    assert vm.print_table(extra, "not reached") == 1


def test_guest_plan_matches_rows(vm) -> None:  # type: ignore[no-untyped-def]
    import guest_main
    from rows import ROW_IDS

    steps = [step for step in guest_main.plan() if not isinstance(step, guest_main.FreshKey)]
    assert [rid for rid, _, _ in steps] == list(ROW_IDS)


def test_static_busybox_check(vm, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import struct

    # A dynamically linked program (this Python) has a PT_INTERP header: refused.
    assert not vm._is_static_elf(sys.executable)

    def elf(ptypes: list[int]) -> Path:
        header = bytearray(64)
        header[:5] = b"\x7fELF\x02"
        struct.pack_into("<Q", header, 0x20, 64)  # program headers right after the header
        struct.pack_into("<HH", header, 0x36, 56, len(ptypes))
        table = b"".join(struct.pack("<I", t) + bytes(52) for t in ptypes)
        path = tmp_path / f"elf{len(ptypes)}"
        path.write_bytes(bytes(header) + table)
        return path

    assert vm._is_static_elf(elf([1, 1, 4]))  # LOAD, LOAD, NOTE: static
    assert not vm._is_static_elf(elf([6, 3, 1]))  # PHDR, INTERP, LOAD: dynamic


# -- docs/ci.md recipe (c), as the VM row ci.recipe_c reads it ----------------------------------


@pytest.fixture
def ci_recipe(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.syspath_prepend(str(VM_DIR))
    sys.modules.pop("ci_recipe", None)
    return importlib.import_module("ci_recipe")


def test_recipe_c_run_steps_are_read_in_order(ci_recipe) -> None:  # type: ignore[no-untyped-def]
    steps = ci_recipe.workflow_steps(ci_recipe.recipe("c"))
    assert steps[0].run.startswith("pip install ./ci/softkey-")
    plug = next(st for st in steps if st.name == "Plug in a virtual security key")
    lines = plug.run.splitlines()
    assert lines[0] == "sudo modprobe uhid" and lines[-1].startswith("softkey status --key ci")
    tests_step = next(st for st in steps if st.name == "Browser tests")
    assert "xvfb-run -a python -m pytest -q tests/browser" in tests_step.run
    assert [st.always for st in steps] == [False, False, False, True]
    assert "kill -TERM" in steps[-1].run


def test_recipe_c_pip_packages_are_what_the_offline_venv_gets(ci_recipe) -> None:  # type: ignore[no-untyped-def]
    steps = ci_recipe.workflow_steps(ci_recipe.recipe("c"))
    assert ci_recipe.pip_packages(steps) == ["pytest", "playwright"]
    fake = [
        ci_recipe.Step("", "pip install -q ./x.whl requests ../y\necho pip install no\n", False)
    ]
    assert ci_recipe.pip_packages(fake) == ["requests"]


def test_recipe_c_test_file_is_a_pytest_module_for_the_demo_page(ci_recipe) -> None:  # type: ignore[no-untyped-def]
    """The VM runs this block verbatim against tools/vm/rp_demo.html: they must agree."""
    import ast

    source = ci_recipe.recipe("c-test")
    tree = ast.parse(source)
    tests = [
        n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")
    ]
    assert tests == ["test_sign_up_and_sign_in_with_a_security_key"]
    demo = (VM_DIR / "rp_demo.html").read_text()
    for text in (
        "Sign up with a security key",
        "Sign in with a security key",
        'data-testid="status"',
        "Signed up",
        "Signed in as ",
    ):
        assert text in demo, text
    assert "http://localhost:8000/demo" in source


def test_workflow_steps_refuse_expressions_and_skip_uses(ci_recipe) -> None:  # type: ignore[no-untyped-def]
    yaml = (
        "steps:\n  - uses: actions/checkout@v4\n  - name: a\n    run: |\n      echo one\n\n"
        "      echo two\n  - if: always()\n    run: echo three\n"
    )
    steps = ci_recipe.workflow_steps(yaml)
    assert [(st.name, st.run, st.always) for st in steps] == [
        ("a", "echo one\n\necho two\n", False),
        ("", "echo three", True),
    ]
    with pytest.raises(ValueError):
        ci_recipe.workflow_steps("steps:\n  - run: echo ${{ secrets.X }}\n")


def test_docs_e2e_lists_every_row_as_rows_py_says(vm) -> None:  # type: ignore[no-untyped-def]
    """docs/e2e.md's table is generated from tools/vm/rows.py: a row added, renamed or
    reworded there must be regenerated into the doc (`python tools/vm/rows.py`)."""
    import rows

    doc = (VM_DIR.parents[1] / "docs" / "e2e.md").read_text()
    begin = doc.index("<!-- rows: begin")
    block = doc[doc.index("\n", begin) + 1 : doc.index("<!-- rows: end -->")]
    assert block == rows.markdown_table()
    for rid in rows.ROW_IDS:
        assert f"| `{rid}` |" in block


def test_a_missing_host_tool_is_one_line_not_a_traceback(vm, monkeypatch, capsys, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import subprocess

    def ensure_packages(allow_apt: bool) -> None:
        subprocess.run(["softkey-e2e-no-such-tool"], check=False)

    monkeypatch.setattr(vm, "ensure_packages", ensure_packages)
    assert vm.main(["--cache", str(tmp_path), "--no-apt"]) == 2
    out = capsys.readouterr().out
    assert "setup failed: softkey-e2e-no-such-tool is not installed" in out
    assert "Traceback" not in out
