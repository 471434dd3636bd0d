"""Translate Kafka messages, HTTP requests and timer ticks into use-case calls."""
