"""A local SMS gateway simulator, its own process over HTTP (for development and tests)."""
