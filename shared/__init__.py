"""Caravan's shared package: contracts, settings and the messaging plumbing every service uses."""
