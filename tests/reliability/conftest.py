"""Fixtures of the reliability tests: Kafka and FerretDB of their own (the ``faults`` profile,
so stopping them disturbs no other test), and a fleet of the five services as processes per
module (a crash test's backlog must not slow the next module's outcomes down)."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from kefu_local.infra import LocalInfra

from .fleet import Fleet, delete_topics, faults_infra

# aiokafka logs every failed reconnect while a broker is down on purpose.
logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


@pytest.fixture(scope="package")
def faults() -> Iterator[LocalInfra]:
    infra = faults_infra()
    infra.up()
    started_here = bool(infra.started)
    try:
        yield infra
    finally:
        if started_here and not os.environ.get("KEFU_KEEP_TEST_INFRA"):
            infra.down()


@pytest.fixture(scope="module")
def fleet(faults: LocalInfra) -> Iterator[Fleet]:
    workdir = Path(tempfile.mkdtemp(prefix="kefu-reliability-"))
    fleet = Fleet(faults.endpoints, workdir)
    try:
        fleet.start_all()
        fleet.wait_ready(timeout=300)
        yield fleet
    finally:
        fleet.stop_all()
        fleet.drop_databases()
        asyncio.run(delete_topics(faults.endpoints.kafka_bootstrap, fleet.prefix))
        shutil.rmtree(workdir, ignore_errors=True)
