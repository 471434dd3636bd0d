"""Storage, notifier requests, metrics and packaged data tables."""
