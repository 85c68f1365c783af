"""Run several services in one process: ``python -m services orders inventory``.

``caravan up --processes N`` starts the services this way; ``python -m services.<name>`` runs
one alone. Each hosted service reads its database URL and Kafka password from
``CARAVAN_DATABASE_URL_<SERVICE>`` and ``CARAVAN_KAFKA_PASSWORD_<SERVICE>``
(``shared.settings.service_settings``)."""

import argparse
import importlib

from services import SERVICES
from shared.main import run

parser = argparse.ArgumentParser(prog="python -m services", description=__doc__.splitlines()[0])
parser.add_argument(
    "names", nargs="+", choices=SERVICES, metavar="SERVICE", help=" ".join(SERVICES)
)
args = parser.parse_args()
if len(set(args.names)) != len(args.names):
    parser.error("each service once")
run({name: importlib.import_module(f"services.{name}.bootstrap") for name in args.names})
