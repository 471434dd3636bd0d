"""Translate Kafka messages, HTTP requests, timer ticks and the command line into use cases."""
