"""Inventory service: adapters."""
