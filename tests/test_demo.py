"""The README's run command shows a newcomer what kefu does (issue #8).

A smaller day than the default, on the test servers, with the same check a user can ask for
(`kefu run --check`): every service instance handled messages and every KPI in the supervisor's
report has a value. Its own topic prefix, databases, ports and report folder, so it disturbs
neither a developer's running demo nor the other tests.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from kefu_local.infra import Endpoints
from kefu_local.services import LOCAL_SERVICES

DEMO_TIMEOUT_SECONDS = 600


def _free_port_offset() -> int:
    """An offset that moves every demo service onto a free port."""
    for offset in range(20000, 40000, 100):
        ports = [spec.port + offset for spec in LOCAL_SERVICES]
        if all(_free(port) for port in ports):
            return offset
    raise RuntimeError("no free block of ports for the demo services")


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def test_a_small_demo_day_shows_every_service_at_work_and_every_kpi_in_the_report(
    infra: Endpoints, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": infra.kafka_bootstrap,
        "MONGODB_URI": infra.mongodb_uri,
        "COLUMNS": "160",
    }
    kefu = Path(sys.executable).with_name("kefu")
    result = subprocess.run(
        [
            str(kefu),
            "run",
            "--profile",
            "demo-check",
            "--size",
            "80",
            "--check",
            "--port-offset",
            str(_free_port_offset()),
            "--reports",
            str(tmp_path),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT_SECONDS,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "every KPI of the report has a value" in output
    reports = list(tmp_path.glob("kefu-report-*.md"))
    assert len(reports) == 1, output[-2000:]
    report = reports[0].read_text(encoding="utf-8")
    for section in ("## Satisfaction", "## Service levels", "## Peak hours", "## Agents"):
        assert section in report
    assert list(tmp_path.glob("kefu-report-*.html"))
