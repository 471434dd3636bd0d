"""Published, versioned event payloads of each kefu service (one module per service)."""
