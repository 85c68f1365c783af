"""A graceful stop ends before its supervisor kills it. A service asked to stop
(:meth:`shared.runtime.Service.serve`) waits, one after the other, for its consumer's last
commit of offsets (:data:`shared.messaging.consumer.COMMIT_SECONDS`), its loops (a claim
handed back, or gateway calls in flight let finish: :mod:`shared.loops`) and meanwhile its
outbox relay's batch under way (its marks committed), its relay's producer
(:data:`shared.messaging.relay.STOP_SECONDS` each) and the export of its last spans
(:data:`shared.telemetry.STOP_SECONDS`), 14 s in all at most; what is left of the 15 s its
supervisor allows is for stopping its Kafka consumer and HTTP server. The last commit was
left out (5 s then: 17 s in all). Killed first, the
texts notifications had in flight are sent again once their lease runs out."""

import inspect
import re
from pathlib import Path

from caravan.system import ServiceProcesses
from shared import loops, telemetry
from shared.messaging import consumer, relay

COMPOSE = Path(__file__).resolve().parents[2] / "infra" / "compose.yaml"
SERVICES = ("orders", "inventory", "payments", "notifications", "platform")
DOCKER_DEFAULT = "10s"  # what Docker waits after SIGTERM before it kills, unless told

STOPPING = (
    consumer.COMMIT_SECONDS
    + max(loops.STOPPING_SECONDS, relay.STOP_SECONDS)  # the loops and the relay's last batch
    + relay.STOP_SECONDS
    + telemetry.STOP_SECONDS
)


def seconds(duration: str) -> float:
    """A Compose duration in seconds (``15s``, ``1m30s``)."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert "".join(n + u for n, u in parts) == duration, duration
    return sum(float(n) * units[u] for n, u in parts)


def blocks(text: str, indent: str) -> dict[str, list[str]]:
    """The keys of ``text`` at ``indent``, each with the lines indented under it."""
    found: dict[str, list[str]] = {}
    lines: list[str] = []
    for line in text.splitlines():
        key = re.match(rf"^{indent}([\w-]+):", line)
        if key is not None:
            found[key[1]] = lines = []
        elif line.startswith(indent + " "):
            lines.append(line.strip())
    return found


def grace(settings: list[str]) -> str | None:
    said = [line.split(":", 1)[1].strip() for line in settings if line.startswith("stop_grace")]
    return said[0] if said else None


def test_caravan_up_waits_longer_than_a_stop_takes() -> None:
    allowed = inspect.signature(ServiceProcesses.stop).parameters["timeout"].default
    assert allowed > STOPPING


def test_compose_waits_longer_than_a_stop_takes() -> None:
    text = COMPOSE.read_text()
    common = grace(blocks(text, "")["x-service"])  # what ``<<: *service`` gives each
    services = blocks(text, "  ")
    allowed = {
        name: grace(services[name]) or (common if "<<: *service" in services[name] else None)
        for name in SERVICES
    }
    too_short = {
        name: said for name, said in allowed.items() if seconds(said or DOCKER_DEFAULT) <= STOPPING
    }
    assert too_short == {}
