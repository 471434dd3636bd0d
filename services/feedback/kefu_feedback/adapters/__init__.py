"""Storage, notifications, metrics and report rendering: the service's edges."""
