"""``python -m services.payments.simulator [--host H] [--port N]``: run the simulator."""

import argparse

from services.payments.simulator.app import create_app
from shared.simulators import serve


def main() -> None:
    parser = argparse.ArgumentParser(description="Caravan payment-gateway simulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9098)  # beside the SMS one (9099)
    args = parser.parse_args()
    serve(create_app(), "payment gateway", args.host, args.port)


if __name__ == "__main__":
    main()
