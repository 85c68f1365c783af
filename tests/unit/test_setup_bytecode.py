"""``scripts/setup`` leaves the installed packages and the project's own compiled to bytecode:
where ``PYTHONDONTWRITEBYTECODE`` is set (containers; the shells of the machine the tests run
on) no process ever caches it, and every service, command and operations page started
compiled its imports again (a service 3 s of CPU, 1.4 s compiled)."""

import importlib.util
from pathlib import Path

import pytest
import sqlalchemy.sql.compiler

import caravan.cli
import services.payments.bootstrap
import shared.settings


@pytest.mark.parametrize(
    "module",
    [sqlalchemy.sql.compiler, caravan.cli, services.payments.bootstrap, shared.settings],
    ids=lambda m: m.__name__,
)
def test_what_a_service_imports_is_compiled_by_the_setup(module: object) -> None:
    source = Path(getattr(module, "__file__", ""))
    cached = Path(importlib.util.cache_from_source(str(source)))
    assert cached.is_file(), f"{cached} missing: run scripts/setup"
