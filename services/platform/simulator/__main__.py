"""``python -m services.platform.simulator --port N --app APP --callback URL``, the app's secret
in ``CARAVAN_PLATFORM_SIMULATOR_SECRET`` (or the file ``CARAVAN_PLATFORM_SIMULATOR_SECRET_FILE``
names), or ``--secret S``, which ``ps`` shows every user of the machine.

``--callback`` is where pushes go: the adapter's ``/platform/{app}/push`` URL."""

import argparse

from services.platform.simulator import SECRET_VARIABLE
from services.platform.simulator.app import create_app
from shared.settings import UnreadableSecret, secret_from_env
from shared.simulators import serve


def main() -> None:
    parser = argparse.ArgumentParser(description="Caravan marketplace-platform simulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8094)
    parser.add_argument("--app", required=True, help="the app key pushes are signed for")
    parser.add_argument(
        "--secret",
        help=f"the app's secret, else {SECRET_VARIABLE} (or a file {SECRET_VARIABLE}_FILE"
        " names): given here, `ps` shows it to every user of the machine",
    )
    parser.add_argument("--sign-method", choices=("hmac-sha256", "md5"), default="hmac-sha256")
    parser.add_argument("--callback", required=True, help="the adapter's push URL")
    args = parser.parse_args()
    try:
        secret = args.secret or secret_from_env(SECRET_VARIABLE)
    except UnreadableSecret as exc:
        parser.error(str(exc))
    if not secret:
        parser.error(f"the app's secret is not given: set {SECRET_VARIABLE} (or _FILE)")
    serve(
        create_app(args.app, secret, args.callback, args.sign_method),
        "platform",
        args.host,
        args.port,
        f" (app {args.app}, pushing to {args.callback})",
    )


if __name__ == "__main__":
    main()
