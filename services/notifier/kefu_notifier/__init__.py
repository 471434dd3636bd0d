"""kefu notifier service."""
