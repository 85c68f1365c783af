"""Run the SMS gateway simulator: ``python -m services.notifications.simulator --port 9099``."""

import argparse

import uvicorn

from services.notifications.simulator.app import create_app

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--host", default="127.0.0.1")
parser.add_argument("--port", type=int, default=9099)
args = parser.parse_args()
# A request scripted to answer late ("timeout:30") must not hold up a stop, as in the other
# simulators.
uvicorn.run(
    create_app(), host=args.host, port=args.port, log_level="warning", timeout_graceful_shutdown=1
)
