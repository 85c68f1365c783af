"""Run the notifications service: ``python -m services.notifications``."""

from services.notifications import bootstrap
from shared.main import run

run({"notifications": bootstrap})
