"""Orders service: domain."""
