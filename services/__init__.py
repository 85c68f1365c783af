"""The services, in the order the saga reaches them (the platform adapter last)."""

from shared.topics import SERVICES

__all__ = ["SERVICES"]
