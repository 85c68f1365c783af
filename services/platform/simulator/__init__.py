"""A marketplace-platform simulator, its own process over HTTP (``python -m
services.platform.simulator --port N --app APP --secret S --callback URL``): it signs and
pushes orders to the platform adapter, serves the order API and records status callbacks."""
