"""kefu feedback service."""
