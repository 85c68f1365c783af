"""``caravan audit`` reads the trail through indexes (auth migration 0003) by target, by actor
and by time, not by a scan of every entry: the trail keeps a row per change an operator made
(every cancellation, adjustment and credit change of every season). Read so, each page is still
the newest entries matching, newest first."""

import os
from datetime import UTC, datetime, timedelta
from functools import partial

from caravan import system
from shared.auth.audit import entries
from tests.e2e.test_payments_lists_plan import filled, plans

ENTRIES = int(os.environ.get("CARAVAN_TEST_PLAN_AUDIT", "100000"))
"""Entries, one a minute back from now, entry ``i`` with id ``i``: by one of 20 clerks, on
one of 5,000 lots; the oldest of them by an auditor seen once."""
TARGETS, ACTORS = 5000, 20

FILL = """
insert into auth.audit (id, at, actor, action, target, before, after, detail)
    select i, cast(:now as timestamptz) - (:n - i) * interval '1 minute',
        case when i = 1 then 'auditor' else 'clerk-' || i % 20 end,
        case when i % 3 = 0 then 'credit.adjust' else 'lot.adjust' end,
        'LOT-' || i % 5000, '{"available": 10}', '{"available": 9}',
        '{"reason": "counted again"}'
    from generate_series(1, cast(:n as integer)) as i;
analyze auth.audit
"""


async def test_the_audit_trail_is_read_by_target_actor_and_time_through_indexes(
    infrastructure: system.Infrastructure,
) -> None:
    now = datetime.now(UTC)
    week = now - timedelta(days=7)
    read = partial(entries, limit=100)
    async with filled(infrastructure, "auth", FILL, n=ENTRIES, now=now) as db:
        found = await plans(
            db,
            {
                "a lot's": partial(read, target="LOT-7"),
                "a clerk's": partial(read, actor="clerk-3"),
                "the auditor's, once, at the start": partial(read, actor="auditor"),
                "a day's, a week back": partial(read, since=week - timedelta(days=1), until=week),
                "until a week back": partial(read, until=week),
                "since a week back": partial(read, since=week),
                "a lot's of a week back": partial(read, target="LOT-7", until=week),
                "the newest": read,
            },
        )
    ids = range(1, ENTRIES + 1)
    minute = {i: now - (ENTRIES - i) * timedelta(minutes=1) for i in ids}
    matching = {  # ids in the order of their time
        "a lot's": [i for i in ids if i % TARGETS == 7],
        "a clerk's": [i for i in ids if i % ACTORS == 3 and i != 1],
        "the auditor's, once, at the start": [1],
        "a day's, a week back": [i for i in ids if week - timedelta(days=1) <= minute[i] < week],
        "until a week back": [i for i in ids if minute[i] < week],
        "since a week back": [i for i in ids if minute[i] >= week],
        "a lot's of a week back": [i for i in ids if i % TARGETS == 7 and minute[i] < week],
        "the newest": list(ids),
    }
    for what, want in matching.items():
        rows, more = found[what]
        assert ([r["id"] for r in rows], more) == (want[::-1][:100], len(want) > 100), what
