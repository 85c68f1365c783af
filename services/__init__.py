"""The services, in the order the saga reaches them (the platform adapter last)."""

SERVICES = ("orders", "inventory", "payments", "notifications", "platform")
