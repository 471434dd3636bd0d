"""kefu aftersales service."""
