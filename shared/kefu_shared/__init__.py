"""kefu shared kernel."""
