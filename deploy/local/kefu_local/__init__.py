"""kefu local runner."""
