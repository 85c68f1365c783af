"""Every refusal a downgrade can say (:func:`shared.db.migrate.refuse_losing`, in a
migration's ``downgrade`` or the messaging tables' helpers it calls) has an end-to-end case in
tests/e2e/test_migrations.py where that downgrade refuses: one added without its case would
refuse untested, or not at all (a ``where`` matching nothing). Eight had none: payments' 0002
(its repayments) and 0009 (both), and the outbox refusals of inventory, notifications,
payments and the platform adapter and the platform adapter's parked events, which only
orders' and notifications' stood for."""

import ast
import importlib.util
import re
from collections.abc import Iterator
from typing import Any

import pytest

from caravan.checkout import REPO_ROOT
from services import SERVICES
from shared.db import messaging_migration
from shared.db.migrate import migrations_folder

CASES = REPO_ROOT / "tests" / "e2e" / "test_migrations.py"


class Anything:
    """Alembic's ``op`` for a downgrade run outside a migration: every operation a no-op."""

    def __getattr__(self, name: str) -> "Anything":
        return self

    def __call__(self, *args: Any, **kwargs: Any) -> "Anything":
        return self

    def __iter__(self) -> Iterator[Any]:
        return iter(())


def refusals(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, str | None]]:
    """(migration, table, where) of every ``refuse_losing`` each downgrade calls."""
    said: list[tuple[str, str, str | None]] = []
    name = ""

    def record(table: str, where: str | None, loses: str, clear: str) -> None:
        said.append((name, table, where))

    monkeypatch.setattr(messaging_migration, "op", Anything())
    monkeypatch.setattr(messaging_migration, "refuse_losing", record)
    for schema in (*SERVICES, "auth", "ops"):
        for path in sorted((migrations_folder(schema) / "versions").glob("*.py")):
            name = f"{schema} {path.stem}"
            spec = importlib.util.spec_from_file_location(f"downgrade_{schema}_{path.stem}", path)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            monkeypatch.setattr(module, "op", Anything(), raising=False)
            if hasattr(module, "refuse_losing"):
                monkeypatch.setattr(module, "refuse_losing", record)
            module.downgrade()
    return said


def test_every_refusal_of_a_downgrade_has_a_case_that_refuses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # every string the cases hold, literals written over several lines joined as Python does
    cases = "\n".join(
        node.value
        for node in ast.walk(ast.parse(CASES.read_text()))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    )
    found = refusals(monkeypatch)
    assert len(found) >= 37, found  # as many as there were when this was written
    untested = [
        f"{name}: in {table}{' where ' + where if where else ''}"
        for name, table, where in found
        if not re.search(
            re.escape(f"in {table} where {where}")
            if where
            else re.escape(f"in {table}") + r"\b(?! where)",
            cases,
        )
    ]
    assert untested == [], untested
