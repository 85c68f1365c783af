"""``python -m services.platform.simulator --port N --app APP --secret S --callback URL``.

``--callback`` is where pushes go: the adapter's ``/platform/{app}/push`` URL."""

import argparse

from services.platform.simulator.app import create_app
from shared.simulators import serve


def main() -> None:
    parser = argparse.ArgumentParser(description="Caravan marketplace-platform simulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8094)
    parser.add_argument("--app", required=True, help="the app key pushes are signed for")
    parser.add_argument("--secret", required=True, help="the app's secret")
    parser.add_argument("--sign-method", choices=("hmac-sha256", "md5"), default="hmac-sha256")
    parser.add_argument("--callback", required=True, help="the adapter's push URL")
    args = parser.parse_args()
    serve(
        create_app(args.app, args.secret, args.callback, args.sign_method),
        "platform",
        args.host,
        args.port,
        f" (app {args.app}, pushing to {args.callback})",
    )


if __name__ == "__main__":
    main()
