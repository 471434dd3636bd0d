"""An outside system consuming kefu's events, written only against the published contract.

It imports nothing from kefu: a plain Kafka client (aiokafka) and the JSON Schemas that kefu
publishes in ``docs/events/schemas/``. For each record it reads the CloudEvents ``ce_type``
header to route (``kefu.<event type>.v<version>``), checks the envelope, and validates ``data``
against the schema of that type and version, the way a CRM or BI loader would.

    python examples/event_subscriber.py --bootstrap 127.0.0.1:19092 kefu.inquiry.events
"""

from __future__ import annotations

import argparse
import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer
from jsonschema import Draft202012Validator

SCHEMAS = Path(__file__).resolve().parents[1] / "docs" / "events" / "schemas"
ENVELOPE_FIELDS = ("id", "type", "version", "source", "time", "subject", "correlation_id", "data")


@dataclass
class Report:
    valid: list[dict[str, Any]] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)

    def types(self) -> list[str]:
        return [e["type"] for e in self.valid]


def load_validators(directory: Path = SCHEMAS) -> dict[str, Draft202012Validator]:
    """One validator per ``<type>.v<version>``, from the published schema files."""
    return {
        path.name.removesuffix(".json"): Draft202012Validator(json.loads(path.read_text()))
        for path in directory.glob("*.json")
    }


def check(record_value: bytes, headers: dict[str, str], validators: dict[str, Any]) -> str | None:
    """None if the record honours the contract, else what is wrong."""
    ce_type = headers.get("ce_type", "")
    if not ce_type.startswith("kefu."):
        return f"no kefu ce_type header ({ce_type!r})"
    key = ce_type.removeprefix("kefu.")
    validator = validators.get(key)
    if validator is None:
        return f"no published schema for {key}"
    try:
        envelope = json.loads(record_value)
    except ValueError as exc:
        return f"body is not JSON: {exc}"
    missing = [f for f in ENVELOPE_FIELDS if f not in envelope]
    if missing:
        return f"{key}: envelope lacks {missing}"
    if headers.get("ce_id") != envelope["id"] or headers.get("ce_subject") != envelope["subject"]:
        return f"{key}: ce_id/ce_subject headers disagree with the envelope"
    errors = sorted(validator.iter_errors(envelope["data"]), key=lambda e: list(e.path))
    if errors:
        return f"{key}: " + "; ".join(f"{list(e.path)}: {e.message}" for e in errors[:5])
    return None


async def consume(
    bootstrap: str, topics: list[str], *, expect: int, timeout: float = 30.0
) -> Report:
    """Read ``topics`` from the beginning until ``expect`` records (or the timeout)."""
    validators = load_validators()
    consumer = AIOKafkaConsumer(
        *topics, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    report = Report()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        while loop.time() < deadline and len(report.valid) + len(report.invalid) < expect:
            batches = await consumer.getmany(timeout_ms=250)
            for records in batches.values():
                for record in records:
                    headers = {k: v.decode() for k, v in record.headers or ()}
                    problem = check(record.value, headers, validators)
                    if problem:
                        report.invalid.append(problem)
                    else:
                        report.valid.append(json.loads(record.value))
    finally:
        await consumer.stop()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:19092")
    parser.add_argument("--expect", type=int, default=100)
    parser.add_argument("topics", nargs="+")
    args = parser.parse_args()
    report = asyncio.run(consume(args.bootstrap, args.topics, expect=args.expect))
    for event in report.valid:
        print(f"ok       {event['type']} v{event['version']} subject={event['subject']}")
    for problem in report.invalid:
        print(f"INVALID  {problem}")


if __name__ == "__main__":
    main()
