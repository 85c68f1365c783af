"""Run the inventory service: ``python -m services.inventory``."""

from services.inventory.bootstrap import bootstrap
from shared.main import run

run({"inventory": bootstrap})
