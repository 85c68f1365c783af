"""Fuzzing ``orders.requests.v1`` on the real broker: hypothesis makes request payloads,
mostly almost valid (a field of the wrong type, out of range, missing, extra, an envelope
attribute broken, raw bytes). Every one of them is answered (placed, rejected or
dead-lettered with its offset), no consumer crashes, no partition stalls, and a valid
order published after them completes.

(The HTTP API is fuzzed by schemathesis in ``tests/e2e/test_orders_docs.py``.)
"""

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from caravan.reliability.load import publish
from shared.events.orders import E164_PATTERN
from shared.topics import EventType, Topic
from tests.e2e.test_saga import order
from tests.harness import System

EXAMPLES = 120

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)


def almost(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Usually a valid value, sometimes any JSON value at all."""
    return st.one_of(valid, valid, valid, json_values)


buyers = st.fixed_dictionaries(
    {
        "id": almost(st.text(min_size=1, max_size=70)),
        "phone": almost(st.from_regex(E164_PATTERN, fullmatch=True)),
    },
    optional={"locale": almost(st.sampled_from(["zh-CN", "ug-CN", "en", "fr"]))},
)
lines = st.fixed_dictionaries(
    {
        "sku": almost(st.sampled_from(["T-PEPPER", "T-RAISIN", "T-FIG", "NOPE"])),
        "quantity": almost(st.integers(-3, 10_003)),
    }
)
payments = st.fixed_dictionaries(
    {"method": almost(st.sampled_from(["prepaid", "microloan", "cash"]))},
    optional={"term_months": almost(st.integers(-1, 13))},
)
datas = st.fixed_dictionaries(
    {
        "order_ref": almost(st.from_regex(r"FZ-[A-Za-z0-9._:-]{1,30}", fullmatch=True)),
        "buyer": almost(buyers),
        "lines": almost(st.lists(lines, max_size=4)),
        "payment": almost(payments),
    },
    optional={"delivery": json_values, "extra": json_values},
)


def _dumps(value: Any) -> bytes:
    """JSON as a careless producer writes it: big integers, Infinity, lone surrogates."""
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


def envelopes(source: str) -> st.SearchStrategy[bytes]:
    valid = st.fixed_dictionaries(
        {
            "specversion": almost(st.just("1.0")),
            "id": almost(st.builds(lambda: str(uuid.uuid4()))),  # a fresh event each time
            "source": st.just(source),
            "type": almost(st.just(EventType.ORDER_REQUESTED.value)),
            "time": almost(st.just(datetime.now(UTC).isoformat())),
            "data": almost(datas),
        }
    )
    return st.one_of(valid.map(_dumps), valid.map(_dumps), st.binary(max_size=200))


def generate(source: str) -> list[bytes]:
    found: list[bytes] = []

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(envelopes(source))
    def collect(value: bytes) -> None:
        found.append(value)

    collect()
    return found


def answered(caravan: System, source: str) -> tuple[set[str], set[tuple[int, int]]]:
    """Order refs of ``source`` placed or rejected, and (partition, offset) dead-lettered."""
    refs = {
        str(e.data.get("order_ref"))
        for e in caravan.log.events(Topic.ORDER_EVENTS, source=source)
        if e.type in (EventType.ORDER_PLACED.value, EventType.ORDER_REJECTED.value)
    }
    dead = set()
    for record in caravan.log.raw(Topic.ORDER_REQUESTS.dlq):
        headers = {k: v.decode(errors="replace") for k, v in record.headers}
        if headers.get("dlq.topic") == Topic.ORDER_REQUESTS.value:
            dead.add((int(headers["dlq.partition"]), int(headers["dlq.offset"])))
    return refs, dead


async def test_fuzzed_requests_are_all_answered_and_nothing_stalls(caravan: System) -> None:
    assert caravan.producer is not None
    source = f"storefront/fuzz-{uuid.uuid4().hex[:6]}"
    sent: list[tuple[int, int, str | None]] = []
    for value in generate(source):
        meta = await publish(caravan.producer, Topic.ORDER_REQUESTS.value, value, b"fuzz")
        try:
            ref = orjson.loads(value)["data"]["order_ref"]
        except Exception:
            ref = None
        sent.append((meta.partition, meta.offset, ref if isinstance(ref, str) else None))

    def unanswered() -> list[tuple[int, int, str | None]]:
        refs, dead = answered(caravan, source)
        return [(p, o, ref) for p, o, ref in sent if (p, o) not in dead and ref not in refs]

    await caravan.until(
        unanswered,
        lambda missing: f"the fuzzed requests, {len(missing)} never answered: {missing[:5]}",
        90,
        every=0.5,
        ready=lambda missing: not missing,
    )

    after = order()
    await caravan.request(after)
    outcome = await caravan.outcome(await caravan.placed(after.order_ref))
    assert outcome.type == EventType.ORDER_CONFIRMED.value
    caravan.procs.check_alive()
