"""Adapters: templates on disk, channel providers, the delivery store, metrics."""
