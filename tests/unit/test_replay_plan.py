"""A replay counts, and refuses without ``allow_skip``, what a partition the group never
committed on would skip: the services read such a partition from its beginning
(auto_offset_reset earliest), so moving it to a later offset leaves the records before it
unread, as moving a committed offset forward does; a refusal names every reason that stands
in the way. Kafka and PostgreSQL are faked."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiokafka import errors
from typer.testing import CliRunner

from caravan import cli
from caravan.ops import record as ops_record
from caravan.ops import replay as ops_replay
from shared.messaging import kafka_admin
from shared.messaging.kafka_admin import GroupState, PartitionOffsets
from tests.harness import free_port
from tests.unit.conftest import Coordinator

# Partition 0 committed at 7; partition 1 never committed on, its first 3 records deleted.
OFFSETS = [PartitionOffsets(0, 0, 10, 7), PartitionOffsets(1, 3, 10, None)]


@pytest.fixture
def committed(monkeypatch: pytest.MonkeyPatch) -> dict[int, int]:
    """What the replay commits; an empty group on a topic of :data:`OFFSETS`."""
    done: dict[int, int] = {}

    async def describe_group(bootstrap: str, group: str) -> GroupState:
        return GroupState(group, "Empty", [])

    @asynccontextmanager
    async def group_client(bootstrap: str, group: str) -> AsyncIterator[Any]:
        yield None

    async def offsets(consumer: Any, topic: str) -> list[PartitionOffsets]:
        return OFFSETS

    async def commit(consumer: Any, topic: str, new: dict[int, int]) -> None:
        done.update(new)

    async def record(*args: Any) -> None:
        pass

    async def unrecordable(database_url: str) -> str | None:
        return None  # the audit trail is there

    monkeypatch.setattr(kafka_admin, "describe_group", describe_group)
    monkeypatch.setattr(kafka_admin, "group_client", group_client)
    monkeypatch.setattr(kafka_admin, "offsets", offsets)
    monkeypatch.setattr(kafka_admin, "commit", commit)
    monkeypatch.setattr(ops_replay, "record", record)
    monkeypatch.setattr(ops_replay, "unrecordable", unrecordable)
    return done


async def replay(**how: Any) -> ops_replay.ReplayResult:
    return await ops_replay.replay("kafka", "postgresql://db", "t", "g", **how)


async def test_moving_a_partition_never_committed_on_past_its_beginning_is_a_skip(
    committed: dict[int, int],
) -> None:
    result = await replay(from_offset=5)
    assert [(p.reread, p.skipped) for p in result.plan] == [(2, 0), (0, 2)]
    assert [r for r in result.refused if "partition (records) 1 (2)" in r] == list(result.refused)
    assert not result.applied and committed == {}
    allowed = await replay(from_offset=5, allow_skip=True)
    assert allowed.applied and allowed.skipped == 2 and committed == {0: 5, 1: 5}


async def test_earliest_skips_nothing_of_a_partition_never_committed_on(
    committed: dict[int, int],
) -> None:
    result = await replay(earliest=True)
    assert [(p.new, p.reread, p.skipped) for p in result.plan] == [(0, 7, 0), (3, 0, 0)]
    assert result.applied and result.refused == ()


@pytest.mark.parametrize("modes", [[], ["--earliest", "--from-offset", "5"]], ids=["none", "two"])
def test_a_replay_of_no_mode_or_two_names_the_options_to_choose_from(
    modes: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """It said "choose exactly one of earliest, from_offset, from_timestamp": the names of
    the function's parameters, not the options an operator types."""
    monkeypatch.setattr(cli, "_named_database_url", lambda: "postgresql://db")
    monkeypatch.setenv("COLUMNS", "300")
    args = ["replay", "--topic", "orders.events.v1", "--group", "caravan-orders", *modes]
    done = CliRunner().invoke(cli.app, args)
    assert done.exit_code == 2, done.output
    assert "choose exactly one of --earliest, --from-offset, --from-timestamp" in done.output


def test_a_refusal_names_every_reason_in_the_way_each_with_what_lifts_it(
    committed: dict[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``caravan replay --group caravan-orders --topic orders.events.v1`` said only "no
    committed offset ... pass --force" of a group that was running too, which --force does
    not lift: an operator passing it met a second refusal."""

    async def describe_group(bootstrap: str, group: str) -> GroupState:
        return GroupState(group, "Stable", ["member-1"], ["caravan-orders-1-consumer"], [], ["h"])

    async def offsets(consumer: Any, topic: str) -> list[PartitionOffsets]:
        return [PartitionOffsets(0, 0, 10, None), PartitionOffsets(1, 3, 10, None)]

    async def groups_reading(bootstrap: str, topic: str) -> list[str]:
        return ["caravan-inventory"]

    monkeypatch.setattr(kafka_admin, "describe_group", describe_group)
    monkeypatch.setattr(kafka_admin, "offsets", offsets)
    monkeypatch.setattr(kafka_admin, "groups_reading", groups_reading)
    monkeypatch.setattr(cli, "_named_database_url", lambda: "postgresql://db")
    monkeypatch.setenv("COLUMNS", "300")
    args = ["replay", "--topic", "orders.events.v1", "--group", "caravan-orders", "--earliest"]
    for dry_run, said in (([], "refused"), (["--dry-run"], "a run would be refused")):
        done = CliRunner().invoke(cli.app, [*args, *dry_run])
        assert done.exit_code == 2, done.output  # a dry run exits as the run would (it was 0)
        lines = done.output.splitlines()
        at = lines.index(f"{said}, for 2 reasons:")
        assert lines[at + 1].startswith("- group caravan-orders has no committed offset on")
        assert lines[at + 1].endswith("check --group, or pass --force to set them")
        assert lines[at + 2] == (
            "- group caravan-orders has 1 active member(s) (Stable), caravan-orders-1-consumer"
            " (h): stop its service first (under `caravan up`: `caravan pause orders`);"
            " --force does not lift this"
        )
    assert "nothing changed (dry run)" in done.output and committed == {}
    forced = asyncio.run(replay(earliest=True, force=True))
    assert [reason.split(":")[0] for reason in forced.refused] == [
        "group g has 1 active member(s) (Stable), caravan-orders-1-consumer (h)"
    ]
    assert not forced.applied and committed == {}


def test_without_the_audit_trail_a_replay_is_refused_before_any_offset_moves_a_dry_run_is_not(
    committed: dict[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a PostgreSQL outage a replay moved the offsets, then said "not in the audit trail"
    (exit 1): an unrecorded rewind, which the trail is there to prevent; and a dry run, which
    needs only Kafka, failed with "cannot reach PostgreSQL". Here the trail's PostgreSQL is a
    port nothing listens on."""
    port = free_port()
    monkeypatch.setattr(ops_replay, "unrecordable", ops_record.unrecordable)
    monkeypatch.setattr(cli, "_named_database_url", lambda: f"postgresql://u:x@127.0.0.1:{port}/db")
    monkeypatch.setenv("COLUMNS", "400")
    args = ["replay", "--topic", "t", "--group", "g", "--earliest"]
    why = f"cannot reach PostgreSQL: [Errno 111] Connect call failed ('127.0.0.1', {port})"
    refused = (
        f"refused: the audit trail cannot record it ({why}): a replay is not made unrecorded;"
        " run it once PostgreSQL is back (--dry-run needs only Kafka)"
    )
    done = CliRunner().invoke(cli.app, args)
    assert done.exit_code == 2, done.output
    assert refused in done.output.splitlines(), done.output
    assert committed == {} and "applied" not in done.output
    dry = CliRunner().invoke(cli.app, [*args, "--dry-run"])
    assert dry.exit_code == 2, dry.output
    lines = dry.output.splitlines()
    assert "dry run: replay of t for g" in lines[0] and "7 record(s) to re-read" in dry.output
    assert lines[-3:] == [
        f"a run would be {refused}",
        "nothing changed (dry run)",
        f"not in the audit trail (a dry run goes on without it): {why}",
    ], dry.output
    assert committed == {}


def test_a_group_kafka_cannot_describe_now_is_refused_not_taken_for_one_with_no_member(
    committed: dict[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """While its coordinator loads the group (a broker restarted) or the group moves to
    another broker, DescribeGroups answers it with that error and no member: the replay
    took it for a group with none and rewound it, beside the service still reading."""

    async def describe_group(bootstrap: str, group: str) -> GroupState:
        moved = Coordinator({group: errors.NotCoordinatorError.errno})
        return (await kafka_admin.described(moved, [group]))[group]

    monkeypatch.setattr(kafka_admin, "describe_group", describe_group)
    monkeypatch.setattr(cli, "_named_database_url", lambda: "postgresql://db")
    monkeypatch.setenv("COLUMNS", "300")
    args = ["replay", "--topic", "t", "--group", "g", "--earliest", "--force"]
    done = CliRunner().invoke(cli.app, args)
    assert done.exit_code == 2, done.output
    assert committed == {} and "applied" not in done.output
    lines = done.output.splitlines()
    assert lines[-2:] == [
        "group g: members unknown; 7 record(s) to re-read",
        "refused: Kafka cannot say now whether group g has members (its coordinator answered"
        " NOT_COORDINATOR: loading the group, or it moved): try again in a moment; --force does"
        " not lift this",
    ], done.output


def test_a_replay_says_what_its_service_handled_before_is_dropped_as_duplicates(
    committed: dict[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its help said a replay makes "its service reprocess a topic", and a run said only
    "applied": the service's inbox drops every record it handled before, so a replay redoes
    nothing done. The help says so, and the last line how many records are re-read and what
    becomes of them, in a dry run as in a run."""
    monkeypatch.setattr(cli, "_named_database_url", lambda: "postgresql://db")
    monkeypatch.setenv("COLUMNS", "300")
    group = "caravan-notifications"
    args = ["replay", "--topic", "orders.events.v1", "--group", group, "--earliest"]
    said = (
        "those its service handled before are dropped as duplicates (its inbox has their"
        " ids), so nothing done is done again; only those it skipped or dead-lettered then"
        ' are tried again (caravan_records_consumed_total{outcome="duplicate"} counts those'
        " dropped)"
    )
    dry = CliRunner().invoke(cli.app, [*args, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert dry.output.splitlines()[-1] == (
        f"nothing changed (dry run); a run would have {group} re-read 7 record(s): {said}"
    ), dry.output
    done = CliRunner().invoke(cli.app, args)
    assert done.exit_code == 0 and committed == {0: 0, 1: 3}, done.output
    assert done.output.splitlines()[-1] == (
        f"applied: {group} re-reads 7 record(s) once its service runs; {said}"
    ), done.output
    helped = CliRunner().invoke(cli.app, ["replay", "--help"])
    text = " ".join(helped.output.replace("│", " ").split())
    assert "reprocesses" not in text, text
    assert (
        "What it handled before is dropped as a duplicate (its inbox has each event's id): a"
        " replay redoes nothing done, and sends no event or text again; only records it"
        " skipped then (a type it handles since an upgrade) or dead-lettered (after a fix)"
        " are tried again."
    ) in text, text


def test_a_replay_of_a_range_holding_no_record_says_nothing_is_rewound(
    committed: dict[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Of a range holding no record the group has read (a topic never written, an offset
    where the group is), a run ended "applied" alone, where every other line gives counts:
    it says nothing is rewound, and what it skips, if it skips any (``--allow-skip``)."""
    monkeypatch.setattr(cli, "_named_database_url", lambda: "postgresql://db")
    monkeypatch.setenv("COLUMNS", "300")
    group = "caravan-notifications"
    args = ["replay", "--topic", "orders.events.v1", "--group", group]
    held = f"the range chosen holds no record {group} has read"
    done = CliRunner().invoke(cli.app, [*args, "--from-offset", "7"])
    assert done.exit_code == 2 and committed == {}, done.output  # partition 1 skips 4
    done = CliRunner().invoke(cli.app, [*args, "--from-offset", "10", "--allow-skip"])
    assert done.exit_code == 0 and committed == {0: 10, 1: 10}, done.output
    assert done.output.splitlines()[-1] == (
        f"applied: nothing rewound: {held}; 10 record(s) it has not read yet are skipped,"
        " never handled"
    ), done.output

    async def empty(consumer: Any, topic: str) -> list[PartitionOffsets]:
        return [PartitionOffsets(0, 0, 0, None), PartitionOffsets(1, 0, 0, None)]

    monkeypatch.setattr(kafka_admin, "offsets", empty)  # a topic never written
    dry = CliRunner().invoke(cli.app, [*args, "--earliest", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert dry.output.splitlines()[-1] == (
        f"nothing changed (dry run); a run would rewind nothing: {held}"
    ), dry.output
    done = CliRunner().invoke(cli.app, [*args, "--earliest"])
    assert done.exit_code == 0, done.output
    assert done.output.splitlines()[-1] == f"applied: nothing rewound: {held}", done.output
