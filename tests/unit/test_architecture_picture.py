"""The README's picture of the services (its mermaid flowchart) shows every event type each
service subscribes to (its `entrypoints/subscribers.py`) on an arrow into that service: the
arrow's label names the type (`payment.voided`, or `voided` after `payment.authorized /`)
or the topic the type is on (`orders.events.v1`: all of them). A subscription added without
its arrow fails here, where a newcomer reading the picture would not know who reads what.
So does docs/architecture.md's table of where each step lives: each type a service subscribes
to is in the "reads" of a row whose handler is that service's."""

import fnmatch
import re

from caravan.checkout import REPO_ROOT
from shared.events.registry import REGISTRY
from shared.topics import SERVICES, EventType

OWNER = {
    "orders": "orders'",
    "inventory": "inventory's",
    "payments": "payments'",
    "notifications": "notifications'",
    "platform": "the platform adapter's",
}
NODE = {"orders": "O", "inventory": "I", "payments": "P", "notifications": "N", "platform": "PA"}
MERMAID = re.compile(r"^```mermaid\n(.*?)^```", flags=re.MULTILINE | re.DOTALL)
ARROW = re.compile(
    r"^\s*(\w+)(?:\[[^\]]*\])?\s+--\s+(\"[^\"]*\"|[^\s\"]+)\s+-->\s+(\w+)", re.MULTILINE
)
TOPIC_OF = {kind: topic.value for topic, kinds in REGISTRY.items() for kind in kinds}


def said(label: str) -> set[str]:
    """The event types and topics an arrow's label names: `order.placed / confirmed` is
    order.placed and order.confirmed; `(sellers' texts)` and the like say nothing."""
    names: set[str] = set()
    for line in label.strip('"').split("<br/>"):
        prefix = ""
        for part in line.split("/"):
            word = re.sub(r"\(.*?\)", "", part).strip()
            if "." in word:
                prefix = word.split(".")[0] + "."
                names.add(word)
            elif prefix and re.fullmatch(r"\w+", word):
                names.add(prefix + word)
    return names


def arrows_into(picture: str) -> dict[str, set[str]]:
    into: dict[str, set[str]] = {}
    for _source, label, target in ARROW.findall(picture):
        into.setdefault(target, set()).update(said(label))
    return into


def subscribed(service: str) -> set[str]:
    text = (REPO_ROOT / "services" / service / "entrypoints" / "subscribers.py").read_text()
    return {EventType[name].value for name in re.findall(r"EventType\.(\w+)", text)}


def unshown(picture: str) -> dict[str, list[str]]:
    into = arrows_into(picture)
    return {
        service: missing
        for service in SERVICES
        if (
            missing := sorted(
                kind
                for kind in subscribed(service)
                if not {kind, TOPIC_OF[kind]} & into.get(NODE[service], set())
            )
        )
    }


def test_every_subscription_has_its_arrow_in_the_readme_picture() -> None:
    found = MERMAID.search((REPO_ROOT / "README.md").read_text())
    assert found is not None
    assert unshown(found.group(1)) == {}


def test_labels_are_read_as_the_picture_means_them() -> None:
    assert said('"payment.authorized / declined<br/>payments.events.v1"') == {
        "payment.authorized",
        "payment.declined",
        "payments.events.v1",
    }
    assert said('"stock.reserved (sellers\' texts)"') == {"stock.reserved"}
    assert arrows_into('    MP[platforms] -- "signed pushes (HTTP)" --> PA[adapter]\n') == {
        "PA": set()
    }
    assert arrows_into("    SF[storefronts] -- orders.requests.v1 --> O\n") == {
        "O": {"orders.requests.v1"}
    }


def steps_table(page: str) -> list[str]:
    """The lines of the page's table of steps (its header ``| step | reads | ...``), without
    the header: the page's other tables (where the code is) say nothing of subscriptions."""
    lines = page.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| step "))
    rows = []
    for line in lines[start + 1 :]:
        if not line.startswith("|"):
            break
        rows.append(line)
    return rows


def unread(table: str) -> dict[str, list[str]]:
    """The types each service subscribes to that no row of ``table`` (markdown) has it read:
    a row's "reads" names the type (`order.*`: every type of orders) and its handler is
    the service's (`payments' on_stock_reserved`)."""
    rows = [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in steps_table(table)
        if line.startswith("| ")
    ]
    missing: dict[str, list[str]] = {}
    for service in SERVICES:
        read = set()
        for row in rows:
            if OWNER[service] in row[2]:
                for kind in re.findall(r"`([a-z]+\.[a-z_*]+)`", row[1]):
                    read |= {t.value for t in EventType if fnmatch.fnmatch(t.value, kind)}
        if left := sorted(subscribed(service) - read):
            missing[service] = left
    return missing


def test_every_subscription_is_a_step_of_the_architecture_table() -> None:
    assert unread((REPO_ROOT / "docs" / "architecture.md").read_text()) == {}


def test_a_step_is_read_only_by_the_service_whose_handler_it_names() -> None:
    table = (
        "| path | what |\n|---|---|\n| `services/` | the services |\n\n"
        "| step | reads | handler | writes | emits |\n"
        "| tell | `order.*`, `payment.voided` | notifications' handlers | x | y |\n"
        "| undo | `order.cancelled` | inventory's `on_order_cancelled` | x | y |\n"
    )
    missing = unread(table)
    assert "stock.reserved" in missing["notifications"]
    assert not {"order.placed", "payment.voided"} & set(missing["notifications"])
    assert "order.cancelled" not in missing["inventory"]
    assert "order.placed" in missing["inventory"]
    assert "payment.voided" in missing["orders"]
