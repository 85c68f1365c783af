"""Run the SMS gateway simulator: ``python -m services.notifications.simulator --port 9099``."""

import argparse

from services.notifications.simulator.app import create_app
from shared.simulators import serve

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--host", default="127.0.0.1")
parser.add_argument("--port", type=int, default=9099)
args = parser.parse_args()
serve(create_app(), "SMS gateway", args.host, args.port)
