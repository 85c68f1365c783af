"""Orders service: adapters."""
