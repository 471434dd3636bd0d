"""Storage, outgoing messages and metrics: the infrastructure side of the use cases."""
