"""Payments service: domain."""
