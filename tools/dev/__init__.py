"""Development-only drivers (benchmarks, fuzzing, generated docs): run from a checkout.

Not part of the wheel: pyproject.toml lists the shipped packages explicitly and leaves
``softkey.tools.dev`` (and the VM harness in tools/vm/) out.
"""
