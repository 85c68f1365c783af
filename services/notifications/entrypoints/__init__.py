"""Notifications service: entrypoints."""
