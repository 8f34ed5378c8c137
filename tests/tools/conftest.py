"""Shared fixtures for the CLI tests."""

from __future__ import annotations

import sys
from pathlib import Path

# Acting as another real uid (tests/security/users.py) for the read-only cases of the CLI matrix.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "security"))
from users import shared_base  # noqa: E402, F401
