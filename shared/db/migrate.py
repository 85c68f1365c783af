"""Run a service's Alembic migrations (each service owns one schema and its own history),
tell whether a schema is at the revision the code needs, and refuse a downgrade that would
lose data."""

import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from alembic import command, context, op
from alembic.config import Config
from alembic.script import ScriptDirectory

_ROOT = Path(__file__).resolve().parents[2]


def migrations_folder(schema: str) -> Path:
    """Where the Alembic history of ``schema`` lives: ``services/<name>/migrations`` for a
    service's, ``shared/auth/migrations`` and ``caravan/ops/migrations`` for auth and ops.
    What ``caravan prepare`` migrates and what a service checks at start, one way."""
    if schema == "auth":
        return _ROOT / "shared" / "auth" / "migrations"
    if schema == "ops":
        return _ROOT / "caravan" / "ops" / "migrations"
    return _ROOT / "services" / schema / "migrations"


def alembic_config(migrations_dir: Path, url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def _run_config(
    migrations_dir: Path, url: str, role: str | None
) -> tuple[Config, list[tuple[str, str]]]:
    """Alembic's configuration for a run as ``role`` (None: the URL's user), and the list
    shared.db.alembic_env fills with each step as the migrations run."""
    cfg = alembic_config(migrations_dir, url)
    if role is not None:
        cfg.set_main_option("caravan_role", role)
    applied: list[tuple[str, str]] = []
    cfg.attributes["applied"] = applied
    return cfg, applied


@dataclass(frozen=True)
class Migrated:
    """What :func:`upgrade` did to a schema, as its ``str`` says it to the operator:
    ``0013 -> 0014`` (``none -> 0007`` on a schema never migrated), or ``at 0014, nothing
    new``; and how long it took."""

    before: str | None  # the revision it was at when migrations ran (None: never migrated)
    head: str
    ran: bool  # whether any migration ran
    seconds: float

    def __str__(self) -> str:
        if not self.ran:
            return f"at {self.head}, nothing new"
        return f"{self.before or 'none'} -> {self.head}"


def upgrade(migrations_dir: Path, url: str, role: str | None = None) -> Migrated:
    """Bring a service's schema to the newest revision (blocking; run it off the event loop);
    with ``role``, as that role (``SET ROLE``), which then owns what the migrations create.
    What it did (:class:`Migrated`)."""
    started = time.monotonic()
    cfg, applied = _run_config(migrations_dir, url, role)  # (from, to) of each step
    command.upgrade(cfg, "head")
    heads = ", ".join(sorted(ScriptDirectory.from_config(cfg).get_heads()))
    before = applied[0][0] if applied else None
    return Migrated(before, heads, bool(applied), time.monotonic() - started)


def downgrade(migrations_dir: Path, url: str, to: str, role: str | None = None) -> Migrated:
    """Take a schema back to revision ``to`` (an older version's newest), in one transaction:
    refused whole (:class:`DowngradeRefused`) where it would lose data; as ``role``, which owns
    what the migrations made. What it did (``before`` the revision it was at, ``head`` ``to``;
    not ``ran``: at ``to`` already). A revision the migrations do not know, or one after the
    schema's, is refused by Alembic (its ``CommandError``)."""
    started = time.monotonic()
    cfg, applied = _run_config(migrations_dir, url, role)  # (to, from) of each step
    cfg.attributes[REFUSALS] = []  # every refusal on the way, said together (refused)
    command.downgrade(cfg, to)
    before = applied[0][1] if applied else to
    return Migrated(before, to, bool(applied), time.monotonic() - started)


class SchemaAhead(Exception):
    """A schema a newer version migrated, at a revision this version's migrations do not
    know: :func:`upgrade` refuses it (Alembic would fail with a traceback ending "Can't
    locate revision"), saying where it is, this version's newest, and what to do."""


def refuse_ahead(scripts: ScriptDirectory, schema: str, at: Collection[str]) -> None:
    """Raise :class:`SchemaAhead` where ``at`` (the schema's ``alembic_version``) holds a
    revision ``scripts`` do not know; else nothing (at a revision known, or none)."""
    known = {script.revision for script in scripts.walk_revisions()}
    if not set(at) - known:
        return
    newest = ", ".join(sorted(scripts.get_heads()))
    raise SchemaAhead(
        f"schema {schema} is at {', '.join(sorted(at))}, which this version does not know"
        f" (its newest is {newest}): a newer version migrated it, and this one cannot run on"
        " it; run the newer version, or go back as docs/running.md says (Going back)"
    )


class SchemaBehind(Exception):
    """A schema older than the code that would run on it, or never migrated: the message
    says where it is, what the code needs, and to run ``caravan prepare``."""


def schema_warning(scripts: ScriptDirectory, schema: str, at: Collection[str]) -> str | None:
    """Whether code whose migrations are ``scripts`` may run on ``schema``, whose
    ``alembic_version`` holds ``at`` (empty: no revision, or no such table). At the head:
    nothing to say. At a revision the code does not know (a newer version migrated it first,
    and this process is an older one still running during an upgrade): a warning, and it runs
    on, as it would have before the newer migrations. Behind (a revision of ``scripts`` short
    of the head) or never migrated: :class:`SchemaBehind`, since every statement the code
    makes of a column or table added since would fail, and its records be dead-lettered."""
    heads = sorted(scripts.get_heads())
    if sorted(at) == heads:
        return None
    needs = ", ".join(heads)
    known = {script.revision for script in scripts.walk_revisions()}
    if at and not set(at) <= known:
        return (
            f"schema {schema} is at {', '.join(sorted(at))}, which this version does not know"
            f" (it needs {needs}: a newer version migrated it): running on, as the older"
            " version this process is; upgrade it"
        )
    where = f"is at {', '.join(sorted(at))}" if at else "was never migrated"
    raise SchemaBehind(f"schema {schema} {where}, this version needs {needs}: run caravan prepare")


class DowngradeRefused(Exception):
    """A downgrade that would lose data: the message says what, and what to do."""


REFUSALS = "refusals"
"""The key, in a run's Alembic attributes, of the list that gathers each refusal of a
:func:`downgrade` on the way (the step it was met in, and what it said), so that one run
names every migration that refuses, not the first alone."""


@dataclass(frozen=True)
class Refusal:
    revision: str  # of the migration that refused (the schema's, as its downgrade runs)
    loses: str  # what it would lose, and where
    clear: str  # the statement that clears it


def refuse_losing(table: str, where: str | None, loses: str, clear: str) -> None:
    """In a migration's ``downgrade``, before what drops data: refuse it when rows of ``table``
    (those matching ``where``, SQL) hold what it would lose (``loses``), saying to stay on
    this version or to keep what is needed and first run ``clear`` (SQL); without such rows
    it goes on as before. The whole downgrade is one transaction: refused, nothing of it is
    done. Also before narrowing a column (``length(c) > n``): PostgreSQL would refuse it
    too, but saying only "value too long", neither where nor what to do.

    Under :func:`downgrade`, the refusal is gathered and the run goes on to meet the older
    migrations' (what this one drops is undone with the rest: shared.db.alembic_env raises
    :func:`refused` at the end, in the transaction); elsewhere it is raised at once."""
    condition = f" WHERE {where}" if where else ""
    rows = op.get_bind().scalar(sa.text(f"SELECT count(*) FROM {table}{condition}"))
    if not rows:
        return
    said = f"it would lose {loses}: {rows} in {table}{' where ' + where if where else ''}"
    gathered: list[Refusal] | None = context.config.attributes.get(REFUSALS)
    if gathered is None:
        raise DowngradeRefused(f"downgrade refused: {said}. {_STAY}{clear}")
    at = ", ".join(op.get_context().get_current_heads())  # moved at each step's end
    gathered.append(Refusal(at, said, clear))


_STAY = "Stay on this version, or keep what you need and first run: "


def refused(gathered: Sequence[Refusal], cut: bool = False) -> DowngradeRefused:
    """The refusal of a downgrade whose migrations ``gathered`` what they would lose, each
    named by its revision, one a line; one alone is said as :func:`refuse_losing` says it.
    ``cut``: a migration failed going on past the last (a column it could not narrow), so
    the older ones were not checked."""
    if len(gathered) == 1 and not cut:
        return DowngradeRefused(
            f"downgrade refused: {gathered[0].loses}. {_STAY}{gathered[0].clear}"
        )
    lines = [f"  {r.revision}: {r.loses}; first run: {r.clear}" for r in gathered]
    if cut:
        lines.append(
            f"  and the migrations before {gathered[-1].revision} were not checked: run it"
            " again once that is cleared"
        )
    return DowngradeRefused(
        f"downgrade refused: {len({r.revision for r in gathered})} of its migrations would lose"
        " data, nothing taken back. Stay on this version, or keep what you need and first run"
        " each statement:\n" + "\n".join(lines)
    )
