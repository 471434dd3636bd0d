"""Storage, notifications and metrics: the service's edges to MongoDB, the notifier, Prometheus."""
