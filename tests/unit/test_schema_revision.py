"""A service compares its schema's revision with the head of its migrations before it starts
(``shared.runtime``; ``tests/e2e/test_migrations.py`` starts one on a schema one step behind):
behind, or never migrated, it refuses, naming ``caravan prepare``; at a revision its code does
not know (a newer version migrated it first), it runs on with a warning."""

import pytest
from alembic.script import ScriptDirectory

from services import SERVICES
from shared.db.migrate import SchemaBehind, migrations_folder, schema_warning

INVENTORY = ScriptDirectory(str(migrations_folder("inventory")))


def test_a_schema_at_the_head_of_its_migrations_says_nothing() -> None:
    assert INVENTORY.get_heads() == ["0007"]
    assert schema_warning(INVENTORY, "inventory", ["0007"]) is None


def test_a_schema_behind_the_code_refuses_naming_where_it_is_and_what_to_run() -> None:
    with pytest.raises(SchemaBehind) as refused:
        schema_warning(INVENTORY, "inventory", ["0006"])
    assert str(refused.value) == (
        "schema inventory is at 0006, this version needs 0007: run caravan prepare"
    )
    with pytest.raises(SchemaBehind, match="inventory is at 0001, this version needs 0007"):
        schema_warning(INVENTORY, "inventory", ["0001"])


def test_a_schema_never_migrated_refuses_likewise() -> None:
    """No ``alembic_version`` table, or an empty one (downgraded to base)."""
    with pytest.raises(SchemaBehind) as refused:
        schema_warning(INVENTORY, "inventory", [])
    assert str(refused.value) == (
        "schema inventory was never migrated, this version needs 0007: run caravan prepare"
    )


def test_a_schema_ahead_of_the_code_runs_on_with_a_warning() -> None:
    """An older process still running after a newer version's ``caravan prepare``."""
    warning = schema_warning(INVENTORY, "inventory", ["0008"])
    assert warning is not None
    assert warning.startswith("schema inventory is at 0008, which this version does not know")
    assert "needs 0007" in warning


@pytest.mark.parametrize("schema", [*SERVICES, "auth", "ops"])
def test_every_schema_s_migrations_are_where_prepare_and_the_services_read_them(
    schema: str,
) -> None:
    scripts = ScriptDirectory(str(migrations_folder(schema)))
    (head,) = scripts.get_heads()
    assert schema_warning(scripts, schema, [head]) is None
