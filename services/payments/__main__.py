"""Run the payments service: ``python -m services.payments``."""

from services.payments import bootstrap
from shared.main import run

run({"payments": bootstrap})
