"""A service built on the kernel answers health, readiness, metrics and AsyncAPI over HTTP."""

import asyncio
from typing import Any, ClassVar

from kefu_local.pytest_plugin import running
from kefu_shared.envelope import Envelope, EventData
from kefu_shared.http import create_http_app
from kefu_shared.runtime import build_runtime
from kefu_shared.settings import ServiceSettings
from kefu_shared.testing import eventually


class Greeted(EventData):
    event_type: ClassVar[str] = "hello.greeted"
    topic: ClassVar[str] = "kefu.hello.events"
    subject_field: ClassVar[str] = "customer_id"
    customer_id: str


async def test_a_kernel_service_answers_health_readiness_metrics_and_asyncapi(
    service_overrides: dict[str, Any],
) -> None:
    settings = ServiceSettings(**service_overrides)
    runtime = build_runtime("hello", settings)
    greeted: list[str] = []

    async def greet(event: Envelope[Greeted]) -> None:
        greeted.append(event.data.customer_id)

    runtime.subscribe("kefu.hello.in", greet)
    loop_runs: list[str] = []
    closed: list[bool] = []

    async def flaky_timer_loop() -> None:
        loop_runs.append("run")
        if len(loop_runs) == 1:
            raise RuntimeError("first scan hit a bad document")
        await asyncio.sleep(3600)

    async def close_clients() -> None:
        closed.append(True)

    runtime.background.append(flaky_timer_loop)
    runtime.on_shutdown.append(close_clients)

    app = create_http_app(runtime)
    async with running(app) as http:
        assert (await http.get("/healthz")).json() == {"status": "ok", "service": "hello"}
        ready = await http.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {"kafka": True, "mongodb": True, "started": True}

        env = Envelope.wrap(Greeted(customer_id="c-1"), source="test")
        await runtime.broker.publish(env.kafka_body(), topic=runtime.topic("kefu.hello.in"))

        async def handled() -> bool:
            return greeted == ["c-1"]

        await eventually(handled)

        async def restarted() -> bool:
            return len(loop_runs) == 2

        await eventually(restarted, timeout=5)  # a crashed background loop comes back
        metrics = (await http.get("/metrics")).text
        assert 'faststream_received_messages_total{app_name="kefu-hello"' in metrics
        assert "kefu_outbox_backlog_documents" in metrics
        assert "process_resident_memory_bytes" in metrics
        assert (
            'kefu_http_requests_total{method="GET",route="/healthz",service="hello",status="200"}'
            in metrics
        )
        await http.get("/no/such/path/12345")
        metrics = (await http.get("/metrics")).text
        assert 'route="unmatched"' in metrics
        assert "12345" not in metrics  # raw paths never become label values

        spec = (await http.get("/asyncapi.json")).json()
        assert spec["asyncapi"].startswith("3.0")
        assert any("hello.in" in name for name in spec["channels"])
        assert (await http.get("/asyncapi")).status_code == 200

        response = await http.get("/healthz", headers={"X-Correlation-Id": "journey-42"})
        assert response.headers["X-Correlation-Id"] == "journey-42"

    # After shutdown the service reports itself not ready rather than crashing.
    assert (await runtime.readiness())["started"] is False
    assert closed == [True]
