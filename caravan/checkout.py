"""Where this checkout keeps what ``caravan up`` runs, and how the other commands find the
system it runs: kept apart from caravan/system.py (which starts it, and imports the clients
of Kafka and PostgreSQL) so that every command may read it at no cost."""

import json
import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
CACHE = REPO_ROOT / ".cache"

UP_ENV = CACHE / "up.env.json"
"""Where ``caravan up`` says how to reach the system it runs (Kafka's address and, on a SASL
cluster, the admin's login; the admin's database URL), for the other commands."""


def use_running_system(environ: dict[str, str] | os._Environ[str] = os.environ) -> None:
    """Let a command reach the system ``caravan up`` runs from this checkout, with three
    Kafka nodes (port 19092) or SASL as well: the commands looked for one node on 9092 with
    no login. What the environment names already wins."""
    try:
        env = json.loads(UP_ENV.read_text())
    except (FileNotFoundError, ValueError):
        return
    for name, value in env.items():
        environ.setdefault(name, value)
