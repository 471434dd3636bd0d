"""kefu orders service."""
