"""Payments service: entrypoints."""
