"""A service compares its schema's revision with the head of its migrations before it starts
(``shared.runtime``; ``tests/e2e/test_migrations.py`` starts one on a schema one step behind):
behind, or never migrated, it refuses, naming ``caravan prepare``; at a revision its code does
not know (a newer version migrated it first), it runs on with a warning."""

import pytest
from alembic.script import ScriptDirectory

from services import SERVICES
from shared.db.migrate import SchemaBehind, migrations_folder, schema_warning

INVENTORY = ScriptDirectory(str(migrations_folder("inventory")))
(HEAD,) = INVENTORY.get_heads()  # each migration added moves it: the figures follow
BEFORE = f"{int(HEAD) - 1:04d}"
AHEAD = f"{int(HEAD) + 1:04d}"


def test_a_schema_at_the_head_of_its_migrations_says_nothing() -> None:
    assert INVENTORY.get_revision(BEFORE) is not None  # numbered one after another
    assert schema_warning(INVENTORY, "inventory", [HEAD]) is None


def test_a_schema_behind_the_code_refuses_naming_where_it_is_and_what_to_run() -> None:
    with pytest.raises(SchemaBehind) as refused:
        schema_warning(INVENTORY, "inventory", [BEFORE])
    assert str(refused.value) == (
        f"schema inventory is at {BEFORE}, this version needs {HEAD}: run caravan prepare"
    )
    with pytest.raises(SchemaBehind, match=f"inventory is at 0001, this version needs {HEAD}"):
        schema_warning(INVENTORY, "inventory", ["0001"])


def test_a_schema_never_migrated_refuses_likewise() -> None:
    """No ``alembic_version`` table, or an empty one (downgraded to base)."""
    with pytest.raises(SchemaBehind) as refused:
        schema_warning(INVENTORY, "inventory", [])
    assert str(refused.value) == (
        f"schema inventory was never migrated, this version needs {HEAD}: run caravan prepare"
    )


def test_a_schema_ahead_of_the_code_runs_on_with_a_warning() -> None:
    """An older process still running after a newer version's ``caravan prepare``."""
    warning = schema_warning(INVENTORY, "inventory", [AHEAD])
    assert warning is not None
    assert warning.startswith(f"schema inventory is at {AHEAD}, which this version does not know")
    assert f"needs {HEAD}" in warning


@pytest.mark.parametrize("schema", [*SERVICES, "auth", "ops"])
def test_every_schema_s_migrations_are_where_prepare_and_the_services_read_them(
    schema: str,
) -> None:
    scripts = ScriptDirectory(str(migrations_folder(schema)))
    (head,) = scripts.get_heads()
    assert schema_warning(scripts, schema, [head]) is None
