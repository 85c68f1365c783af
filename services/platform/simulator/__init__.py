"""A marketplace-platform simulator, its own process over HTTP (``python -m
services.platform.simulator --port N --app APP --callback URL``, the app's secret in
:data:`SECRET_VARIABLE`): it signs and pushes orders to the platform adapter, serves the order
API and records status callbacks."""

SECRET_VARIABLE = "CARAVAN_PLATFORM_SIMULATOR_SECRET"
"""The variable (or ``<it>_FILE``, a file holding it) that gives the simulator its app's
secret: on its command line (``--secret``), ``ps`` shows it to every user of the machine."""
