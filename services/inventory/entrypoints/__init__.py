"""Inventory service: entrypoints."""
