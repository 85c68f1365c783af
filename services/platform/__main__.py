"""Run the platform adapter: ``python -m services.platform``."""

from services.platform import bootstrap
from shared.main import run

run({"platform": bootstrap})
