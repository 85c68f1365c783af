"""``python -m services.payments.simulator [--host H] [--port N]``: run the simulator."""

import argparse

import uvicorn

from services.payments.simulator.app import create_app


def main() -> None:
    parser = argparse.ArgumentParser(description="Caravan payment-gateway simulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9098)  # beside the SMS one (9099)
    args = parser.parse_args()
    uvicorn.run(
        create_app(),
        host=args.host,
        port=args.port,
        log_level="warning",
        timeout_graceful_shutdown=1,
    )


if __name__ == "__main__":
    main()
