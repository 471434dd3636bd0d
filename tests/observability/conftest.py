"""Fixtures of the observability tests: Debian's Prometheus tools, found on PATH.

`./kefu` installs the `prometheus` package when it runs as root; elsewhere the tests fail with
the command to run rather than skip, so a missing tool never hides an untested alert rule.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from observability_kit import require_tool


@pytest.fixture(scope="session")
def promtool() -> str:
    return require_tool("promtool")


@pytest.fixture(scope="session")
def prometheus_binary() -> str:
    return require_tool("prometheus")
