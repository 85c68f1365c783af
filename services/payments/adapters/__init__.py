"""Payments service: adapters."""
