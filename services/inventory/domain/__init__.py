"""Inventory service: domain."""
