"""Orders service: entrypoints."""
