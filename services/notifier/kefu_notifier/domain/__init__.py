"""The notifier's rules in plain Python: deliveries, templates catalogue, anti-spam policies."""
