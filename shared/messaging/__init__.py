"""Reliable messaging: transactional outbox and relay, inbox, consumers with dead letters."""
