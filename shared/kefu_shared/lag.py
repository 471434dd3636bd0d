"""Consumer lag per topic and partition, as a Prometheus gauge.

Lag (the broker's end offset minus the group's committed offset) is the first thing an SRE
looks at when a channel falls behind, and FastStream does not export it. The monitor asks the
broker every ``interval`` seconds for each consumer group the service subscribes with.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client import CollectorRegistry, Gauge

log = logging.getLogger(__name__)


class ConsumerLagMonitor:
    def __init__(
        self,
        *,
        bootstrap_servers: str,
        groups: Callable[[], Iterable[str]],
        registry: CollectorRegistry,
        service: str,
        interval_seconds: float = 15.0,
        client_options: Mapping[str, Any] | None = None,
    ) -> None:
        self._bootstrap = bootstrap_servers
        # TLS/SASL like the broker's: ``aiokafka_security_options`` of the service's settings
        # (the runtime passes them); none connects in plaintext.
        self._options = dict(client_options or {})
        self._groups = groups
        self._interval = interval_seconds
        self._service = service
        self.lag = Gauge(
            "kefu_consumer_lag_messages",
            "Messages in a partition not yet committed by the service's consumer group.",
            ["service", "group", "topic", "partition"],
            registry=registry,
        )

    async def measure_once(self) -> dict[tuple[str, str, int], int]:
        admin = AIOKafkaAdminClient(bootstrap_servers=self._bootstrap, **self._options)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap, group_id=None, **self._options
        )
        found: dict[tuple[str, str, int], int] = {}
        # Started inside the try: a refused start (broker down, wrong password) still closes
        # both, instead of leaking a client per failed measurement.
        try:
            await admin.start()
            await consumer.start()
            for group in sorted(set(self._groups())):
                committed = await admin.list_consumer_group_offsets(group)
                if not committed:
                    continue
                ends = await consumer.end_offsets(list(committed))
                for tp, meta in committed.items():
                    lag = max(ends.get(tp, 0) - max(meta.offset, 0), 0)
                    found[(group, tp.topic, tp.partition)] = lag
                    self.lag.labels(self._service, group, tp.topic, str(tp.partition)).set(lag)
        finally:
            await consumer.stop()
            await admin.close()
        return found

    async def run(self) -> None:
        while True:
            try:
                await self.measure_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the broker may be restarting: try again next time
                log.warning("consumer lag not measured: %s", exc)
            await asyncio.sleep(self._interval)
