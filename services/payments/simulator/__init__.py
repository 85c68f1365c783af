"""A local payment-gateway simulator, its own process over HTTP (``python -m
services.payments.simulator --port N``), for the prepaid adapter
(:mod:`services.payments.adapters.gateway_http`) to talk to in development and tests."""
