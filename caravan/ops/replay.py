"""Rewinding a consumer group on one topic so that its service reads records again.

Safe by construction: every handler deduplicates by event id (the inbox, which keeps the
ids longer than Kafka keeps the records: shared/messaging/retention.py), so a replay
re-reads and changes nothing that was already done; it is how operations make a service
catch up on records it skipped or dead-lettered before a fix.

A rewind is refused while the group has active members (Kafka would refuse the commit, and
the service would overwrite it), each named by its client id and host, and while Kafka
cannot say whether it has any (its coordinator loading the group, or the group moving); for
a group that has never committed an offset on the topic: a mistyped group, or one whose
service does not read the topic, would otherwise be "rewound" and nothing would happen
(the refusal names the groups that do read it; ``force`` sets the offsets anyway: a group
whose offsets Kafka expired after it stayed empty for ``offsets.retention.minutes``, seven
days by default); and where it would move a partition *forward*, past records the group has not
read yet (an offset or a time after where the group is; where it never committed, its
service would start at the partition's beginning), which would skip them unhandled, unless
``allow_skip``. A refusal names every reason that stands in the way, each with what lifts
it (a dry run, what a run would be refused for): ``force`` lifting one, the operator went
on to meet the next.

A rewind is recorded in the audit trail (PostgreSQL), and refused while the trail cannot
record it, before any offset moves: an unrecorded rewind is what the trail is there to
prevent. A dry run reads only Kafka: in a PostgreSQL outage it still shows the plan, and
that it was not recorded, and why.
"""

from dataclasses import asdict, dataclass
from datetime import datetime

from aiokafka.errors import KafkaError

from caravan import checkout
from caravan.ops.record import record, refusal, trail, unrecordable
from services import SERVICES
from shared.messaging import kafka_admin
from shared.topics import consumer_group


@dataclass(frozen=True)
class PartitionPlan:
    partition: int
    beginning: int
    current: int | None
    new: int
    end: int

    @property
    def start(self) -> int:
        """Where the group's service would read next: its committed offset, or the
        partition's beginning where it never committed (the services consume with
        auto_offset_reset earliest)."""
        return self.current if self.current is not None else self.beginning

    @property
    def reread(self) -> int:
        """Records the group has read already and will read again."""
        return max(0, self.start - self.new)

    @property
    def skipped(self) -> int:
        """Records the group has not read yet and never will (a move forward)."""
        return max(0, self.new - self.start)


@dataclass(frozen=True)
class ReplayResult:
    topic: str
    group: str
    group_state: str
    members: int | None  # None: Kafka could not say (the group's coordinator loading, moving)
    plan: list[PartitionPlan]
    applied: bool
    refused: tuple[str, ...] = ()  # every reason it was (or, a dry run, would be) refused
    unrecorded: str | None = None  # why the audit trail did not record it (done or not)

    @property
    def total(self) -> int:
        return sum(p.reread for p in self.plan)

    @property
    def skipped(self) -> int:
        return sum(p.skipped for p in self.plan)


async def replay(
    bootstrap: str,
    database_url: str | None,
    topic: str,
    group: str,
    *,
    earliest: bool = False,
    from_offset: int | None = None,
    from_timestamp: datetime | None = None,
    dry_run: bool = False,
    force: bool = False,
    allow_skip: bool = False,
) -> ReplayResult:
    """Plan (and unless ``dry_run``, apply) a rewind of ``group`` on ``topic``; recorded (a
    dry run goes on unrecorded without the audit trail: PostgreSQL away, or ``database_url``
    None, no database named)."""
    if sum([earliest, from_offset is not None, from_timestamp is not None]) != 1:
        raise ValueError("choose exactly one of --earliest, --from-offset, --from-timestamp")
    async with trail(database_url) as engine:
        unusable = await unrecordable(engine)
        unrecorded = None if unusable is None else str(unusable)
        state = await kafka_admin.describe_group(bootstrap, group)
        async with kafka_admin.group_client(bootstrap, group) as consumer:
            current = await kafka_admin.offsets(consumer, topic)
            if from_timestamp is not None:
                at = await kafka_admin.offsets_at(
                    consumer, topic, int(from_timestamp.timestamp() * 1000)
                )
            plan = []
            for p in current:
                if earliest:
                    new = p.beginning
                elif from_offset is not None:
                    new = min(max(from_offset, p.beginning), p.end)
                else:
                    new = at[p.partition]
                plan.append(PartitionPlan(p.partition, p.beginning, p.committed, new, p.end))
            refused = []  # every reason that stands in the way, each with what to do
            # A topic that has never held a record (its group never had one to commit) has
            # nothing to re-read; setting its offsets to its beginning is no harm.
            held = any(p.end > p.beginning or p.beginning > 0 for p in current)
            if not force and held and all(p.committed is None for p in current):
                readers = await kafka_admin.groups_reading(bootstrap, topic)
                refused.append(
                    f"group {group} has no committed offset on {topic}: it has not read it, "
                    "or Kafka has expired its offsets (a group empty for longer than the "
                    f"broker's offsets.retention.minutes) (groups that have: "
                    f"{', '.join(readers) or 'none'}); check --group, or pass --force to set them"
                )
            if state.error is not None:  # no member listed is not none: one may be reading
                refused.append(
                    f"Kafka cannot say now whether group {group} has members (its coordinator"
                    f" answered {state.error.message}: loading the group, or it moved): try again"
                    " in a moment; --force does not lift this"
                )
            elif state.members:
                refused.append(_active(state, bootstrap))
            if any(p.skipped for p in plan) and not allow_skip:
                ahead = ", ".join(f"{p.partition} ({p.skipped})" for p in plan if p.skipped)
                refused.append(
                    f"this moves {group} forward past records it has not read yet, which it "
                    f"would never handle: partition (records) {ahead}; "
                    "pass --allow-skip to skip them"
                )
            if unusable is not None:
                refused.append(refusal("replay", unusable))
            applied = False
            if not dry_run and not refused:
                try:
                    await kafka_admin.commit(consumer, topic, {p.partition: p.new for p in plan})
                    applied = True
                except KafkaError as exc:  # a member joined meanwhile: Kafka refuses the commit
                    refused.append(
                        f"Kafka refused the new offsets: {exc!r}; is {group}'s service running?"
                    )
        mode = (
            "earliest"
            if earliest
            else (f"offset {from_offset}" if from_offset is not None else f"time {from_timestamp}")
        )
        if engine is not None and unrecorded is None:  # else said as a refusal, unchanged
            try:
                await record(
                    engine,
                    "replay",
                    dry_run,
                    f"{group} on {topic}",
                    {
                        "topic": topic,
                        "group": group,
                        "mode": mode,
                        "applied": applied,
                        "refused": refused or None,
                        "plan": [asdict(p) for p in plan],
                    },
                )
            except Exception as exc:  # the offsets are set: say so, and that it is not on record
                if not applied:
                    raise
                unrecorded = repr(exc)
        members = None if state.error is not None else len(state.members)
        return ReplayResult(
            topic, group, state.state, members, plan, applied, tuple(refused), unrecorded
        )


def _active(state: kafka_admin.GroupState, bootstrap: str) -> str:
    """The refusal of a group with members: each named (client id, host), and how to stop
    them: pausing its service under ``caravan up``; where ``caravan pause`` has already
    stopped it (under the ``caravan up`` running Kafka at ``bootstrap``), those left are
    instances it does not run, stopped where they run."""
    service = next((s for s in SERVICES if consumer_group(s) == state.group), "SERVICE")
    if service in checkout.paused_beside(bootstrap):
        how = (
            f"{service} is paused under `caravan up`, so these are instances it does not run:"
            " stop them where they run"
        )
    else:
        how = f"stop its service first (under `caravan up`: `caravan pause {service}`)"
    return (
        f"group {state.group} has {len(state.members)} active member(s) ({state.state}),"
        f" {', '.join(state.named())}: {how}; --force does not lift this"
    )
