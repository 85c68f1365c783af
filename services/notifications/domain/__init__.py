"""Pure domain logic for buyer notifications (SMS encoding and message templates)."""
