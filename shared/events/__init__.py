"""Event contracts: the CloudEvents envelope and the ``data`` of every event type."""

from shared.events.envelope import CloudEvent, EventData, new_event
from shared.events.registry import REGISTRY, PoisonRecord, parse_record

__all__ = ["REGISTRY", "CloudEvent", "EventData", "PoisonRecord", "new_event", "parse_record"]
