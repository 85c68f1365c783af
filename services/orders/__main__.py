"""Run the orders service: ``python -m services.orders``."""

from services.orders import bootstrap
from shared.main import run

run({"orders": bootstrap})
