"""kefu inquiry service."""
