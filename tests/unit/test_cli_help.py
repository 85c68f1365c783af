"""``--help`` shows the commands' docstrings as text: ``code`` without its backticks, and a
paragraph's lines joined, not broken where the docstring's lines are."""

import re

import pytest
import typer
from typer._click.core import Command
from typer.core import TyperGroup
from typer.testing import CliRunner

from caravan import cli
from tests.unit.conftest import uncoloured

PREPARE = (
    "Create the topics and migrate every schema on the Kafka and PostgreSQL that the "
    "environment names (for deployments; caravan up does this itself)."
)


@pytest.mark.parametrize("command", [(), ("prepare",)])
def test_a_docstring_is_shown_as_one_paragraph_without_markup(command: tuple[str, ...]) -> None:
    done = CliRunner().invoke(
        cli.app, [*command, "--help"], env={"COLUMNS": "200"}, prog_name="caravan"
    )
    assert done.exit_code == 0, done.output
    text = uncoloured(done.output)
    assert PREPARE in text, text
    assert "``" not in text and "`caravan" not in text, text


def every_command(group: TyperGroup, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for name, command in group.commands.items():
        found.append((*path, name))
        if isinstance(command, TyperGroup):
            found += every_command(command, (*path, name))
    return found


def commands() -> dict[tuple[str, ...], Command]:
    """Every command of ``caravan`` by its path (``("dlq", "show")``)."""
    root = typer.main.get_command(cli.app)
    assert isinstance(root, TyperGroup)
    found: dict[tuple[str, ...], Command] = {}
    for path in every_command(root):
        command: Command = root
        for name in path:
            assert isinstance(command, TyperGroup)
            command = command.commands[name]
        found[path] = command
    return found


def test_every_usage_line_names_its_arguments_in_capitals() -> None:
    """``caravan dlq show --help`` said ``Usage: caravan dlq show [OPTIONS] {ref}``, and
    ``tokens revoke`` ``{name}``, as if a placeholder had been left unfilled, where the docs
    and the platform's commands say ``REF``, ``NAME``, ``APP``."""
    root = typer.main.get_command(cli.app)
    assert isinstance(root, TyperGroup)
    commands = every_command(root)
    assert ("dlq", "show") in commands and ("tokens", "revoke") in commands
    lowercase = re.compile(r"[{\[][a-z_]+[}\]]")  # {ref}, [sku]: not {sku|buyer}, a choice
    usages = {}
    for command in commands:
        done = CliRunner().invoke(
            cli.app, [*command, "--help"], env={"COLUMNS": "200"}, prog_name="caravan"
        )
        assert done.exit_code == 0, done.output
        usages[command] = next(
            line.strip() for line in uncoloured(done.output).splitlines() if "Usage:" in line
        )
    assert usages["dlq", "show"] == "Usage: caravan dlq show [OPTIONS] {REF}"
    assert usages["tokens", "revoke"] == "Usage: caravan tokens revoke [OPTIONS] {NAME}"
    assert usages["inventory", "stock"] == "Usage: caravan inventory stock [OPTIONS] [SKU]"
    assert not {c: u for c, u in usages.items() if lowercase.search(u)}


def test_a_flag_is_only_turned_on() -> None:
    """``caravan replay --help`` offered ``--force / --no-force [default: no-force]``, and so
    did seven more flags of ``up``, ``replay`` and ``dlq redrive``, where ``--all``,
    ``--spoiled`` and the others are one word each, as docs/commands.md writes them all: a
    flag is off unless given, so its ``--no-`` form only added a line to read."""
    offs = {}
    for path, command in commands().items():
        if found := [o for p in command.params for o in p.secondary_opts]:
            offs[" ".join(path)] = found
    assert "--again" in {o for p in commands()["dlq", "redrive"].params for o in p.opts}
    assert offs == {}


def test_the_payments_group_says_what_its_commands_do() -> None:
    """``caravan --help`` said of ``payments`` "Credit lines, loans and repayments.", where
    half its commands are of payments (list, void-sold, void-unplaced, refunded, charge-lost)
    and the sellers' payables: a newcomer looking for how to void a payment passed it by."""
    said = commands()[("payments",)].help or ""
    for words in ("loans", "payments", "voided", "refunded by hand", "payables"):
        assert words in said, said


def test_every_option_says_what_it_is() -> None:
    """``caravan demo --help`` listed ``--seed <path>`` and ``--orders`` with nothing beside
    them, where ``caravan up``'s same options say what they are."""
    bare = {
        f"{' '.join(path)} {param.opts[0]}"
        for path, command in commands().items()
        for param in command.params
        if param.param_type_name == "option" and param.name != "help"
        if not getattr(param, "help", None)
    }
    assert bare == set()
