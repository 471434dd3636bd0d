"""Kafka consumers, HTTP API and background loops: translate, then call a use case."""
