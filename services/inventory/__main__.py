"""Run the inventory service: ``python -m services.inventory``."""

from services.inventory import bootstrap
from shared.main import run

run({"inventory": bootstrap})
